"""Money from fills: one step live, the same numbers rebuilt, the contract's own multiplier."""

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.orders.accounting import (
    Holding,
    apply_fill,
    equity,
    exposure,
    fill_totals,
    fold,
    order_fill_totals,
    position_after_fill,
    premium,
    rebuilt_position,
    unrealized,
)
from storage.rows import Fill, Order, Position

ENTRY = Order(
    order_ref="SPY-1-E",
    bracket_ref="SPY-1",
    symbol="SPY",
    action="BUY",
    quantity=4.0,
    con_id=7,
    strategy="scalp",
    multiplier=100.0,
)


def test_a_round_trip_realizes_the_difference_times_the_multiplier_less_commissions():
    h, r1 = apply_fill(Holding(), "BOT", 4, 2.43, 2.6, 100.0)
    assert (h.quantity, h.avg_cost, r1) == (4, pytest.approx(243.0), -2.6)
    h, r2 = apply_fill(h, "SLD", 4, 3.16, 2.6, 100.0)
    assert h.quantity == 0 and h.avg_cost == 0.0
    assert r2 == pytest.approx(292.0 - 2.6) and h.realized == pytest.approx(292.0 - 5.2)


@pytest.mark.parametrize("mult", [10.0, 100.0, 1000.0])
def test_money_scales_with_the_contract_multiplier(mult):
    order = dataclasses.replace(ENTRY, multiplier=mult)
    pos, _ = position_after_fill(None, order, "BOT", 2, 1.5, 0.0)
    assert pos.avg_cost == pytest.approx(1.5 * mult) and pos.multiplier == mult
    assert premium(pos) == pytest.approx(1.5)
    assert unrealized([pos], {7: 2.0}) == pytest.approx(0.5 * mult * 2)
    sell = dataclasses.replace(order, action="SELL", order_ref="SPY-1-TP")
    closed, realized = position_after_fill(pos, sell, "SLD", 2, 2.5, 0.0)
    assert closed.quantity == 0 and realized == pytest.approx(1.0 * mult * 2)
    working = dataclasses.replace(order, limit_price=1.2, filled=1.0)
    assert exposure([], [working]) == {"SPY": pytest.approx(1.2 * mult * 3)}


def test_a_row_from_before_the_multiplier_column_counts_as_standard():
    old = dataclasses.replace(ENTRY, multiplier=None)
    pos, _ = position_after_fill(None, old, "BOT", 1, 2.0, 0.0)
    assert pos.avg_cost == pytest.approx(200.0) and premium(pos) == pytest.approx(2.0)


def test_a_buy_names_the_bracket_that_protects_the_position_a_sell_does_not():
    pos, _ = position_after_fill(None, ENTRY, "BOT", 2, 1.0, 0.0)
    later = dataclasses.replace(ENTRY, bracket_ref="SPY-2", order_ref="SPY-2-E")
    pos2, _ = position_after_fill(pos, later, "BOT", 1, 1.0, 0.0)
    assert pos2.bracket_ref == "SPY-2"
    exit_row = dataclasses.replace(ENTRY, bracket_ref="SPY-3", action="SELL", order_ref="SPY-3-X")
    pos3, _ = position_after_fill(pos2, exit_row, "SLD", 1, 1.0, 0.0)
    assert pos3.bracket_ref == "SPY-2" and pos3.quantity == 2


fills = st.lists(
    st.tuples(
        st.sampled_from(["BOT", "SLD"]),
        st.integers(1, 10).map(float),
        st.floats(0.01, 50, allow_nan=False).map(lambda p: round(p, 2)),
        st.floats(0, 5, allow_nan=False),
    ),
    max_size=30,
)


@given(fills=fills, mult=st.sampled_from([10.0, 100.0]))
def test_the_live_position_is_the_one_rebuilt_from_its_fills(fills, mult):
    """After a correction the position is rebuilt from the fills: it must equal what the fills
    made one at a time, or a correction would move money that no fill moved."""
    order = dataclasses.replace(ENTRY, multiplier=mult)
    pos, total = None, 0.0
    for side, qty, price, commission in fills:
        pos, realized = position_after_fill(pos, order, side, qty, price, commission)
        total += realized
    if pos is None:
        return
    rows = [
        Fill(exec_id=str(i), side=s, quantity=q, price=p, commission=c)
        for i, (s, q, p, c) in enumerate(fills)
    ]
    again = rebuilt_position(dataclasses.replace(pos, quantity=0, avg_cost=0, realized_pnl=0), rows)
    assert again.quantity == pytest.approx(pos.quantity)
    assert again.avg_cost == pytest.approx(pos.avg_cost, abs=1e-6)
    assert again.realized_pnl == pytest.approx(pos.realized_pnl, abs=1e-6)
    assert pos.realized_pnl == pytest.approx(total, abs=1e-6)
    assert fold(fills, mult).quantity == pytest.approx(pos.quantity)


@given(parts=st.lists(st.tuples(st.integers(1, 5).map(float), st.floats(0.01, 50)), min_size=1))
def test_order_totals_one_fill_at_a_time_match_the_totals_from_all_fills(parts):
    order = ENTRY
    for qty, price in parts:
        filled, avg = order_fill_totals(order, qty, price)
        order = dataclasses.replace(order, filled=filled, avg_fill_price=avg)
    rows = [Fill(exec_id=str(i), quantity=q, price=p) for i, (q, p) in enumerate(parts)]
    filled, avg = fill_totals(rows)
    assert filled == pytest.approx(order.filled) and avg == pytest.approx(order.avg_fill_price)


def test_exposure_counts_positions_at_cost_and_working_entries_at_their_limit():
    pos = [
        Position(con_id=1, symbol="SPY", quantity=2, avg_cost=243.0),
        Position(con_id=2, symbol="QQQ", quantity=1, avg_cost=100.0),
    ]
    working = [dataclasses.replace(ENTRY, limit_price=2.0, filled=1.0)]
    assert exposure(pos, working) == {"SPY": pytest.approx(486.0 + 600.0), "QQQ": 100.0}
    assert exposure([], []) == {}


def test_equity_is_the_start_plus_all_realized_plus_open_pnl():
    pos = [
        Position(con_id=1, quantity=0, realized_pnl=50.0),
        Position(con_id=2, quantity=1, avg_cost=100.0, realized_pnl=None),
    ]
    assert equity(10_000.0, pos, -20.0) == pytest.approx(10_030.0)


def test_a_position_never_quoted_adds_no_open_pnl():
    assert unrealized([Position(con_id=3, quantity=2, avg_cost=100.0)], {}) == 0.0

"""The entry saga's pure steps: candidates from a chain, the choice from quotes, the legs, the rows."""

import math
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import SESSION_TIME

from actors import messages as m
from actors.orders.entry import (
    TIF,
    Candidates,
    Choice,
    bracket_legs,
    candidates,
    choose,
    leg_rows,
    new_bracket_ref,
    option_params,
    role_of,
    warm_contracts,
)
from strategies.options import OptionParams
from strategies.signals import Direction, Signal

TODAY = date(2026, 11, 20)  # a Friday: its own expiry is skipped with min_dte 1


def signal(direction=Direction.CALL, price=680.2, symbol="SPY") -> Signal:
    return Signal("scalp", symbol, direction, 0.7, ("test",), SESSION_TIME, price)


def chain(multiplier=100, expirations=("20261120", "20261123", "20261125"), strikes=None):
    strikes = strikes if strikes is not None else tuple(float(k) for k in range(670, 691))
    return m.Chain("SPY", 756733, "SPY", multiplier, expirations, strikes)


def test_candidates_are_the_target_and_its_neighbours_at_the_first_expiry_far_enough():
    found = candidates(signal(), chain(), TODAY, OptionParams())
    assert isinstance(found, Candidates)
    assert found.expiry == "20261123" and found.target == 680.0
    assert [c.strike for c in found.contracts] == [678.0, 679.0, 680.0, 681.0, 682.0]
    assert {(c.right, c.expiry, c.trading_class) for c in found.contracts} == {
        ("C", "20261123", "SPY")
    }


def test_candidates_carry_the_chain_multiplier_not_an_assumed_100():
    found = candidates(signal(), chain(multiplier=10), TODAY, OptionParams())
    assert {c.multiplier for c in found.contracts} == {10}


def test_a_put_idea_quotes_puts():
    found = candidates(signal(Direction.PUT), chain(), TODAY, OptionParams())
    assert {c.right for c in found.contracts} == {"P"}


def test_no_expiry_far_enough_is_a_reason_not_a_crash():
    why = candidates(signal(), chain(expirations=("20261120",)), TODAY, OptionParams())
    assert why == "no_expiry: none at least 1 days out"


def test_no_strike_near_the_spot_is_a_reason():
    assert candidates(signal(), chain(strikes=()), TODAY, OptionParams()).startswith("no_strike:")


@given(
    price=st.floats(1, 2000, allow_nan=False),
    strikes=st.lists(st.floats(1, 2000, allow_nan=False), min_size=1, max_size=60, unique=True),
    count=st.integers(1, 9),
    direction=st.sampled_from(list(Direction)),
    moneyness=st.sampled_from(["atm", "itm1", "otm1"]),
)
def test_candidates_always_include_their_target_and_are_sorted(
    price, strikes, count, direction, moneyness
):
    params = OptionParams(moneyness=moneyness, strike_count=count)
    found = candidates(signal(direction, price), chain(strikes=tuple(strikes)), TODAY, params)
    if isinstance(found, str):
        assert found.split(":", 1)[0] in ("no_expiry", "no_strike")
        return
    ks = [c.strike for c in found.contracts]
    assert found.target in ks and ks == sorted(ks) and set(ks) <= set(strikes)


def quote(strike, bid, ask, volume=5000.0, age_s=0.0, known=True):
    c = m.OptionContract("SPY", "20261123", strike, "C", con_id=1000 + int(strike), multiplier=100)
    t = SESSION_TIME - timedelta(seconds=age_s)
    return m.OptionQuote(c, bid, ask, (bid + ask) / 2, volume, t, age_known=known)


def test_the_choice_is_the_target_with_a_limit_on_the_tick():
    quotes = [quote(k, 2.40, 2.46) for k in (679.0, 680.0, 681.0)]
    got = choose("SPY", quotes, (), 680.0, SESSION_TIME, 1.0, OptionParams())
    assert isinstance(got, Choice)
    assert got.contract.strike == 680.0 and got.contract.con_id == 1680 and got.limit == 2.43


def test_no_good_quote_names_every_problem():
    missing = ((m.OptionContract("SPY", "20261123", 682.0, "C"), "no quote within 2s"),)
    quotes = [quote(680.0, 2.40, 2.46, volume=0.0), quote(681.0, 2.40, 2.46, known=False)]
    why = choose("SPY", quotes, missing, 680.0, SESSION_TIME, 1.0, OptionParams())
    # The target's problem first (what the entry wanted), then the others in the order asked.
    assert why.startswith("no_option: 680C: low_volume: volume 0 < 100; 682C: no quote within 2s; ")
    assert "681C" in why


def test_quote_age_is_in_real_seconds_when_the_clock_runs_fast():
    # 60 service seconds at 10x are 6 real ones: fresh enough for a 10 s limit.
    q = [quote(680.0, 2.40, 2.46, age_s=60.0)]
    assert isinstance(choose("SPY", q, (), 680.0, SESSION_TIME, 10.0, OptionParams()), Choice)
    assert choose("SPY", q, (), 680.0, SESSION_TIME, 1.0, OptionParams()).startswith("no_option")


def test_bracket_legs_transmit_once_with_the_children_in_one_oca_group():
    entry, tp, sl = bracket_legs("SPY-1-abc", 4, 2.43, 3.16, 1.94)
    assert [leg.order_ref for leg in (entry, tp, sl)] == [
        "SPY-1-abc-E",
        "SPY-1-abc-TP",
        "SPY-1-abc-SL",
    ]
    assert [leg.transmit for leg in (entry, tp, sl)] == [False, False, True]
    assert (entry.action, entry.order_type, entry.limit_price, entry.tif) == (
        "BUY",
        "LMT",
        2.43,
        "DAY",
    )
    assert (tp.action, tp.order_type, tp.limit_price, tp.tif) == ("SELL", "LMT", 3.16, "GTC")
    assert (sl.action, sl.order_type, sl.aux_price, sl.tif) == ("SELL", "STP", 1.94, "GTC")
    assert tp.parent_ref == sl.parent_ref == entry.order_ref and not entry.parent_ref
    assert tp.oca_group == sl.oca_group == "OCA-SPY-1-abc" and not entry.oca_group
    assert [role_of(leg.order_ref) for leg in (entry, tp, sl)] == [
        "entry",
        "take_profit",
        "stop_loss",
    ]


def test_every_exit_outlives_the_session_and_every_entry_dies_with_it():
    assert TIF == {"entry": "DAY", "take_profit": "GTC", "stop_loss": "GTC", "exit": "GTC"}


@given(
    qty=st.integers(1, 100),
    mult=st.sampled_from([10, 100, 1000]),
    limit=st.floats(0.01, 50, allow_nan=False),
)
def test_the_rows_written_ahead_are_the_legs_sent(qty, mult, limit):
    contract = m.OptionContract(
        "SPY", "20261123", 680.0, "C", con_id=9, local_symbol="SPY x", multiplier=mult
    )
    legs = bracket_legs("SPY-1-abc", qty, limit, limit * 1.3, limit * 0.8)
    rows = leg_rows(
        legs,
        [role_of(leg.order_ref) for leg in legs],
        bracket_ref="SPY-1-abc",
        strategy="scalp",
        contract=contract,
        dry_run=True,
        now=SESSION_TIME,
    )
    for leg, row in zip(legs, rows, strict=True):
        assert (row.order_ref, row.action, row.order_type, row.quantity) == (
            leg.order_ref,
            leg.action,
            leg.order_type,
            float(qty),
        )
        assert (row.limit_price or 0.0, row.aux_price or 0.0) == (leg.limit_price, leg.aux_price)
        assert (row.parent_ref or "", row.oca_group or "") == (leg.parent_ref, leg.oca_group)
        assert row.multiplier == mult and row.con_id == 9 and row.state == "new"
        assert row.trading_date == "2026-11-20" and row.dry_run == 1


def test_bracket_refs_never_repeat():
    refs = {new_bracket_ref("SPY", SESSION_TIME) for _ in range(200)}
    assert len(refs) == 200 and all(r.startswith("SPY-2026") for r in refs)


def test_option_params_come_from_the_settings(make_settings):
    params = option_params(make_settings(options={"strike_count": 3, "min_dte": 2}))
    assert (params.strike_count, params.min_dte) == (3, 2)
    assert math.isfinite(params.max_quote_age_s)


@pytest.mark.parametrize("bad", [-1.0, 0.0, math.nan])
def test_a_quote_that_is_none_is_never_chosen(bad):
    got = choose("SPY", [quote(680.0, bad, 2.46)], (), 680.0, SESSION_TIME, 1.0, OptionParams())
    assert isinstance(got, str) and got.startswith("no_option")


@given(
    spot=st.floats(min_value=660, max_value=700),
    moneyness=st.sampled_from(["atm", "itm1", "otm1"]),
    count=st.integers(1, 8),
)
def test_the_warm_set_holds_every_contract_an_entry_at_that_spot_asks_for(spot, moneyness, count):
    """An entry finds its quotes on warm lines only if the warm set covers its candidates,
    whichever the direction; warmed nearest first, so a short budget keeps the likeliest."""
    params = OptionParams(moneyness=moneyness, strike_count=count)
    warm = warm_contracts(chain(), spot, TODAY, params)
    for direction in (Direction.CALL, Direction.PUT):
        found = candidates(signal(direction, price=spot), chain(), TODAY, params)
        if isinstance(found, Candidates):  # at the chain's edge an itm1/otm1 strike is missing
            assert set(found.contracts) <= set(warm)
    distances = [abs(c.strike - spot) for c in warm]
    assert distances == sorted(distances)
    assert len(warm) == len(set(warm)) <= 2 * (count + 2)
    # With a margin: a superset, nearest first, with the strikes a move of one strike brings.
    wide = warm_contracts(chain(), spot, TODAY, params, margin=1)
    assert set(warm) <= set(wide) and len(wide) <= 2 * (count + 4)
    for step in (-1.0, 1.0):
        moved = candidates(signal(Direction.CALL, price=spot + step), chain(), TODAY, params)
        if isinstance(moved, Candidates) and moneyness == "atm":
            assert set(moved.contracts) <= set(wide)


def test_no_warm_set_without_an_expiry_far_enough_or_a_spot():
    assert warm_contracts(chain(expirations=("20261120",)), 680.0, TODAY, OptionParams()) == ()
    assert warm_contracts(chain(), math.nan, TODAY, OptionParams()) == ()

"""The report's money maths (backtest/report.py), against brute force and by hypothesis."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest import report as rpt

T0 = datetime(2026, 11, 16, 15, 0, tzinfo=UTC)
money = st.floats(min_value=-5_000, max_value=5_000, allow_nan=False).map(lambda x: round(x, 2))


@given(st.lists(st.floats(min_value=1.0, max_value=1e6, allow_nan=False), min_size=1, max_size=60))
def test_max_drawdown_is_the_largest_fall_from_an_earlier_peak(equity):
    worst, pct = rpt.max_drawdown(equity)
    brute = max(
        (equity[i] - equity[j] for i in range(len(equity)) for j in range(i, len(equity))),
        default=0.0,
    )
    assert worst == pytest.approx(max(0.0, brute))
    assert 0.0 <= pct <= 1.0


def test_a_rising_curve_has_no_drawdown_and_a_fall_is_measured_from_its_peak():
    assert rpt.max_drawdown([100, 110, 120]) == (0.0, 0.0)
    worst, pct = rpt.max_drawdown([100, 120, 90, 130, 125])
    assert worst == 30 and pct == pytest.approx(0.25)


@given(st.lists(money, min_size=2, max_size=40), st.floats(min_value=0.5, max_value=20))
def test_daily_sharpe_does_not_depend_on_the_account_size(pnl, k):
    a = rpt.daily_sharpe(pnl, 100_000.0)
    b = rpt.daily_sharpe([p * k for p in pnl], 100_000.0 * k)
    assert math.isfinite(a)
    assert a == pytest.approx(b, rel=1e-6, abs=1e-6)


def test_daily_sharpe_by_hand_and_its_degenerate_cases():
    assert rpt.daily_sharpe([], 1000) == 0.0
    assert rpt.daily_sharpe([5.0], 1000) == 0.0
    assert rpt.daily_sharpe([0.0, 0.0, 0.0], 1000) == 0.0
    # returns 1% (10 of 1000), then 0: mean 0.005, sample variance 0.00005, x sqrt(252)
    assert rpt.daily_sharpe([10.0, 0.0], 1000.0) == pytest.approx(
        0.005 / math.sqrt(0.00005) * math.sqrt(252), rel=1e-9
    )


def _bracket(i, qty, entry_px, exits, mult=100):
    """OrderInfo and FillInfo rows for one bracket; exits: [(role, qty, price)]."""
    ref = f"B{i}"
    orders = [rpt.OrderInfo(f"{ref}-E", ref, "entry", "scalp", "SPY", f"SPY C{i}", mult)]
    fills = [rpt.FillInfo(f"{ref}-E", T0 + timedelta(minutes=i), "BOT", qty, entry_px, 1.0)]
    for j, (role, q, px) in enumerate(exits):
        oref = f"{ref}-{role}{j}"
        orders.append(rpt.OrderInfo(oref, ref, role, "scalp", "SPY", f"SPY C{i}", mult, "why"))
        fills.append(rpt.FillInfo(oref, T0 + timedelta(minutes=i + j + 1), "SLD", q, px, 1.0))
    return orders, fills


exit_role = st.sampled_from(["take_profit", "stop_loss", "exit"])


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 10),
            st.floats(0.05, 20).map(lambda x: round(x, 2)),
            st.lists(
                st.tuples(exit_role, st.floats(0.05, 20).map(lambda x: round(x, 2))), max_size=3
            ),
            st.booleans(),
        ),
        max_size=12,
    )
)
def test_round_trips_account_for_every_dollar_of_the_closed_brackets(brackets):
    orders, fills, closed_pnl, open_count = [], [], 0.0, 0
    for i, (qty, entry_px, exit_prices, close_it) in enumerate(brackets):
        exits = []
        if close_it and exit_prices:
            # split the quantity over the exits: all but the last take one contract each
            left = qty
            for k, (role, px) in enumerate(exit_prices):
                q = left if k == len(exit_prices) - 1 else min(1, left)
                if q <= 0:
                    continue
                exits.append((role, q, px))
                left -= q
        o, f = _bracket(i, qty, entry_px, exits)
        orders += o
        fills += f
        if sum(q for _, q, _ in exits) >= qty:
            closed_pnl += sum((px - entry_px) * q * 100 for _, q, px in exits) - len(f) * 1.0
        else:
            open_count += 1
    trades, still_open = rpt.round_trips(orders, fills)
    assert still_open == open_count
    assert sum(t.pnl for t in trades) == pytest.approx(closed_pnl, abs=1e-6)
    assert [t.exit_time for t in trades] == sorted(t.exit_time for t in trades)
    text = rpt.trades_csv(trades)
    assert text.count("\n") == len(trades) + 1


def test_an_exit_at_market_names_its_reason():
    orders, fills = _bracket(1, 2, 1.0, [("exit", 2, 1.5)])
    (trade,), _ = rpt.round_trips(orders, fills)
    assert trade.exit_reason == "exit: why" and trade.pnl == pytest.approx(100.0 - 2.0)


def test_summarize_counts_days_without_trades():
    orders, fills = _bracket(1, 1, 1.0, [("take_profit", 1, 2.0)])
    trades, _ = rpt.round_trips(orders, fills)
    days = [T0.date(), (T0 + timedelta(days=1)).date()]
    s = rpt.summarize(trades, days, lambda t: t.date(), 10_000.0)
    assert s["trades"] == 1 and s["wins"] == 1 and s["net_pnl"] == pytest.approx(98.0)
    assert list(s["daily_pnl"].values()) == [98.0, 0.0]
    assert s["by_rule"] == {"scalp": {"trades": 1, "wins": 1, "net_pnl": 98.0}}

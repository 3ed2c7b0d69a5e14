"""Risk guards: the daily loss limit (failing closed) and each entry cap."""

import math

import pytest

from strategies.risk import RiskLimits, check_entry, daily_loss_breached, daily_loss_reason

L = RiskLimits()


@pytest.mark.parametrize(
    ("start", "equity", "pct", "breached"),
    [
        (10_000, 10_000, 0.02, False),
        (10_000, 10_500, 0.02, False),
        (10_000, 9_801, 0.02, False),
        (10_000, 9_800, 0.02, True),  # exactly the limit
        (10_000, 9_000, 0.02, True),
        (100_000, 98_000.0000000001, 0.02, True),  # float noise at the limit counts
        (0, 9_000, 0.02, True),  # unknown start of day: fail closed
        (math.nan, 9_000, 0.02, True),
        (10_000, math.nan, 0.02, True),
        (10_000, 10_000, 0.0, True),
    ],
)
def test_daily_loss_breached(start, equity, pct, breached):
    assert daily_loss_breached(start, equity, pct) is breached
    reason = daily_loss_reason(start, equity, pct)
    assert (reason is not None) is breached
    if reason:
        assert reason.startswith("daily_loss: ")


OK = dict(
    open_positions=0, symbol_exposure=0.0, new_premium_total=500.0, equity=50_000.0, day_trades_5d=0
)


def test_entry_allowed():
    assert check_entry(L, **OK) is None
    assert check_entry(L, **OK, contracts=10, start_of_day_equity=50_500.0) is None


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"open_positions": 3}, "max_open_positions"),
        ({"open_positions": 2}, None),
        ({"contracts": 11}, "max_contracts_per_order"),
        ({"new_premium_total": 2000.01}, "max_premium_per_trade"),
        ({"new_premium_total": 2000.0}, None),
        ({"symbol_exposure": 4600.0}, "max_exposure_per_symbol"),
        ({"symbol_exposure": 4500.0}, None),
        ({"equity": 20_000.0, "day_trades_5d": 3}, "pdt"),
        ({"equity": 20_000.0, "day_trades_5d": 2}, None),
        ({"equity": 30_000.0, "day_trades_5d": 5}, None),  # above the PDT threshold
        ({"start_of_day_equity": 52_000.0}, "daily_loss"),  # 50k is 3.8% down
        ({"start_of_day_equity": 0.0}, "daily_loss"),
        ({"equity": 0.0}, "invalid_input"),
        ({"equity": math.nan}, "invalid_input"),
        ({"new_premium_total": -1.0}, "invalid_input"),
        ({"open_positions": -1}, "invalid_input"),
    ],
)
def test_check_entry_caps(changes, code):
    reason = check_entry(L, **{**OK, **changes})
    if code is None:
        assert reason is None
    else:
        assert reason is not None and reason.split(":")[0] == code, reason


def test_zero_open_positions_cap_blocks_everything():
    assert check_entry(RiskLimits(max_open_positions=0), **OK).startswith("max_open_positions")


@pytest.mark.parametrize(
    "kwargs",
    [{"max_daily_loss_pct": 0.0}, {"max_open_positions": -1}, {"max_premium_per_trade": -5.0}],
)
def test_bad_limits_rejected(kwargs):
    with pytest.raises(ValueError):
        RiskLimits(**kwargs)


def test_count_day_trades_counts_same_day_round_trips_once():
    from datetime import date

    from strategies.risk import count_day_trades

    d1, d2 = date(2026, 11, 19), date(2026, 11, 20)
    fills = [
        (1, "BOT", d1),
        (1, "SLD", d1),  # a round trip
        (2, "BOT", d1),
        (2, "SLD", d2),  # held overnight: not a day trade
        (3, "BOT", d2),
        (3, "SLD", d2),
        (3, "SLD", d2),  # one round trip in two exits
        (4, "BOT", date(2026, 11, 1)),
        (4, "SLD", date(2026, 11, 1)),  # before the window
    ]
    assert count_day_trades(fills, since=date(2026, 11, 16)) == 2


# -- property-based: the guards -------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from strategies.risk import RiskLimits  # noqa: E402

money = st.floats(min_value=1.0, max_value=1e7, allow_nan=False, allow_infinity=False)


@given(money, st.floats(min_value=0, max_value=2e7), st.floats(min_value=0.001, max_value=1.0))
def test_daily_loss_guard_is_exactly_the_threshold(start, equity, pct):
    loss = start - equity
    breached = daily_loss_breached(start, equity, pct)
    if loss >= start * pct + 1e-6:
        assert breached
    if loss <= start * pct - 1e-6:
        assert not breached


@given(st.floats(allow_nan=True), st.floats(allow_nan=True))
def test_daily_loss_guard_fails_closed_on_unknown_equity(start, equity):
    import math

    if not (math.isfinite(start) and start > 0 and math.isfinite(equity)):
        assert daily_loss_breached(start, equity, 0.02)


@given(
    st.integers(0, 10),
    st.floats(0, 1e5),
    st.floats(0, 1e5),
    money,
    st.integers(0, 6),
)
def test_entry_caps_only_ever_tighten(open_positions, exposure, premium, equity, day_trades):
    limits = RiskLimits()
    kw = dict(
        open_positions=open_positions,
        symbol_exposure=exposure,
        new_premium_total=premium,
        equity=equity,
        day_trades_5d=day_trades,
    )
    reason = check_entry(limits, **kw)
    if open_positions >= limits.max_open_positions:
        assert reason is not None
    if premium > limits.max_premium_per_trade + 1e-6:
        assert reason is not None
    if reason is None:
        # Allowed: anything smaller on every axis is allowed too.
        smaller = dict(
            kw,
            open_positions=max(0, open_positions - 1),
            symbol_exposure=exposure / 2,
            new_premium_total=premium / 2,
            day_trades_5d=max(0, day_trades - 1),
        )
        assert check_entry(limits, **smaller) is None

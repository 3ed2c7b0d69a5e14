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

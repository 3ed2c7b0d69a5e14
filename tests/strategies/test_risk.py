"""Risk guards: the daily loss limit (failing closed), each entry cap, and the combined gate."""

import math
from dataclasses import replace
from datetime import date

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from strategies.risk import (
    GateInputs,
    RiskLimits,
    check_entry,
    daily_loss_breached,
    daily_loss_reason,
    flattens_due,
    gate_idea,
    guard_newly_tripped,
    kill_file_flatten,
    open_positions_reason,
    pdt_window_start,
    size_reason,
)

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


# -- the combined gate (RiskActor.on_TradeIdea's whole decision) ---------------------------------

FIRST, LAST = 5, 15

# The checks in the order gate_idea applies them, each with the reason code it gives.
ORDER = (
    "stopping",
    "kill_switch",
    "unvouched",
    "connection",
    "market_closed",
    "opening_window",
    "closing_window",
    "stale_data",
    "daily_loss",
    "busy",
    "max_open_positions",
)


# Each blocking condition holds now and then, so that most draws reach the later checks.
rarely = st.sampled_from([False, False, False, False, True])


@st.composite
def gate_inputs(draw):
    symbol = draw(st.sampled_from(["SPY", "QQQ"]))
    closed = draw(rarely)
    return GateInputs(
        symbol=symbol,
        stopping=draw(rarely),
        kill_switch=draw(rarely),
        unvouched="unvouched: run `optionsbot adopt`" if draw(rarely) else "",
        may_trade=not draw(rarely),
        connection_state=draw(st.sampled_from(["connected", "degraded", "breaker_open"])),
        minutes_since_open=None if closed else draw(st.floats(0, 390)),
        minutes_to_close=None if closed else draw(st.floats(0, 390)),
        stale=draw(rarely),
        loss_reason="daily_loss: down $2,000.00" if draw(rarely) else None,
        in_flight_symbols=tuple(draw(st.lists(st.sampled_from(["SPY", "QQQ", "IWM"]), max_size=3))),
        exposure=draw(st.sampled_from([0.0, 0.0, 0.0, 250.0])),
        open_positions=draw(st.integers(0, 5)),
    )


def failing(i: GateInputs, max_open: int) -> list[str]:
    """The checks this input fails, in gate order (an independent restatement of the rules)."""
    closed = i.minutes_since_open is None or i.minutes_to_close is None
    fails = {
        "stopping": i.stopping,
        "kill_switch": i.kill_switch,
        "unvouched": bool(i.unvouched),
        "connection": not i.may_trade,
        "market_closed": closed,
        "opening_window": not closed and i.minutes_since_open < FIRST,
        "closing_window": not closed and i.minutes_to_close < LAST,
        "stale_data": i.stale,
        "daily_loss": bool(i.loss_reason),
        "busy": i.symbol in i.in_flight_symbols or i.exposure > 0,
        "max_open_positions": i.open_positions + len(i.in_flight_symbols) >= max_open,
    }
    return [name for name in ORDER if fails[name]]


@settings(max_examples=500, deadline=None)
@given(inputs=gate_inputs(), max_open=st.integers(1, 6))
def test_gate_approves_only_when_every_check_passes_and_names_the_first_that_fails(
    inputs, max_open
):
    reason = gate_idea(inputs, RiskLimits(max_open_positions=max_open), FIRST, LAST)
    fails = failing(inputs, max_open)
    event(fails[0] if fails else "approved")  # hypothesis --hypothesis-show-statistics
    if not fails:
        assert reason is None
        return
    assert reason is not None
    first = fails[0]
    if first == "unvouched":
        assert reason == inputs.unvouched  # adoption's own words, shown as they are
    else:
        assert reason.split(":", 1)[0] == first, (reason, fails)


@settings(max_examples=300, deadline=None)
@given(inputs=gate_inputs(), max_open=st.integers(1, 6), other=st.sampled_from(["SPY", "QQQ"]))
def test_an_in_flight_approval_always_blocks_its_symbol_and_counts_as_open(inputs, max_open, other):
    """One more approval in flight never turns a skip into an approval, and its own symbol is
    always refused (it is OrderActor's entry until EntryFinished)."""
    limits = RiskLimits(max_open_positions=max_open)
    before = gate_idea(inputs, limits, FIRST, LAST)
    more = replace(inputs, in_flight_symbols=(*inputs.in_flight_symbols, other))
    after = gate_idea(more, limits, FIRST, LAST)
    if before is not None:
        assert after is not None
    if other == inputs.symbol:
        assert after is not None


def test_open_positions_count_in_flight_approvals():
    assert open_positions_reason(1, 1, 3) is None
    assert open_positions_reason(2, 1, 3) == "max_open_positions: 2 open + 1 pending >= 3"


@settings(max_examples=300, deadline=None)
@given(
    contracts=st.integers(-1, 20),
    premium=st.floats(0.01, 50),
    multiplier=st.sampled_from([1, 10, 100]),
    day_trades=st.integers(0, 5),
    open_positions=st.integers(0, 4),
)
def test_size_reason_is_the_sizing_reason_for_nothing_and_the_caps_otherwise(
    contracts, premium, multiplier, day_trades, open_positions
):
    kwargs = dict(
        premium=premium,
        multiplier=multiplier,
        open_positions=open_positions,
        symbol_exposure=0.0,
        equity=20_000.0,
        start_of_day_equity=20_000.0,
        day_trades_5d=day_trades,
    )
    got = size_reason(L, contracts=contracts, sizing_reason="risk budget", **kwargs)
    if contracts <= 0:
        assert got == "risk budget"
    else:
        assert got == check_entry(
            L,
            open_positions=open_positions,
            symbol_exposure=0.0,
            new_premium_total=contracts * premium * multiplier,
            equity=20_000.0,
            day_trades_5d=day_trades,
            contracts=contracts,
            start_of_day_equity=20_000.0,
        )


def test_the_guard_is_recorded_once_and_only_for_a_known_day():
    assert guard_newly_tripped("daily_loss: x", False)
    assert not guard_newly_tripped("daily_loss: x", True)  # already recorded today
    assert not guard_newly_tripped("daily_loss: x", None)  # no row for the day
    assert not guard_newly_tripped(None, False)


def test_pdt_window_is_the_last_five_opened_sessions():
    days = [date(2026, 11, d) for d in (16, 17, 18, 19, 20, 23, 24)]
    assert pdt_window_start(days) == date(2026, 11, 18)
    assert pdt_window_start(days[:2]) == date(2026, 11, 16)
    assert pdt_window_start([]) is None


@pytest.mark.parametrize(
    ("text", "flatten"),
    [
        ('{"flatten": true}', True),
        ('{"flatten": false}', False),
        ("", False),
        ("{", False),
        ("[1]", False),
        ("kill", False),
    ],
)
def test_kill_file_flatten_reads_only_a_clear_yes(text, flatten):
    assert kill_file_flatten(text) is flatten


@settings(max_examples=200, deadline=None)
@given(
    lefts=st.lists(st.floats(0, 60), min_size=1, max_size=30),
    scalp=st.integers(0, 30),
    whale=st.integers(0, 30),
)
def test_each_strategy_is_flattened_at_most_once_a_day_and_never_when_held(lefts, scalp, whale):
    day = date(2026, 11, 23)
    done: dict[str, date] = {}
    told: list[str] = []
    for left in sorted(lefts, reverse=True):  # the close approaches
        for strategy, minutes in flattens_due(
            left, (("scalp", scalp), ("whale", whale)), done, day
        ):
            assert minutes and left <= minutes
            done[strategy] = day
            told.append(strategy)
    assert len(told) == len(set(told))
    assert ("scalp" in told) == (scalp > 0 and min(lefts) <= scalp)
    assert ("whale" in told) == (whale > 0 and min(lefts) <= whale)
    assert flattens_due(None, (("scalp", 10),), {}, day) == []  # market closed

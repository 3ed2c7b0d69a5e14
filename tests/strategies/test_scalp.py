"""Scalp rules: warm-up, CALL, PUT on each branch, HOLD with reasons, bad bars, and a rule property."""

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.bars import Bar
from strategies.scalp import Cooldown, ScalpParams, ScalpStrategy
from strategies.signals import Direction

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
DAY = date(2024, 3, 1)


def bars_from_closes(closes, start=T0, first_open=None, volume=1000.0):
    out = []
    prev = first_open if first_open is not None else closes[0]
    for i, c in enumerate(closes):
        o = prev
        out.append(
            Bar(start + timedelta(minutes=i), o, max(o, c) + 0.05, min(o, c) - 0.05, c, volume)
        )
        prev = c
    return out


def feed(strategy, bars, key=DAY):
    return [strategy.on_bar(b, key) for b in bars]


def zigzag(n, up, down, start=500.0):
    """Alternate +up / -down: a trend whose RSI settles near up / (up + down)."""
    closes, x = [], start
    for i in range(n):
        x += up if i % 2 == 0 else -down
        closes.append(round(x, 2))
    return closes


def indicator_reasons_present(signal):
    text = " | ".join(signal.reasons)
    assert "ema8" in text and "ema21" in text
    assert "vwap" in text
    assert "rsi" in text


def test_warming_up_until_min_bars():
    s = ScalpStrategy("SPY", ScalpParams())
    signals = feed(s, bars_from_closes(zigzag(31, 0.30, 0.20)))
    for n, sig in enumerate(signals[:29], start=1):
        assert sig.is_hold and sig.confidence == 0.0
        assert sig.reasons[0] == f"warming up: {n}/30 bars"
        indicator_reasons_present(sig)
    assert "warming up" not in " ".join(signals[29].reasons)
    assert not any("n/a" in r for r in signals[29].reasons)


def test_warm_up_never_shorter_than_the_indicators():
    s = ScalpStrategy("SPY", ScalpParams(min_bars=5))
    sig = feed(s, bars_from_closes(zigzag(20, 0.3, 0.2)))[-1]
    assert sig.reasons[0] == "warming up: 20/21 bars"


def test_call_on_uptrend_above_vwap_with_rsi_in_band():
    s = ScalpStrategy("SPY", ScalpParams())
    sig = feed(s, bars_from_closes(zigzag(60, 0.30, 0.20)))[-1]
    assert sig.direction is Direction.CALL and not sig.is_hold
    assert sig.kind == "scalp" and sig.symbol == "SPY"
    assert s.ema_fast.value > s.ema_slow.value
    assert 45 <= s.rsi.value <= 70
    assert sig.reasons[0].startswith("ema8 ") and " > ema21 " in sig.reasons[0]
    assert " > vwap " in sig.reasons[1]
    assert sig.reasons[2].startswith("rsi ") and "in [45, 70]" in sig.reasons[2]
    assert any(r.startswith("call:") for r in sig.reasons)
    assert 0.0 < sig.confidence <= 1.0
    assert sig.price == s.last_bar.close


def test_put_on_ema_downtrend():
    s = ScalpStrategy("SPY", ScalpParams())
    sig = feed(s, bars_from_closes(zigzag(60, 0.27, 0.30)))[-1]
    assert sig.direction is Direction.PUT
    assert s.ema_fast.value < s.ema_slow.value
    assert s.rsi.value >= 40  # the EMA branch alone decides
    assert "put: ema8 < ema21" in sig.reasons
    indicator_reasons_present(sig)
    assert 0.0 < sig.confidence <= 1.0


def test_put_on_rsi_branch_while_emas_still_up():
    closes = [round(500 + 0.1 * i, 2) for i in range(40)]
    closes.append(closes[-1] - 3.0)  # one sharp drop: RSI falls below 40 before the EMAs cross
    s = ScalpStrategy("SPY", ScalpParams())
    sig = feed(s, bars_from_closes(closes))[-1]
    assert s.ema_fast.value > s.ema_slow.value
    assert s.rsi.value < 40
    assert sig.direction is Direction.PUT
    assert "put: rsi < 40" in sig.reasons
    # trend opposes the signal, so only the RSI half of the score counts
    assert 0.0 < sig.confidence <= 0.5


def test_hold_when_overbought():
    s = ScalpStrategy("SPY", ScalpParams())
    sig = feed(s, bars_from_closes([round(500 + 0.1 * i, 2) for i in range(40)]))[-1]
    assert sig.is_hold and sig.confidence == 0.0
    assert s.rsi.value > 70
    assert sig.reasons[2].endswith("> 70")
    assert sig.reasons[-1] == "hold: rsi above 70 (overbought)"


def test_hold_when_close_not_above_vwap():
    s = ScalpStrategy("SPY", ScalpParams())
    feed(s, bars_from_closes(zigzag(60, 0.30, 0.20)))
    last = s.last_bar
    # first bar of a new session closes at its low: VWAP (the typical price) is above it
    nxt = Bar(
        last.time + timedelta(minutes=1),
        last.close,
        last.close + 0.6,
        last.close,
        last.close + 0.05,
        500,
    )
    sig = s.on_bar(nxt, date(2024, 3, 4))
    assert sig.is_hold
    assert s.ema_fast.value > s.ema_slow.value and 45 <= s.rsi.value <= 70
    assert " < vwap " in sig.reasons[1]
    assert sig.reasons[-1] == "hold: close <= vwap"


def test_hold_when_rsi_between_sell_and_buy_levels():
    s = ScalpStrategy("SPY", ScalpParams(rsi_buy_min=60.0, rsi_buy_max=80.0, rsi_sell_below=40.0))
    sig = feed(s, bars_from_closes(zigzag(60, 0.30, 0.20)))[-1]
    assert 40 <= s.rsi.value < 60
    assert sig.is_hold
    assert sig.reasons[-1] == "hold: rsi between 40 and 60"


def test_conflicting_rules_hold_instead_of_guessing():
    s = ScalpStrategy("SPY", ScalpParams(rsi_buy_min=45.0, rsi_buy_max=70.0, rsi_sell_below=65.0))
    sig = feed(s, bars_from_closes(zigzag(60, 0.30, 0.20)))[-1]
    assert sig.is_hold
    assert sig.reasons[-1].startswith("hold: conflict")


def test_bad_bar_is_held_and_changes_nothing():
    s = ScalpStrategy("SPY", ScalpParams())
    bars = bars_from_closes(zigzag(40, 0.3, 0.2))
    feed(s, bars)
    before = (s.bars_seen, s.ema_fast.value, s.rsi.value, s.vwap.value)
    sig = s.on_bar(bars[-1], DAY)
    assert sig.is_hold and sig.reasons[0] == "rejected bar: duplicate"
    indicator_reasons_present(sig)
    bad = Bar(bars[-1].time + timedelta(minutes=1), 1, 1, 1, float("nan"), 1)
    assert s.on_bar(bad, DAY).reasons[0] == "rejected bar: nan_price"
    assert (s.bars_seen, s.ema_fast.value, s.rsi.value, s.vwap.value) == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ema_fast": 21, "ema_slow": 8},
        {"ema_fast": 0},
        {"rsi_buy_min": 80.0, "rsi_buy_max": 70.0},
        {"rsi_sell_below": 120.0},
        {"min_bars": 0},
    ],
)
def test_bad_params_rejected(kwargs):
    with pytest.raises(ValueError):
        ScalpParams(**kwargs)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.integers(-30, 30), min_size=31, max_size=150),
    volumes=st.lists(st.integers(0, 5000), min_size=150, max_size=150),
    split=st.integers(0, 150),
)
def test_signals_follow_the_rules(steps, volumes, split):
    p = ScalpParams()
    s = ScalpStrategy("QQQ", p)
    x = 400.0
    for i, step in enumerate(steps):
        o, x = x, round(x + 0.01 * step, 2)
        b = Bar(T0 + timedelta(minutes=i), o, max(o, x) + 0.02, min(o, x) - 0.02, x, volumes[i])
        sig = s.on_bar(b, "d1" if i < split else "d2")
        assert 0.0 <= sig.confidence <= 1.0
        assert sig.price == x and sig.bar_time == b.time
        indicator_reasons_present(sig)
        if i + 1 < p.min_bars:
            assert sig.is_hold
            continue
        fast, slow, rsi, vwap = s.ema_fast.value, s.ema_slow.value, s.rsi.value, s.vwap.value
        if fast > slow and x > vwap and p.rsi_buy_min <= rsi <= p.rsi_buy_max:
            assert sig.direction is Direction.CALL
        elif fast < slow or rsi < p.rsi_sell_below:
            assert sig.direction is Direction.PUT
        else:
            assert sig.is_hold and sig.confidence == 0.0
            assert sig.reasons[-1].startswith("hold: ")


# -- the cooldown: at most one idea per `bars` bars ----------------------------------------------


def test_cooldown_lets_the_first_idea_out_then_waits_its_bars():
    c = Cooldown(3)
    assert c.admit()  # no idea yet: nothing to cool down from
    outcomes = []
    for _ in range(7):
        c.on_bar()
        outcomes.append(c.admit())
    assert outcomes == [False, False, True, False, False, True, False]


def test_zero_cooldown_admits_every_idea():
    c = Cooldown(0)
    assert all(c.admit() for _ in range(5))


def test_negative_cooldown_is_refused():
    with pytest.raises(ValueError, match="cooldown"):
        Cooldown(-1)


@settings(max_examples=200, deadline=None)
@given(
    bars=st.integers(0, 20),
    wants=st.lists(st.booleans(), max_size=120),
)
def test_cooldown_admitted_ideas_are_at_least_bars_apart_and_none_is_lost_needlessly(bars, wants):
    """`wants[i]`: bar i produced a directional signal. Admitted ones are >= bars apart, and a
    wanted idea is suppressed only while the previous admitted one is fewer than bars back."""
    c = Cooldown(bars)
    admitted: list[int] = []
    for i, want in enumerate(wants):
        c.on_bar()
        if want:
            ok = c.admit()
            cooling = bool(admitted) and i - admitted[-1] < bars
            assert ok is not cooling
            if ok:
                admitted.append(i)
    assert all(b - a >= bars for a, b in zip(admitted, admitted[1:], strict=False))

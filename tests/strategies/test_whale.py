"""Whale rules: warm-up, breakout CALL, breakdown PUT, volume spike, debounce, window roll."""

from datetime import UTC, date, datetime, timedelta

import pytest

from strategies.bars import Bar
from strategies.signals import Direction
from strategies.whale import WhaleParams, WhaleStrategy

D0 = date(2024, 1, 1)
HOURS = 7  # 60-minute bars per session


def at(session: int, hour: int) -> datetime:
    d = D0 + timedelta(days=session)
    return datetime(d.year, d.month, d.day, 14, 30, tzinfo=UTC) + timedelta(hours=hour)


def hbar(session, hour, close=100.0, high=101.0, low=99.0, volume=1000.0):
    high, low = max(high, close), min(low, close)
    return Bar(at(session, hour), min(max(100.0, low), high), high, low, close, volume)


def day(session):
    return D0 + timedelta(days=session)


def normal_session(w, session, high=101.0, low=99.0):
    return [w.on_bar(hbar(session, h, high=high, low=low), day(session)) for h in range(HOURS)]


def warmed(params=None, sessions=20, **kwargs):
    w = WhaleStrategy("SPY", params or WhaleParams(), **kwargs)
    for s in range(sessions):
        normal_session(w, s)
    return w


def test_warming_up_counts_complete_sessions():
    w = WhaleStrategy("SPY", WhaleParams())
    for s in range(20):
        for sig in normal_session(w, s):
            assert sig.is_hold and sig.kind == "whale"
            assert sig.reasons == (f"warming up: {s}/20 sessions",)
    assert not w.ready
    sig = w.on_bar(hbar(20, 0), day(20))
    assert w.ready and w.sessions_complete == 20
    assert (w.range_low, w.range_high, w.avg_volume) == (99.0, 101.0, 1000.0)
    assert sig.reasons[0] == "no breakout: close 100.00 within [99.00, 101.00]"


def test_breakout_call():
    w = warmed()
    sig = w.on_bar(hbar(20, 0, close=102.0, high=102.5, volume=2000.0), day(20))
    assert sig.direction is Direction.CALL
    assert sig.reasons[0] == "close 102.00 > 20d high 101.00"
    assert sig.reasons[1].startswith("volume 2.00x > 1.5x")
    # 0.5 + 0.25 * (2 - 1.5) / 1.5 + 0.25 * min(1, (1 / 101) / 0.005)
    assert sig.confidence == pytest.approx(0.5 + 0.25 / 3 + 0.25)
    assert w.last_fired == at(20, 0)


def test_breakdown_put():
    w = warmed()
    sig = w.on_bar(hbar(20, 3, close=98.9, low=98.5, volume=3000.0), day(20))
    assert sig.direction is Direction.PUT
    assert sig.reasons[0] == "close 98.90 < 20d low 99.00"
    assert 0.5 < sig.confidence <= 1.0
    assert w.last_fired == at(20, 3)


@pytest.mark.parametrize("volume", [1000.0, 1400.0, 1500.0])
def test_breakout_without_volume_spike_holds(volume):
    w = warmed()
    sig = w.on_bar(hbar(20, 0, close=102.0, high=102.5, volume=volume), day(20))
    assert sig.is_hold and sig.confidence == 0.0
    assert sig.reasons[1].startswith(f"volume {volume / 1000:.2f}x <= 1.5x")
    assert sig.reasons[-1] == "hold: no volume spike"
    assert w.last_fired is None


def test_volume_spike_without_breakout_holds():
    w = warmed()
    sig = w.on_bar(hbar(20, 0, close=100.5, volume=5000.0), day(20))
    assert sig.is_hold
    assert sig.reasons[0] == "no breakout: close 100.50 within [99.00, 101.00]"


def test_current_session_is_not_part_of_the_range():
    w = warmed()
    assert w.on_bar(hbar(20, 0, close=100.5, high=105.0), day(20)).is_hold
    sig = w.on_bar(hbar(20, 1, close=102.0, high=102.0, volume=2000.0), day(20))
    assert sig.direction is Direction.CALL  # 102 > 101 although today already traded 105
    w.on_bar(hbar(21, 0), day(21))
    assert w.range_high == 105.0


def test_window_keeps_only_the_last_lookback_sessions():
    w = WhaleStrategy("SPY", WhaleParams())
    normal_session(w, 0, high=150.0, low=50.0)
    for s in range(1, 20):
        normal_session(w, s)
    w.on_bar(hbar(20, 0), day(20))
    assert (w.range_low, w.range_high) == (50.0, 150.0)
    normal_session(w, 21)
    assert (w.range_low, w.range_high) == (99.0, 101.0)


def test_debounce_three_days_then_fires_again():
    w = warmed()
    first = w.on_bar(hbar(20, 2, close=102.0, volume=5000.0), day(20))
    assert first.direction is Direction.CALL
    fired = at(20, 2)
    until = fired + timedelta(days=3)
    for session, hour, close in [(21, 0, 110.0), (22, 4, 115.0), (23, 0, 120.0), (23, 1, 121.0)]:
        sig = w.on_bar(hbar(session, hour, close=close, volume=5000.0), day(session))
        assert sig.is_hold, (session, hour)
        assert sig.reasons[0].startswith("close ") and "> 20d high" in sig.reasons[0]
        assert sig.reasons[-1].startswith(f"debounced until {until.isoformat()}")
        assert w.last_fired == fired
    again = w.on_bar(hbar(23, 2, close=122.0, volume=5000.0), day(23))
    assert again.direction is Direction.CALL
    assert w.last_fired == at(23, 2) == until


def test_persisted_last_fired_debounces_after_restart():
    fired = at(19, 6)
    w = warmed(last_fired=fired)
    assert w.last_fired == fired  # warm-up bars never touch it
    sig = w.on_bar(hbar(20, 0, close=102.0, volume=5000.0), day(20))
    assert sig.is_hold and sig.reasons[-1].startswith("debounced until")
    assert w.debounced_until() == fired + timedelta(days=3)


def test_zero_debounce_fires_every_time():
    w = warmed(WhaleParams(debounce_days=0))
    assert w.on_bar(hbar(20, 0, close=102.0, volume=5000.0), day(20)).direction is Direction.CALL
    assert w.on_bar(hbar(20, 1, close=103.0, volume=5000.0), day(20)).direction is Direction.CALL


def test_bad_bars_and_backwards_sessions_are_rejected():
    w = warmed()
    sig = w.on_bar(hbar(19, 6), day(19))
    assert sig.reasons == ("rejected bar: duplicate",)
    sig = w.on_bar(hbar(20, 0), day(18))
    assert sig.reasons == ("rejected bar: session_out_of_order",)
    assert w.on_bar(hbar(20, 0, volume=-5), day(20)).reasons == ("rejected bar: negative_volume",)
    assert w.sessions_complete == 19  # nothing above rolled a session


def test_zero_volume_window_never_spikes():
    w = WhaleStrategy("SPY", WhaleParams(lookback_days=2))
    for s in range(2):
        for h in range(HOURS):
            w.on_bar(hbar(s, h, volume=0.0), day(s))
    sig = w.on_bar(hbar(2, 0, close=105.0, volume=10_000.0), day(2))
    assert sig.is_hold
    assert sig.reasons[1].startswith("volume: no average")


def test_naive_last_fired_rejected():
    with pytest.raises(ValueError):
        WhaleStrategy("SPY", WhaleParams(), last_fired=datetime(2024, 1, 1))


@pytest.mark.parametrize(
    "kwargs", [{"lookback_days": 0}, {"volume_multiple": 0.0}, {"debounce_days": -1}]
)
def test_bad_params_rejected(kwargs):
    with pytest.raises(ValueError):
        WhaleParams(**kwargs)


def test_a_breakout_in_history_is_reported_but_debounces_nothing():
    """A breakout seen in backfill was never traded: the next live one must still fire."""
    w = warmed()
    old = w.on_bar(hbar(20, 2, close=102.0, volume=5000.0), day(20), live=False)
    assert old.direction is Direction.CALL  # reported: the journal and the warm-up see it
    assert w.last_fired is None
    live = w.on_bar(hbar(20, 3, close=103.0, volume=5000.0), day(20), live=True)
    assert live.direction is Direction.CALL and w.last_fired == at(20, 3)


def test_history_keeps_the_live_debounce_it_was_started_with():
    fired = at(19, 6)
    w = warmed(last_fired=fired)
    w.on_bar(hbar(23, 0, close=130.0, volume=5000.0), day(23), live=False)  # past the debounce
    assert w.last_fired == fired

"""Hourly bars from minutes match the simulator's own hourly bars (IB's RTH grid)."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from actors.hours import MarketHours
from sim.market import MarketModel
from strategies.aggregate import HourlyAggregator, MinuteAggregator, hour_bucket
from strategies.bars import Bar

HOURS = MarketHours()


def to_bar(b) -> Bar:
    return Bar(b.time, b.open, b.high, b.low, b.close, float(b.volume))


def test_buckets_follow_ibs_grid_on_a_half_day():
    s = HOURS.session_at(datetime(2026, 11, 27, 15, 0, tzinfo=UTC))  # day after Thanksgiving
    first = hour_bucket(s.open, s.open, s.close)
    assert (first[0], first[1] - first[0]) == (s.open, timedelta(minutes=30))
    last = hour_bucket(s.close - timedelta(minutes=1), s.open, s.close)
    assert last[1] == s.close


def test_minutes_aggregate_to_the_simulators_hourly_bars():
    market = MarketModel(seed=3)
    s = HOURS.session_at(datetime(2026, 11, 20, 15, 0, tzinfo=UTC))
    minutes = market.bars("SPY", s.open, s.close, 60)
    hourly = market.bars("SPY", s.open, s.close, 3600)
    agg = HourlyAggregator()
    built = [h for b in minutes for h in agg.update(to_bar(b), s.open, s.close)]
    assert [h.time for h in built] == [h.time for h in hourly]
    for ours, theirs in zip(built, hourly, strict=True):
        assert (ours.open, ours.high, ours.low, ours.close) == (
            theirs.open,
            theirs.high,
            theirs.low,
            theirs.close,
        )
        assert ours.volume == theirs.volume


def test_a_missing_last_minute_still_closes_the_hour():
    s = HOURS.session_at(datetime(2026, 11, 20, 15, 0, tzinfo=UTC))
    agg = HourlyAggregator()
    t = s.open + timedelta(minutes=28)
    assert agg.update(Bar(t, 1, 1, 1, 1, 1), s.open, s.close) == []
    # 09:59 is lost; 10:00's minute closes the 09:30 bar.
    out = agg.update(Bar(s.open + timedelta(minutes=30), 2, 2, 2, 2, 1), s.open, s.close)
    assert [h.time for h in out] == [s.open]


FIVE_BARS_START = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def test_minutes_from_five_second_bars_match_the_simulators_minutes():
    """Twelve 5-second bars make the simulator's own 1-minute bar, closed on the twelfth."""
    market = MarketModel(seed=7)
    start, end = FIVE_BARS_START, FIVE_BARS_START + timedelta(minutes=10)
    fives = market.bars("SPY", start, end, 5)
    minutes = market.bars("SPY", start, end, 60)
    agg = MinuteAggregator()
    got = []
    for b in fives:
        closed = agg.update(to_bar(b))
        if closed:
            # Closed by the minute's last 5-second bar, at the minute's end: no timer needed.
            assert b.time + timedelta(seconds=5) == closed[0].time + timedelta(minutes=1)
        got += closed
    assert [(b.time, b.open, b.high, b.low, b.close) for b in got] == [
        (b.time, b.open, b.high, b.low, b.close) for b in minutes
    ]
    assert [b.volume for b in got] == [float(b.volume) for b in minutes]


@given(
    start_at=st.integers(0, 11),
    lost=st.sets(st.integers(0, 59), max_size=6),
    repeated=st.sets(st.integers(0, 59), max_size=4),
)
def test_a_minute_missing_a_five_second_bar_is_never_streamed(start_at, lost, repeated):
    """Joined mid-minute, or a 5-second bar lost (an outage): that minute is left to history
    (the caller fills the hole), never streamed with wrong values; a repeat changes nothing."""
    bars = []
    for i in range(start_at, 60):  # five minutes of 5-second bars, from index start_at
        if i in lost:
            continue
        t = FIVE_BARS_START + timedelta(seconds=5 * i)
        bar = Bar(t, 100 + i, 101 + i, 99 + i, 100.5 + i, 10.0)
        bars.append(bar)
        if i in repeated:
            bars.append(bar)
    agg = MinuteAggregator()
    got = [m for b in bars for m in agg.update(b)]
    complete = [
        k
        for k in range(5)
        if k * 12 >= start_at and not any(k * 12 <= i < (k + 1) * 12 for i in lost)
    ]
    assert [b.time for b in got] == [FIVE_BARS_START + timedelta(minutes=k) for k in complete]
    for b in got:
        k = int((b.time - FIVE_BARS_START).total_seconds() // 60)
        assert (b.open, b.close, b.volume) == (100 + 12 * k, 100.5 + 12 * k + 11, 120.0)

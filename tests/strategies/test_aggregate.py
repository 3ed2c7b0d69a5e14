"""Hourly bars from minutes match the simulator's own hourly bars (IB's RTH grid)."""

from datetime import UTC, datetime, timedelta

from actors.hours import MarketHours
from sim.market import MarketModel
from strategies.aggregate import HourlyAggregator, hour_bucket
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

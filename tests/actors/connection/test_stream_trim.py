"""A keepUpToDate stream's bar list stays two bars long, through ib_async's own update path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ib_async import IB, BarData, BarDataList
from ib_async.wrapper import Wrapper

from actors.connection import trim_stream


def test_a_stream_of_a_week_of_minutes_keeps_two_bars_and_every_closed_bar_is_seen():
    wrapper = Wrapper(IB())
    bars = BarDataList()
    t0 = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
    # The backfill: a day of minutes, as reqHistoricalData answers it.
    bars += [BarData(date=t0 + timedelta(minutes=i), close=100.0 + i) for i in range(390)]
    bars.reqId = 7
    wrapper.reqId2Subscriber[7] = bars
    trim_stream(bars)
    closed: list[datetime] = []

    def on_update(bar_list, has_new_bar):  # what ConnectionActor does, in that order
        if has_new_bar and len(bar_list) >= 2:
            closed.append(bar_list[-2].date)
            trim_stream(bar_list)

    bars.updateEvent += on_update
    for i in range(390, 390 * 5):
        for tick in range(3):  # updates of the forming bar, then the next one starts
            when = t0 + timedelta(minutes=i)
            wrapper.historicalDataUpdate(
                7, BarData(date=when.strftime("%Y%m%d %H:%M:%S UTC"), close=100.0 + i + tick)
            )
        assert len(bars) <= 2
    assert closed == [t0 + timedelta(minutes=i) for i in range(389, 390 * 5 - 1)]
    assert bars[-1].close == 100.0 + 390 * 5 - 1 + 2  # the forming bar took its last update

"""History's requests and streams, on an event loop of the test's own, with a fake IB client."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from ib_async import IB, BarData, BarDataList
from support import SESSION_TIME, FakeRef

from actors import messages as m
from actors.connection.session import Session
from sim.clock import ManualClock


class HistoryIB:
    """Records the historical requests that reach the wire."""

    def __init__(self):
        self.durations = []

    def isConnected(self):  # noqa: N802 - ib_async's name
        return True

    async def qualifyContractsAsync(self, contract):  # noqa: N802
        contract.conId = 756733
        return [contract]

    async def reqHistoricalDataAsync(self, contract, **kw):  # noqa: N802
        self.durations.append(kw["durationStr"])
        return []


@pytest.fixture
def session(make_settings, metrics):
    """A session as the loop thread sees it, its IB client a fake: never started."""
    s = Session(make_settings(symbols=["SPY", "QQQ"]), metrics, None, actor=FakeRef("actor"))
    s.ib = HistoryIB()
    return s


def test_a_gap_request_that_waited_its_turn_still_reaches_back_to_the_last_bar(session):
    session.clock = ManualClock(SESSION_TIME)
    history = session.history
    reply = FakeRef()
    since = SESSION_TIME - timedelta(minutes=10)
    msg = m.FetchBars(symbol="SPY", bar_size="1 min", duration="720 S", reply_to=reply, since=since)

    async def run():
        history.slots = asyncio.Semaphore(1)
        await history.slots.acquire()  # every open-request slot is taken: the request waits
        task = asyncio.create_task(history.fetch(msg, 0.0, stream=False))
        await asyncio.sleep(0.01)
        assert session.ib.durations == []
        session.clock.advance(timedelta(minutes=20))  # the wait lasted 20 minutes
        history.slots.release()
        await task

    asyncio.run(run())
    # 30 minutes since the last bar, plus two bars: not the 12 minutes known when it was queued.
    assert session.ib.durations == ["1920 S"]
    assert reply.last(m.BarsBackfilled).symbol == "SPY"


def test_the_sessions_last_bar_is_delivered_from_the_stream_once(session):
    history = session.history
    reply = FakeRef()
    last = datetime(2026, 11, 20, 20, 59, tzinfo=UTC)

    def ib_bar(t):
        return BarData(date=t, open=1, high=2, low=0.5, close=1.5, volume=100)

    stream = [ib_bar(last - timedelta(minutes=1)), ib_bar(last)]
    history.open_streams[("SPY", "1 min")] = stream

    async def run(bar_time):
        await history.close_last_bar(
            m.CloseLastBar(symbol="SPY", bar_size="1 min", bar_time=bar_time, reply_to=reply)
        )

    asyncio.run(run(last - timedelta(minutes=5)))  # not the stream's forming bar: nothing
    assert reply.of(m.BarStreamed) == []
    asyncio.run(run(last))
    assert [b.bar.time for b in reply.of(m.BarStreamed)] == [last]
    assert history.closed_early[("SPY", "1 min")] == last


@pytest.mark.parametrize(
    ("seconds_after_close", "delivered"),
    [(-30, ["20:57", "20:58"]), (60, ["20:57", "20:58", "20:59"])],
)
def test_a_streams_last_bar_is_history_only_once_the_market_has_closed(
    session, seconds_after_close, delivered
):
    """Mid-session a keepUpToDate answer ends with the bar still forming; after the close
    (a reconnect in the evening) that bar is the session's last, and final."""
    close = datetime(2026, 11, 20, 21, 0, tzinfo=UTC)
    session.clock = ManualClock(close + timedelta(seconds=seconds_after_close))
    answer = BarDataList()
    answer += [
        BarData(date=close - timedelta(minutes=n), open=1, high=2, low=0.5, close=1.5, volume=9)
        for n in (3, 2, 1)
    ]

    class StreamIB(HistoryIB):
        async def reqHistoricalDataAsync(self, contract, **kw):  # noqa: N802
            return answer

    session.ib = StreamIB()
    reply = FakeRef()
    msg = m.StreamBars(symbol="SPY", bar_size="1 min", duration="2 D", reply_to=reply)

    async def run():
        session.history.slots = asyncio.Semaphore(50)
        await session.history.fetch(msg, 0.0, stream=True)

    asyncio.run(run())
    got = [b.time.strftime("%H:%M") for b in reply.last(m.BarsBackfilled).bars]
    assert got == delivered


def test_a_live_real_time_stream_asked_again_only_fetches_its_history(session):
    """IB allows 60 new real-time bar requests in 10 minutes: a resubscription (a failed
    backfill asked again, a stale window) of a stream that still brings bars keeps it."""
    session.clock = ManualClock(SESSION_TIME)
    history = session.history
    key = ("SPY", "1 min")
    live = object()
    history.realtime_streams[key] = live
    history.realtime_seen[key] = time.monotonic()
    reply = FakeRef()
    msg = m.StreamBars(
        symbol="SPY", bar_size="1 min", duration="2 D", reply_to=reply, realtime=True
    )

    class NoNewStream(HistoryIB):
        def reqRealTimeBars(self, *a, **kw):  # noqa: N802
            raise AssertionError("a second subscription")

    session.ib = NoNewStream()
    asyncio.run(history.realtime(msg))
    assert history.realtime_streams[key] is live
    assert session.ib.durations == ["2 D"] and reply.last(m.BarsBackfilled).symbol == "SPY"


def test_a_real_time_stream_waiting_for_ibs_window_is_not_booked_twice(session):
    """A stale window asks again while the subscription still waits its turn (IB's 60 in
    10 minutes): another booking would push every later subscription further back."""
    session.clock = ManualClock(SESSION_TIME)
    history = session.history
    key = ("SPY", "1 min")
    history.realtime_waiting.add(key)
    reply = FakeRef()
    msg = m.StreamBars(
        symbol="SPY", bar_size="1 min", duration="2 D", reply_to=reply, realtime=True
    )
    booked = len(history.pacer._all)
    asyncio.run(history.realtime(msg))
    assert len(history.pacer._all) == booked  # no real-time request booked
    assert session.ib.durations == ["2 D"]  # the history, which can be had now


def test_a_real_time_stream_waiting_for_ibs_window_brings_each_minute_from_history(session):
    """After a reconnect at 55 real-time symbols IB's 60-in-10-minutes window makes most wait up
    to ten minutes: with no bars meanwhile they went stale. Each minute now comes from a short
    1-minute history request (not small bars: outside the 60) once it has closed, and the
    subscription follows when the window allows, asking history only after the last minute.
    The first request goes at once: waiting for the next minute let the symbol cross the stale
    limit after a Gateway restart (seen in bench.soak at 100 symbols)."""
    from ib_async import RealTimeBarList

    start = SESSION_TIME + timedelta(seconds=50)
    t0 = time.monotonic()

    class FastClock:  # 120x: a simulated minute is half a real second
        scale = 120.0

        def now(self):
            return start + timedelta(seconds=(time.monotonic() - t0) * self.scale)

    session.clock = FastClock()
    asked: list[tuple[str, datetime]] = []

    class MinutesIB(HistoryIB):
        async def reqHistoricalDataAsync(self, contract, **kw):  # noqa: N802
            now = session.clock.now()
            asked.append((kw["durationStr"], now))
            closed = now.replace(second=0, microsecond=0)
            answer = BarDataList()
            answer += [
                BarData(date=closed - timedelta(minutes=n), open=1, high=2, low=0.5, close=1.5)
                for n in (3, 2, 1)
            ]
            return answer

        def reqRealTimeBars(self, *a, **kw):  # noqa: N802
            self.subscribed_at = session.clock.now()
            return RealTimeBarList()

    session.ib = MinutesIB()
    history = session.history
    reserve = history.pacer.reserve

    def window_full(key, contract_key, now, small_bars=True):
        reserve(key, contract_key, now, small_bars)
        # 4.5 simulated minutes for the subscription; the history requests go at once (at 120x
        # the 15 s identical-request spacing, in real seconds, would be 30 simulated minutes;
        # a real minute apart they never meet it).
        return 2.25 if key[1:] == ("5 secs", True) else 0.0

    history.pacer.reserve = window_full
    reply = FakeRef()
    since = SESSION_TIME - timedelta(minutes=4)
    msg = m.StreamBars(
        symbol="SPY", bar_size="1 min", duration="2 D", reply_to=reply, since=since, realtime=True
    )

    async def run():
        history.slots = asyncio.Semaphore(50)
        await history.realtime(msg)

    asyncio.run(run())
    answers = reply.of(m.BarsBackfilled)
    polls = [t for _, t in asked if t < session.ib.subscribed_at]
    # One request at once (the gap since the reconnect's last bar, as the other streams' fills),
    # one after each of the (about) four minutes that closed during the wait, each after its
    # minute's end plus the grace, and one more behind the subscription.
    assert 4 <= len(polls) <= 6, asked
    assert polls[0] - start < timedelta(seconds=10), asked
    for t in polls[1:]:
        assert t.second >= 2, t  # not before the minute is history at the Gateway
    assert len(answers) == len(asked)
    delivered = sorted({b.time for a in answers for b in a.bars})
    assert delivered[-1] >= start.replace(second=0) + timedelta(minutes=3)
    # Durations reach back to the last bar passed on, not to the reconnect's `since` (from
    # which each would be a minute longer than the one before).
    later = [int(d.split()[0]) for d, _ in asked[1:]]
    assert max(later) - min(later) < 60, asked


def test_a_real_time_stream_keeps_one_bar_and_every_minute_still_arrives(session):
    """ib_async appends every 5-second bar to the stream's list for as long as it is open and
    never reads them back: a day is 4,680 bars a symbol (the 5-day soak grew 10 MB a day with 5
    real-time symbols). Through ib_async's own wrapper, a day of bars leaves one in the list,
    and every minute is still aggregated and sent."""
    from ib_async import RealTimeBarList
    from ib_async.wrapper import Wrapper

    session.clock = ManualClock(SESSION_TIME)
    wrapper = Wrapper(IB())
    live = RealTimeBarList()

    class RealTimeIB(HistoryIB):
        def reqRealTimeBars(self, *a, **kw):  # noqa: N802
            live.reqId = 9
            wrapper.reqId2Subscriber[9] = live
            return live

    session.ib = RealTimeIB()
    reply = FakeRef()
    msg = m.StreamBars(
        symbol="SPY", bar_size="1 min", duration="2 D", reply_to=reply, realtime=True
    )

    async def run():
        session.history.slots = asyncio.Semaphore(50)
        await session.history.realtime(msg)

    asyncio.run(run())
    start = int(SESSION_TIME.timestamp())
    longest = 0
    for i in range(390 * 12 + 1):  # a session of 5-second bars, and the next one's first
        wrapper.realtimeBar(9, start + 5 * i, 100.0, 100.5, 99.5, 100.0 + i % 7, 10, 100.0, 3)
        longest = max(longest, len(live))
    assert longest == 1
    minutes = [b.bar.time for b in reply.of(m.BarStreamed)]
    assert len(minutes) == 390 and minutes[0] == SESSION_TIME
    assert minutes == sorted(set(minutes))

"""ConnectionActor's decisions, with handlers called directly: no socket, no event loop."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import FakeRef

from actors import messages as m
from actors.connection import ConnectionActor, _ConnectResult, _IbError, backoff_delay
from machines.connection import connection_machine
from storage import MachineStateRepo, open_db


class FakeIB:
    connected = True

    def isConnected(self):  # noqa: N802 - ib_async's name
        return self.connected


@pytest.fixture
def conn(make_settings, metrics):
    settings = make_settings(symbols=["SPY", "QQQ"], broker={"client_id": 17, "client_id_pool": 3})
    actor = ConnectionActor(settings, metrics, clock=None, port=4002)
    actor.db = open_db(settings.storage.path)
    actor.states = MachineStateRepo(actor.db)
    actor.ib = FakeIB()
    connection_machine(actor.model)
    listener = FakeRef("listener")
    actor.listeners["connection"].append(listener)
    actor.stopping = True  # no reconnect timers in unit tests
    yield actor, listener
    actor.db.close()


def connected(actor):
    actor.model.connect()
    actor.on_ConnectResult(_ConnectResult(ok=True))
    return actor


def test_client_id_in_use_rotates_through_the_pool(conn):
    actor, _ = conn
    ids = []
    for _ in range(4):
        actor.model.state = "disconnected"
        actor.model.connect()
        actor.on_ConnectResult(_ConnectResult(ok=False, cause="326", client_id_in_use=True))
        ids.append(actor.client_id)
    assert ids == [18, 19, 17, 18]


def test_connect_broadcasts_a_resync_and_persists_the_state(conn):
    actor, listener = conn
    connected(actor)
    changed = listener.last(m.ConnectionChanged)
    assert changed.state == "connected" and changed.resync and changed.may_trade
    assert MachineStateRepo(actor.db).load("connection")[0] == "connected"


@pytest.mark.parametrize(
    ("codes", "state", "may_trade"),
    [
        ((1100,), "degraded", False),
        ((1100, 1102), "connected", True),
        ((2105,), "degraded", False),
        ((2105, 2106), "connected", True),
        ((2103, 2105, 2104), "degraded", False),
        ((2104, 2106, 2158), "connected", True),  # the farm-OK messages of every connect
        (
            (10089, 354, 2107, 366),
            "connected",
            True,
        ),  # entitlement: a skip reason, not a connection fault
    ],
)
def test_gateway_messages_drive_the_machine(conn, codes, state, may_trade):
    actor, _ = conn
    connected(actor)
    for code in codes:
        actor.on_IbError(_IbError(req_id=-1, code=code, text="x"))
    assert actor.model.state == state and actor.model.may_trade is may_trade


def test_1101_data_lost_asks_everyone_to_resubscribe(conn):
    actor, listener = conn
    connected(actor)
    actor.on_IbError(_IbError(req_id=-1, code=1100, text="lost"))
    listener.told.clear()
    actor.on_IbError(_IbError(req_id=-1, code=1101, text="restored, data lost"))
    assert [c.resync for c in listener.of(m.ConnectionChanged)] == [False, True]


def test_stale_everywhere_degrades_and_one_fresh_symbol_recovers(conn):
    actor, _ = conn
    connected(actor)
    actor.on_SymbolStale(m.SymbolStale(symbol="SPY", stale=True, age_s=400))
    assert actor.model.state == "connected"
    actor.on_SymbolStale(m.SymbolStale(symbol="QQQ", stale=True, age_s=400))
    assert actor.model.state == "degraded"
    actor.on_SymbolStale(m.SymbolStale(symbol="QQQ", stale=False, age_s=0))
    assert actor.model.state == "connected"


def test_requests_are_refused_with_a_reason_when_not_connected(conn):
    actor, _ = conn
    reply = FakeRef()
    actor.on_StreamBars(
        m.StreamBars(symbol="SPY", bar_size="1 min", duration="2 D", reply_to=reply)
    )
    actor.on_FetchChain(m.FetchChain(symbol="SPY", reply_to=reply))
    actor.on_FetchQuotes(
        m.FetchQuotes(contracts=(m.OptionContract("SPY", "20261123", 680, "C"),), reply_to=reply)
    )
    assert reply.last(m.StreamFailed).reason == "not connected (connection disconnected)"
    assert reply.last(m.ChainFetched).reason.startswith("not connected")
    assert reply.last(m.QuotesFetched).missing[0][1].startswith("not connected")


@given(st.integers(0, 40))
def test_backoff_grows_and_is_capped(attempt):
    step = min(30.0, 2.0**attempt)
    d = backoff_delay(attempt)
    assert 0.5 * step <= d <= step


def test_gateway_clock_follows_the_gateway_between_syncs():
    from datetime import UTC, datetime, timedelta

    from actors.clock import GatewayClock

    t = [100.0]
    clock = GatewayClock(scale=30.0, monotonic=lambda: t[0])
    gateway = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    skew = clock.sync(gateway)
    assert (
        clock.synced and abs(skew) > 86_400
    )  # the wall clock is days away from the simulated session
    t[0] += 2.0
    assert clock.now() == gateway + timedelta(seconds=60)
    assert clock.sync(gateway + timedelta(seconds=61)) == -1.0


class HistoryIB(FakeIB):
    """Records the historical requests that reach the wire."""

    def __init__(self):
        self.durations = []

    async def qualifyContractsAsync(self, contract):  # noqa: N802
        contract.conId = 756733
        return [contract]

    async def reqHistoricalDataAsync(self, contract, **kw):  # noqa: N802
        self.durations.append(kw["durationStr"])
        return []


def test_a_gap_request_that_waited_its_turn_still_reaches_back_to_the_last_bar(conn):
    import asyncio
    from datetime import timedelta

    from support import SESSION_TIME

    from sim.clock import ManualClock

    actor, _ = conn
    actor.clock = ManualClock(SESSION_TIME)
    actor.ib = HistoryIB()
    reply = FakeRef()
    since = SESSION_TIME - timedelta(minutes=10)
    msg = m.FetchBars(symbol="SPY", bar_size="1 min", duration="720 S", reply_to=reply, since=since)

    async def run():
        actor.hist_slots = asyncio.Semaphore(1)
        await actor.hist_slots.acquire()  # every open-request slot is taken: the request waits
        task = asyncio.create_task(actor._history(msg, 0.0, stream=False))
        await asyncio.sleep(0.01)
        assert actor.ib.durations == []
        actor.clock.advance(timedelta(minutes=20))  # the wait lasted 20 minutes
        actor.hist_slots.release()
        await task

    asyncio.run(run())
    # 30 minutes since the last bar, plus two bars: not the 12 minutes known when it was queued.
    assert actor.ib.durations == ["1920 S"]
    assert reply.last(m.BarsBackfilled).symbol == "SPY"


def test_the_sessions_last_bar_is_delivered_from_the_stream_once(conn):
    import asyncio
    from datetime import UTC, datetime, timedelta

    from ib_async import BarData

    actor, _ = conn
    reply = FakeRef()
    last = datetime(2026, 11, 20, 20, 59, tzinfo=UTC)

    def ib_bar(t):
        return BarData(date=t, open=1, high=2, low=0.5, close=1.5, volume=100)

    stream = [ib_bar(last - timedelta(minutes=1)), ib_bar(last)]
    actor.open_streams[("SPY", "1 min")] = stream

    async def run(bar_time):
        await actor._close_last_bar(
            m.CloseLastBar(symbol="SPY", bar_size="1 min", bar_time=bar_time, reply_to=reply)
        )

    asyncio.run(run(last - timedelta(minutes=5)))  # not the stream's forming bar: nothing
    assert reply.of(m.BarStreamed) == []
    asyncio.run(run(last))
    assert [b.bar.time for b in reply.of(m.BarStreamed)] == [last]
    assert actor.closed_early[("SPY", "1 min")] == last


@pytest.mark.parametrize(
    ("allowed", "codes", "switched"),
    [
        (True, (10089, 354, 10089), 1),  # once, however many errors follow
        (False, (10089,), 0),  # the settings do not allow it: advice only
        (True, (10168,), 0),  # delayed data is not enabled either: nothing to switch to
    ],
)
def test_entitlement_errors_switch_to_delayed_data_once_when_allowed(
    make_settings, metrics, allowed, codes, switched
):
    settings = make_settings(broker={"delayed_data_fallback": allowed})
    actor = ConnectionActor(settings, metrics, clock=None, port=4002)
    actor.ib = FakeIB()
    spawned = []
    actor._spawn = lambda coro: (spawned.append(coro.__qualname__), coro.close())
    for code in codes:
        actor.on_IbError(_IbError(req_id=7, code=code, text="not subscribed"))
    assert spawned == ["ConnectionActor._request_market_data_type"] * switched
    assert actor.market_data_type == (3 if switched else 1)
    assert (
        metrics.registry.get_sample_value("optionsbot_market_data_type") == actor.market_data_type
    )


@pytest.mark.parametrize(
    ("seconds_after_close", "delivered"),
    [(-30, ["20:57", "20:58"]), (60, ["20:57", "20:58", "20:59"])],
)
def test_a_streams_last_bar_is_history_only_once_the_market_has_closed(
    conn, seconds_after_close, delivered
):
    """Mid-session a keepUpToDate answer ends with the bar still forming; after the close
    (a reconnect in the evening) that bar is the session's last, and final."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from ib_async import BarData, BarDataList

    from sim.clock import ManualClock

    actor, _ = conn
    close = datetime(2026, 11, 20, 21, 0, tzinfo=UTC)
    actor.clock = ManualClock(close + timedelta(seconds=seconds_after_close))
    answer = BarDataList()
    answer += [
        BarData(date=close - timedelta(minutes=n), open=1, high=2, low=0.5, close=1.5, volume=9)
        for n in (3, 2, 1)
    ]

    class StreamIB(HistoryIB):
        async def reqHistoricalDataAsync(self, contract, **kw):  # noqa: N802
            return answer

    actor.ib = StreamIB()
    reply = FakeRef()
    msg = m.StreamBars(symbol="SPY", bar_size="1 min", duration="2 D", reply_to=reply)

    async def run():
        actor.hist_slots = asyncio.Semaphore(50)
        await actor._history(msg, 0.0, stream=True)

    asyncio.run(run())
    got = [b.time.strftime("%H:%M") for b in reply.last(m.BarsBackfilled).bars]
    assert got == delivered


def test_a_watch_waiting_for_a_line_is_dropped_when_unwatched(conn):
    """All quote lines are taken; a watch waits; its unwatch comes first: when a line frees,
    the watch gives it back instead of subscribing quotes nobody wants."""
    import asyncio

    actor, _ = conn
    contract = m.OptionContract("SPY", "20261123", 680, "C", con_id=4242)

    class QuoteIB(FakeIB):
        def __init__(self):
            self.subscribed = []

        def reqMktData(self, contract, *args):  # noqa: N802
            self.subscribed.append(contract.conId)

    actor.ib = QuoteIB()

    async def run():
        actor.lines = asyncio.Semaphore(1)
        await actor.lines.acquire()  # every line in use
        waiting = asyncio.create_task(actor._watch(m.WatchQuotes(contract=contract, reply_to=None)))
        await asyncio.sleep(0.01)
        await actor._stop_watching(contract.con_id)
        actor.lines.release()  # a line frees
        await waiting
        return actor.lines.locked()

    assert asyncio.run(run()) is False  # the line was given back
    assert actor.ib.subscribed == [] and actor.quote_lines == {}

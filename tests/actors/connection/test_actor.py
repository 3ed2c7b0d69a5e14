"""ConnectionActor's decisions, with handlers called directly: no socket, no event loop."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import FakeRef

from actors import messages as m
from actors.connection import ConnectionActor, backoff_delay
from actors.connection.session import _ConnectResult, _IbError
from machines.connection import connection_machine
from storage import MachineStateRepo, open_db


@pytest.fixture
def conn(make_settings, metrics):
    settings = make_settings(symbols=["SPY", "QQQ"], broker={"client_id": 17, "client_id_pool": 3})
    actor = ConnectionActor(settings, metrics, clock=None, port=4002)
    actor.db = open_db(settings.storage.path)
    actor.states = MachineStateRepo(actor.db)
    connection_machine(actor.model)
    listener = FakeRef("listener")
    actor.listeners.append(listener)
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
    spawned = []
    actor._spawn = lambda coro: (spawned.append(coro.__qualname__), coro.close())
    for code in codes:
        actor.on_IbError(_IbError(req_id=7, code=code, text="not subscribed"))
    assert spawned == ["Session.use_market_data_type"] * switched
    assert actor.market_data_type == (3 if switched else 1)
    assert (
        metrics.registry.get_sample_value("optionsbot_market_data_type") == actor.market_data_type
    )


def test_a_timeout_is_rechecked_so_a_quiet_service_does_not_stay_degraded(conn):
    """One slow snapshot degraded the connection, and only another timed request could recover
    it; while degraded no entry starts, and entries were the only such requests: the service
    stayed out of the market for good (bench.latency at 10 symbols: 0 entries). The actor now
    asks the Gateway again after a moment: an answer recovers, a timeout counts as any other."""
    from support import SESSION_TIME

    from actors.connection.actor import _Recheck
    from actors.connection.session import _RequestDone
    from sim.clock import ManualClock

    actor, listener = conn
    # A market-hours clock: by the wall clock the test could run inside the Gateway's nightly
    # reset, when failures are expected and never open the breaker (CI ran into it at 23:45 ET).
    actor.clock = ManualClock(SESSION_TIME)
    connected(actor)
    actor.stopping = False
    timers, spawned = [], []
    actor.session.later = lambda delay, msg: timers.append((delay, msg))

    def spawn(coro):
        spawned.append(coro.__qualname__)
        coro.close()

    actor._spawn = spawn
    timeout = _RequestDone(kind="snapshot", ok=False, seconds=12.0, timed_out=True)
    actor.on_RequestDone(timeout)
    assert actor.model.state == "degraded" and not actor.model.may_trade
    assert [(d, type(msg)) for d, msg in timers] == [(actor.recheck_s, _Recheck)]
    actor.on_RequestDone(timeout)  # a second one while the recheck is due: still one timer
    assert len(timers) == 1
    actor.on_Recheck(_Recheck())
    assert spawned == ["Session.recheck"]
    actor.on_RequestDone(_RequestDone(kind="probe", ok=True, seconds=0.1))
    assert actor.model.state == "connected" and listener.last(m.ConnectionChanged).may_trade
    # A Gateway that keeps not answering: rechecked each time, then the breaker.
    for _ in range(3):
        actor.on_RequestDone(_RequestDone(kind="probe", ok=False, seconds=5.0, timed_out=True))
        if actor.model.state == "degraded":
            actor.on_Recheck(_Recheck())
    assert actor.model.state == "breaker_open"
    # The first recheck, then one after each of the two degraded timeouts (then the cooldown).
    assert [type(msg) for _, msg in timers].count(_Recheck) == 3


def test_no_recheck_for_a_degradation_that_is_not_a_timeout(conn):
    from actors.connection.session import _RequestDone

    actor, _ = conn
    connected(actor)
    actor.stopping = False
    timers = []
    actor.session.later = lambda delay, msg: timers.append((delay, msg))
    actor.on_IbError(_IbError(req_id=-1, code=1100, text="lost"))
    actor.on_RequestDone(_RequestDone(kind="contract_details", ok=False, seconds=0.1, cause="x"))
    assert actor.model.state == "degraded" and timers == []

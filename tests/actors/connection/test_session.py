"""The session: the only door from the actor thread to the loop, and back only by message."""

import asyncio
import threading

import pytest
from support import FakeRef

from actors import messages as m
from actors.connection.session import Session, Target, _ConnectResult, _Dialing


class Inbox(FakeRef):
    """A FakeRef that can be waited on from another thread."""

    def __init__(self, name="actor"):
        super().__init__(name)
        self.arrived = threading.Event()

    def tell(self, msg):
        super().tell(msg)
        self.arrived.set()


class SocketIB:
    """Just enough of ib_async.IB to say whether the socket is open and record requests."""

    def __init__(self, connected):
        self.connected = connected
        self.calls = []

    def isConnected(self):  # noqa: N802 - ib_async's name
        return self.connected

    def reqMarketDataType(self, kind):  # noqa: N802
        self.calls.append(("reqMarketDataType", kind))

    async def reqCurrentTimeAsync(self):  # noqa: N802
        self.calls.append(("reqCurrentTime",))
        return None

    async def connectAsync(self, host, port, **kw):  # noqa: N802
        self.calls.append(("connect", host, port, kw["clientId"]))
        self.connected = True

    errorEvent = None  # noqa: N815


@pytest.fixture
def session(make_settings, metrics):
    return Session(make_settings(), metrics, None, actor=Inbox())


@pytest.mark.parametrize("connected", [True, False])
def test_a_request_is_refused_on_the_loop_when_the_socket_closed_after_the_actor_said_go(
    session, connected
):
    """The actor knows the machine, the loop the socket: a request the machine allowed still
    meets a socket that closed meanwhile, and is refused with the actor's reason."""
    session.ib = SocketIB(connected)
    refused, ran = [], []

    async def work():
        ran.append(True)

    asyncio.run(session.guarded("not connected (connection connected)", refused.append, work))
    assert (ran, refused) == (
        ([True], []) if connected else ([], ["not connected (connection connected)"])
    )


def test_a_half_open_probe_over_an_open_socket_is_one_request_not_a_new_connection(session):
    session.ib = SocketIB(connected=True)
    asyncio.run(session.attempt(True, Target("h", 1, 7)))
    assert session.ib.calls == [("reqCurrentTime",)]
    assert [type(t) for t in session.actor.told] == [_ConnectResult]
    assert session.actor.last(_ConnectResult).probe and session.actor.last(_ConnectResult).ok


def test_a_connect_counts_as_an_attempt_before_its_result_and_uses_the_actors_client_id(
    session,
):
    from ib_async import Event

    session.ib = SocketIB(connected=False)
    session.ib.errorEvent = Event("errorEvent")
    asyncio.run(session.attempt(False, Target("gw", 4002, 19)))
    assert session.ib.calls == [("connect", "gw", 4002, 19)]
    assert [type(t) for t in session.actor.told] == [_Dialing, _ConnectResult]


def test_the_market_data_type_changes_by_message_and_every_later_connect_asks_for_it(session):
    from ib_async import Event

    session.ib = SocketIB(connected=False)
    session.ib.errorEvent = Event("errorEvent")
    asyncio.run(session.use_market_data_type(3))
    assert session.ib.calls == []  # no socket: nothing to send now
    asyncio.run(session.attempt(False, Target("gw", 4002, 19)))
    assert ("reqMarketDataType", 3) in session.ib.calls


def test_timers_fire_on_the_loop_and_none_after_the_close(session):
    session.start()
    try:
        session.later(0.01, _Dialing())
        assert session.actor.arrived.wait(5), "the timer never fired"
        session.actor.told.clear()
        session.actor.arrived.clear()
        session.later(0.3, _Dialing())
        session.call(session.close(0.0), timeout=5)
        assert not session.actor.arrived.wait(0.6), "a timer fired after the close"
        assert session.timers == set()
    finally:
        session.call(session.cancel_tasks(), timeout=5)
        session.stop()


def test_order_listeners_are_added_on_the_loop_and_hear_the_loops_events(session):
    """The listeners are read by ib_async's events on the loop: they are added there too."""
    session.start()
    try:
        listener = FakeRef("orders")
        session.call(session.broker.subscribe(("orders",), listener), timeout=5)

        class Report:
            execId, commission = "e1", 1.25

        session.call(_on_loop(lambda: session.broker._on_commission(None, None, Report())))
        assert listener.last(m.BrokerCommission).commission == 1.25
    finally:
        session.call(session.cancel_tasks(), timeout=5)
        session.stop()


async def _on_loop(fn):
    fn()


class QualifyIB:
    """Qualifies stocks after the test lets it, counting the requests."""

    def __init__(self, answer=756733):
        self.asked = []
        self.answer = answer
        self.release = None

    async def qualifyContractsAsync(self, contract):  # noqa: N802 - ib_async's name
        self.asked.append(contract.symbol)
        await self.release.wait()
        if self.answer is None:
            return [None]
        contract.conId = self.answer
        return [contract]


@pytest.mark.parametrize("callers", [2, 3, 7])
def test_a_stock_asked_for_twice_at_once_is_qualified_once(session, callers):
    """At a cold start a symbol's 1-minute and 1-hour history ask for its stock together: one
    contract-details request answers both (a second one cost a message and a round trip)."""
    ib = session.ib = QualifyIB()

    async def run():
        ib.release = asyncio.Event()
        calls = [asyncio.ensure_future(session.stock("SPY")) for _ in range(callers)]
        await asyncio.sleep(0)
        ib.release.set()
        return await asyncio.gather(*calls)

    got = asyncio.run(run())
    assert ib.asked == ["SPY"]
    assert {c.conId for c in got} == {756733}


def test_a_failed_qualification_fails_every_waiter_and_the_next_call_asks_again(session):
    ib = session.ib = QualifyIB(answer=None)

    async def run():
        ib.release = asyncio.Event()
        calls = [asyncio.ensure_future(session.stock("SPYY")) for _ in range(2)]
        await asyncio.sleep(0)
        ib.release.set()
        return await asyncio.gather(*calls, return_exceptions=True)

    got = asyncio.run(run())
    assert all(isinstance(g, LookupError) and "SPYY" in str(g) for g in got), got
    assert ib.asked == ["SPYY"]
    ib.answer = 1
    assert asyncio.run(run())[0].conId == 1
    assert ib.asked == ["SPYY", "SPYY"]


def _slow_answer(seconds):
    async def answer():
        await asyncio.sleep(seconds)
        return "answer"

    return answer()


def test_a_request_queued_behind_our_own_gate_is_timed_from_when_it_leaves(session):
    """A cold start queues hundreds of requests in the message gate; the last ones wait there
    for seconds. That wait is ours: counted against the Gateway, it opened the breaker."""
    from actors.connection.session import _RequestDone
    from actors.pacing import MessageGate

    session.gate = MessageGate(rate=20, burst=1)

    async def run():
        now = asyncio.get_running_loop().time()
        session.gate.take(now)
        for i in range(9):  # 8 wait, after one that takes the bucket's token: ~0.45 s
            session.gate.offer(f"20\0{i}\0", now)
        session.gate.offer("20\0x\0", now)
        return await session.timed("historical", _slow_answer(0.35), timeout=0.2)

    assert asyncio.run(run()) == "answer"
    done = session.actor.last(_RequestDone)
    assert done.ok and not done.timed_out


def test_a_request_unanswered_after_error_100_is_not_held_against_the_gateway(session):
    """The Gateway drops what it counts over the rate and answers none of it: a request in
    flight then times out, and that says nothing about the connection. One that times out with
    no error 100 since it started still counts (the breaker's evidence)."""
    import time as _time

    from actors.connection.session import _RequestDone

    async def run(violation):
        async def answer():
            if violation:
                session._on_error(-1, 100, "Max rate of messages per second has been exceeded")
            await asyncio.sleep(1)

        with pytest.raises(TimeoutError):
            await session.timed("historical", answer(), timeout=0.05)

    session._on_error(-1, 100, "an old one, before the request")
    session.rate_violation_at -= 1.0
    asyncio.run(run(violation=False))
    counted = session.actor.last(_RequestDone)
    assert counted.timed_out and not counted.ok
    asyncio.run(run(violation=True))
    excused = session.actor.last(_RequestDone)
    assert not excused.timed_out and not excused.ok and "error 100" in excused.cause
    assert session.rate_violation_at <= _time.monotonic()

"""The real ConnectionActor (pykka, its own ib_async loop) against the simulator over TCP."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from actors import messages as m
from actors.clock import WallClock
from actors.connection import ConnectionActor
from actors.metrics import Metrics, new_registry
from sim.config import PacingOptions, SimOptions


class Inbox:
    def __init__(self):
        self.got: list = []

    def tell(self, msg) -> None:
        self.got.append(msg)

    def wait(self, kind: type, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [g for g in self.got if isinstance(g, kind)]
            if found:
                return found[-1]
            time.sleep(0.02)
        raise AssertionError(f"no {kind.__name__} in {timeout}s; got {self.got}")


@pytest.fixture
def actor(make_sim, make_settings):
    sim = make_sim(
        SimOptions(
            seed=7, pacing=PacingOptions(max_open_historical=1, open_historical_overflow="fail")
        ),
        real_time=True,
    )
    settings = make_settings(broker={"timeouts_s": {"historical": 1.0}, "clock": "wall"})
    ref = ConnectionActor.start(settings, Metrics(new_registry()), WallClock(), port=sim.port)
    deadline = time.monotonic() + 10
    while ref.proxy().model.get().state != "connected":
        assert time.monotonic() < deadline, "never connected"
        time.sleep(0.05)
    yield ref, sim
    ref.stop()


def test_a_timed_out_history_request_is_cancelled_at_the_gateway(actor):
    """A stalled request that only timed out here would hold the Gateway's open-request slot
    for good; the next request would fail (here the Gateway allows one open request)."""
    ref, sim = actor
    stall = sim.faults.add("history_stall", symbol="SPY")
    first = Inbox()
    ref.tell(m.FetchBars(symbol="SPY", bar_size="1 min", duration="1800 S", reply_to=first))
    assert first.wait(m.StreamFailed, timeout=6).reason.startswith("timed out")
    sim.faults.remove(stall)
    second = Inbox()
    ref.tell(m.FetchBars(symbol="QQQ", bar_size="1 min", duration="1800 S", reply_to=second))
    got = second.wait(m.BarsBackfilled, timeout=6)
    assert got.symbol == "QQQ" and len(got.bars) >= 25
    assert sim.violations == {}


def _atm_contracts(ref, sim) -> tuple:
    inbox = Inbox()
    ref.tell(m.FetchChain(symbol="SPY", reply_to=inbox))
    got = inbox.wait(m.ChainFetched)
    assert got.chain is not None, got.reason
    # The chain's strikes are the union over its expiries (ChainFetched carries no spot): the ones
    # nearest the stock are listed for every near expiry.
    spot = sim.market.last_price("SPY", sim.clock.now())
    strikes = sorted(got.chain.strikes, key=lambda k: abs(k - spot))[:3]
    return tuple(m.OptionContract("SPY", got.chain.expirations[2], k, "C") for k in strikes)


def _quotes(ref, contracts) -> m.QuotesFetched:
    inbox = Inbox()
    ref.tell(m.FetchQuotes(contracts=contracts, reply_to=inbox))
    return inbox.wait(m.QuotesFetched, timeout=15)


def test_a_quote_that_never_changes_has_no_known_age_and_a_moving_one_is_fresh(actor):
    """The simulated market stands still (a manual clock): its quotes are as frozen as a stalled
    feed's, and arrive just as fresh. Only a change seen on the wire proves one alive."""
    ref, sim = actor
    contracts = _atm_contracts(ref, sim)
    frozen = _quotes(ref, contracts)
    assert len(frozen.quotes) == 3 and frozen.missing == ()
    assert [q.age_known for q in frozen.quotes] == [False] * 3

    # The market moves while the service looks again (every 0.2 s, so a line that opens late
    # on a loaded machine still sees a change after its first values): the line reports it.
    stop = threading.Event()

    def move():
        while not stop.wait(0.2):
            sim.clock.advance(timedelta(minutes=1))

    mover = threading.Thread(target=move, daemon=True)
    mover.start()
    try:
        moving = _quotes(ref, contracts)
    finally:
        stop.set()
        mover.join()
    assert [q.age_known for q in moving.quotes] == [True] * 3
    now = WallClock().now()
    assert all((now - q.time).total_seconds() < 5 for q in moving.quotes)
    assert sim.call(lambda: sum(len(s.mkt_subs) for s in sim.server.sessions)) == 0, (
        "the lines opened to look again were left open"
    )


def test_the_weekly_relogin_never_trips_the_breaker_and_is_said_once(
    make_sim, make_settings, caplog
):
    """The Gateway at its Sunday login dialog drops every client and refuses connections for
    hours (sim fault reauth_required). Inside the configured window that is expected: however
    many connects fail, the breaker stays shut, the refusal is logged once, and the gauge the
    alerts read says so. The same failures outside a window open the breaker at the threshold."""
    sim = make_sim(SimOptions(seed=7), real_time=True)
    ny = ZoneInfo("America/New_York")
    start = (datetime.now(ny) - timedelta(minutes=1)).strftime("%H:%M")
    window = {"name": "weekly_reauth", "start": start, "minutes": 30}
    settings = make_settings(
        broker={
            "clock": "wall",
            "breaker_threshold": 2,
            "connect_timeout_s": 1.0,
            "routines": [window],
        }
    )
    metrics = Metrics(new_registry())
    caplog.set_level(logging.INFO, logger="optionsbot.connection")
    ref = ConnectionActor.start(settings, metrics, WallClock(), port=sim.port)
    try:
        failed = metrics.connection_transitions.labels("connect_failed", "disconnected")
        deadline = time.monotonic() + 10
        while ref.proxy().model.get().state != "connected":
            assert time.monotonic() < deadline, "never connected"
            time.sleep(0.05)
        sim.faults.add("reauth_required", at="+1m", duration="4h")
        sim.clock.advance(timedelta(minutes=1))
        deadline = time.monotonic() + 30
        while failed._value.get() < 3:  # more than the breaker's threshold of 2
            assert time.monotonic() < deadline, "fewer than 3 refused connects in 30s"
            time.sleep(0.05)
        assert metrics.breaker_trips._value.get() == 0
        assert ref.proxy().model.get().state in ("disconnected", "connecting")
        said = [r for r in caplog.records if "during the Gateway's weekly_reauth" in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.WARNING
        assert metrics.gateway_routine.labels("weekly_reauth")._value.get() == 1
    finally:
        ref.stop()


class TimedInbox(Inbox):
    """Records the simulated time each message arrived at."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock
        self.at: list = []

    def tell(self, msg) -> None:
        self.at.append((self.clock.now(), msg))
        super().tell(msg)


def test_a_streamed_bar_is_known_closed_within_a_second_of_its_end(make_settings):
    """keepUpToDate says a bar closed only with the next bar's first update, 4 to 6 s later
    at IB; the service closes it at its end. The simulator's updates come every 5 s here,
    starting 2 s after each minute (the stream opens at :52), so the old behaviour is ~2 s
    late on every bar."""
    from datetime import UTC, datetime

    from sim.clock import ScaledClock
    from sim.runner import EmbeddedSim

    start = datetime(2026, 11, 20, 15, 0, 52, tzinfo=UTC)  # 10:00:52 New York
    clock = ScaledClock(start, scale=10.0)
    with EmbeddedSim(SimOptions(seed=7, bar_update_interval=5.0), clock=clock) as sim:
        settings = make_settings(symbols=["SPY"], broker={"clock": "wall"})
        ref = ConnectionActor.start(settings, Metrics(new_registry()), clock, port=sim.port)
        try:
            deadline = time.monotonic() + 10
            while ref.proxy().model.get().state != "connected":
                assert time.monotonic() < deadline, "never connected"
                time.sleep(0.05)
            inbox = TimedInbox(clock)
            ref.tell(
                m.StreamBars(symbol="SPY", bar_size="1 min", duration="1800 S", reply_to=inbox)
            )
            deadline = time.monotonic() + 30
            while len([g for g in inbox.got if isinstance(g, m.BarStreamed)]) < 2:
                assert time.monotonic() < deadline, f"two bars never streamed: {inbox.got}"
                time.sleep(0.02)
        finally:
            ref.stop()
        late = [
            (at - (msg.bar.time + timedelta(minutes=1))).total_seconds()
            for at, msg in inbox.at
            if isinstance(msg, m.BarStreamed)
        ]
        assert all(0 <= s <= 1.0 for s in late), late
        bars = [msg.bar for _, msg in inbox.at if isinstance(msg, m.BarStreamed)]
        # Each bar once, in order: the stream's own final version later is not a second bar.
        assert [b.time for b in bars] == sorted({b.time for b in bars})
        # The bar closed at its end is the simulator's bar (its updates cover the minute).
        first = sim.market.bars("SPY", bars[0].time, bars[0].time + timedelta(minutes=1), 60)[0]
        assert bars[0].open == first.open and bars[0].high <= first.high + 1e-9


def test_real_time_bars_make_whole_minutes_known_at_their_end_after_the_history(make_settings):
    """data.stream realtime: 5-second bars (a market data line, not an open historical
    request) aggregated to minutes; the history comes first, each minute when its last
    5-second bar arrives, and equals the simulator's own minute."""
    from datetime import UTC, datetime

    from sim.clock import ScaledClock
    from sim.runner import EmbeddedSim

    start = datetime(2026, 11, 20, 15, 0, 40, tzinfo=UTC)
    clock = ScaledClock(start, scale=10.0)
    with EmbeddedSim(SimOptions(seed=7), clock=clock) as sim:
        settings = make_settings(symbols=["SPY"], broker={"clock": "wall"})
        ref = ConnectionActor.start(settings, Metrics(new_registry()), clock, port=sim.port)
        try:
            deadline = time.monotonic() + 10
            while ref.proxy().model.get().state != "connected":
                assert time.monotonic() < deadline, "never connected"
                time.sleep(0.05)
            inbox = TimedInbox(clock)
            ref.tell(
                m.StreamBars(
                    symbol="SPY", bar_size="1 min", duration="1800 S", reply_to=inbox, realtime=True
                )
            )
            deadline = time.monotonic() + 30
            while len([g for g in inbox.got if isinstance(g, m.BarStreamed)]) < 2:
                assert time.monotonic() < deadline, f"two minutes never streamed: {inbox.got}"
                time.sleep(0.02)
            lines = sim.server._lines_in_use()
            open_hist = sim.server._open_historical()
        finally:
            ref.stop()
        kinds = [type(g).__name__ for _, g in inbox.at]
        assert kinds[0] == "BarsBackfilled" and set(kinds[1:]) == {"BarStreamed"}
        history = inbox.got[0].bars
        streamed = [(at, g.bar) for at, g in inbox.at if isinstance(g, m.BarStreamed)]
        # 15:00 was joined at :40, so it is history's to fill: the stream starts at 15:01.
        assert history[-1].time < streamed[0][1].time
        assert streamed[0][1].time == datetime(2026, 11, 20, 15, 1, tzinfo=UTC)
        for at, bar in streamed:
            end = bar.time + timedelta(minutes=1)
            assert timedelta(0) <= at - end <= timedelta(seconds=1), (at, end)
            own = sim.market.bars("SPY", bar.time, end, 60)[0]
            assert (bar.open, bar.high, bar.low, bar.close) == (
                own.open,
                own.high,
                own.low,
                own.close,
            )
        assert (lines, open_hist) == (1, 0)
        assert sim.violations == {}


def test_a_message_rate_violation_drops_requests_without_opening_the_breaker(
    make_sim, make_settings
):
    """A bad day at the Gateway: it counts more than its limit (here 25 a second, under the
    gate's 45 + 4 but above its half rate; a real Gateway reading late and bunched does the
    same at 50) and drops what came over it. The dropped requests time out, but they say
    nothing about the connection: the
    breaker stays shut, the session survives (the gate backs off before a third violation),
    every requester gets an answer, and the next request is served."""
    from actors.pacing import CLASS_NAMES
    from bench.soak import NAMES

    names = tuple(NAMES[:30])
    sim = make_sim(
        SimOptions(seed=7, symbols=names, pacing=PacingOptions(max_messages_per_second=25)),
        real_time=True,
    )
    settings = make_settings(
        symbols=list(names),
        broker={
            # Short, so that the dropped history requests answer soon (contract details keep
            # their 30 s: the simulator answers a burst of them slowly, not dropped).
            "timeouts_s": {"historical": 1.5},
            "clock": "wall",
            "breaker_threshold": 3,
        },
    )
    metrics = Metrics(new_registry())
    ref = ConnectionActor.start(settings, metrics, WallClock(), port=sim.port)
    try:
        deadline = time.monotonic() + 10
        while ref.proxy().model.get().state != "connected":
            assert time.monotonic() < deadline, "never connected"
            time.sleep(0.05)
        time.sleep(1.0)  # the start-up's messages out of the Gateway's window
        inboxes = {}
        for name in names:
            inboxes[name] = Inbox()
            ref.tell(
                m.FetchBars(
                    symbol=name, bar_size="1 min", duration="1800 S", reply_to=inboxes[name]
                )
            )
        states = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
            any(isinstance(g, m.BarsBackfilled | m.StreamFailed) for g in i.got)
            for i in inboxes.values()
        ):
            states.add(ref.proxy().model.get().state)
            time.sleep(0.02)
        states.add(ref.proxy().model.get().state)
        assert sim.violations.get("message_rate", 0) >= 1, "the Gateway never counted too many"
        assert "message_rate_disconnect" not in sim.violations
        assert "breaker_open" not in states, states
        unanswered = [n for n, i in inboxes.items() if not i.got]
        assert unanswered == [], f"no answer for {unanswered}"
        # At half rate the gate still drains the burst for seconds: ask once it is empty (a
        # timeout this short would otherwise be spent in our own queue behind the bars).
        deadline = time.monotonic() + 30
        while any(metrics.send_queue_depth.labels(c)._value.get() for c in CLASS_NAMES):
            assert time.monotonic() < deadline, "the message gate never emptied"
            time.sleep(0.05)
        after = Inbox()
        ref.tell(m.FetchBars(symbol="SPY", bar_size="1 min", duration="900 S", reply_to=after))
        assert after.wait(m.BarsBackfilled, timeout=30).bars
    finally:
        ref.stop()


def test_a_real_time_subscription_dropped_with_an_error_100_is_asked_again(make_settings):
    """The Gateway drops what arrives in a violation's second, and answers nothing for it: a
    real-time bar subscription sent then would stay silent (and hold its line) until the stale
    check, minutes later. Here 16 messages from elsewhere on the connection (ungated) trip a
    limit of 15 just before the subscription goes: it is dropped, asked again once its first
    bar is overdue while other streams bring bars, and its minutes then stream."""
    import asyncio
    from datetime import UTC

    from sim.clock import ScaledClock
    from sim.runner import EmbeddedSim

    start = datetime(2026, 11, 20, 15, 0, 40, tzinfo=UTC)
    clock = ScaledClock(start, scale=10.0)
    options = SimOptions(seed=7, pacing=PacingOptions(max_messages_per_second=15))
    with EmbeddedSim(options, clock=clock) as sim:
        settings = make_settings(
            symbols=["SPY", "QQQ"], broker={"clock": "wall", "timeouts_s": {"historical": 2}}
        )
        metrics = Metrics(new_registry())
        ref = ConnectionActor.start(settings, metrics, clock, port=sim.port)
        try:
            deadline = time.monotonic() + 10
            while ref.proxy().model.get().state != "connected":
                assert time.monotonic() < deadline, "never connected"
                time.sleep(0.05)
            alive, dropped = Inbox(), Inbox()
            ref.tell(
                m.StreamBars(
                    symbol="QQQ", bar_size="1 min", duration="600 S", reply_to=alive, realtime=True
                )
            )
            alive.wait(m.BarsBackfilled, timeout=15)
            # SPY's stock contract known first: the subscription then goes without a round trip.
            first = Inbox()
            ref.tell(m.FetchBars(symbol="SPY", bar_size="1 min", duration="600 S", reply_to=first))
            first.wait(m.BarsBackfilled, timeout=15)
            time.sleep(1.5)  # a fresh window at the Gateway
            session = ref.proxy().session.get()

            async def trip_then_subscribe() -> None:
                client = session.ib.client
                for _ in range(16):  # reqCurrentTime, past the gate
                    client.conn.sendMsg(client._prefix(b"49\x001\x00"))
                msg = m.StreamBars(
                    symbol="SPY",
                    bar_size="1 min",
                    duration="600 S",
                    reply_to=dropped,
                    realtime=True,
                )
                await session.history.realtime(msg)

            asyncio.run_coroutine_threadsafe(trip_then_subscribe(), session.loop)
            deadline = time.monotonic() + 45
            while not any(isinstance(g, m.BarStreamed) for g in dropped.got):
                assert time.monotonic() < deadline, f"SPY never streamed: {dropped.got}"
                time.sleep(0.05)
            asked_again = metrics.realtime_resubscribed._value.get()
        finally:
            ref.stop()
        assert sim.violations.get("message_rate") == 1
        assert asked_again == 1
        assert any(isinstance(g, m.BarStreamed) for g in alive.got)

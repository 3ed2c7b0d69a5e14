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

    # The market moves while the service looks again: the line reports the change.
    mover = threading.Timer(0.3, lambda: sim.clock.advance(timedelta(minutes=5)))
    mover.start()
    try:
        moving = _quotes(ref, contracts)
    finally:
        mover.cancel()
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

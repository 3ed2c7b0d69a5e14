"""The real ConnectionActor (pykka, its own ib_async loop) against the simulator over TCP."""

from __future__ import annotations

import time

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

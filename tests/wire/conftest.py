"""Fixtures for the wire tests: an embedded simulator and real ib_async clients connected to it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Plain `pytest` (unlike `python -m pytest`) does not put the repo root on sys.path.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from ib_async import IB  # noqa: E402
from wirekit import START, FakeMonotonic  # noqa: E402

from sim.clock import ManualClock  # noqa: E402
from sim.config import SimOptions  # noqa: E402
from sim.runner import EmbeddedSim  # noqa: E402


@pytest.fixture
def sim() -> Iterator[EmbeddedSim]:
    with EmbeddedSim(SimOptions(seed=7), clock=ManualClock(START)) as s:
        yield s


@pytest.fixture
def connect(sim: EmbeddedSim) -> Iterator[Callable[..., IB]]:
    clients: list[IB] = []

    def _connect(
        client_id: int = 1, target: EmbeddedSim | None = None, timeout: float = 10, **kw
    ) -> IB:
        ib = IB()
        clients.append(ib)
        ib.connect("127.0.0.1", (target or sim).port, clientId=client_id, timeout=timeout, **kw)
        return ib

    yield _connect
    for ib in clients:
        ib.disconnect()


@pytest.fixture
def mono() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def make_sim(mono: FakeMonotonic) -> Iterator[Callable[..., EmbeddedSim]]:
    """Simulators with their own options, a ManualClock at START and the test's fake monotonic clock."""
    started: list[EmbeddedSim] = []

    def _make(options: SimOptions | None = None, real_time: bool = False, **kw) -> EmbeddedSim:
        opts = options or SimOptions(seed=7, **kw)
        s = EmbeddedSim(opts, clock=ManualClock(START), monotonic=None if real_time else mono)
        s.start()
        started.append(s)
        return s

    yield _make
    for s in started:
        s.stop()


class _DecodeFailures(logging.Handler):
    """Collects client-side log records that mean the simulator sent something the client could not use."""

    BAD = (
        "Error handling fields",
        "Error for ",
        "Unknown reqId",
        "No order found",
        "Unknown orderId",
    )

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.name.endswith("Decoder") or any(b in text for b in self.BAD):
            self.records.append(f"{record.name}: {text[:300]}")


@pytest.fixture(autouse=True)
def no_client_decode_errors() -> Iterator[None]:
    # The clients' decoders swallow exceptions and only log them, so a bad message would pass silently.
    handler = _DecodeFailures()
    loggers = [logging.getLogger(n) for n in ("ib_async", "ib_insync")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    assert not handler.records, "client could not handle simulator output:\n" + "\n".join(
        handler.records
    )

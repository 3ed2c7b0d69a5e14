"""Constants and waiting helpers shared by the wire tests (a uniquely named module, unlike conftest)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from ib_async import IB

from sim.runner import EmbeddedSim

# Friday 2026-11-20, 10:00 US/Eastern: half an hour into a regular XNYS session.
START = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
SESSION_OPEN = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


def wait_until(
    ib: IB, cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Run the client's event loop until cond() holds, failing after `timeout` real seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        ib.waitOnUpdate(timeout=min(remaining, 0.1))


def wait_steps(ib: IB, sim: EmbeddedSim, n: int = 2, timeout: float = 5.0) -> None:
    """Let the simulator run at least `n` more simulation steps."""
    target = sim.stats["steps"] + n
    wait_until(ib, lambda: sim.stats["steps"] >= target, timeout, f"{n} simulation steps")


class FakeMonotonic:
    """A settable stand-in for time.monotonic, for the simulator's real-time pacing and fault windows."""

    def __init__(self, value: float = 1000.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


class Errors:
    """Every (reqId, code, message) an ib_async client reports through errorEvent."""

    def __init__(self, ib: IB) -> None:
        self.seen: list[tuple[int, int, str]] = []
        ib.errorEvent += self._on_error

    def _on_error(self, req_id: int, code: int, msg: str, contract: object) -> None:
        self.seen.append((req_id, code, msg))

    def codes(self) -> list[int]:
        return [code for _, code, _ in self.seen]

    def of(self, code: int) -> list[tuple[int, int, str]]:
        return [e for e in self.seen if e[1] == code]


def settle(ib: IB, seconds: float = 0.3) -> None:
    """Run the client's loop for a bounded real time, to show that something does not happen."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        ib.waitOnUpdate(timeout=min(remaining, 0.05))


def wait_dropped(ib: IB, timeout: float = 5.0) -> None:
    """Wait until the server closes the client's socket (ib_async raises ConnectionError mid-wait)."""
    deadline = time.monotonic() + timeout
    while ib.isConnected():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"still connected after {timeout}s")
        try:
            ib.waitOnUpdate(timeout=min(remaining, 0.1))
        except ConnectionError:
            pass


def isin_valid(isin: str) -> bool:
    """ISO 6166 check, written apart from the simulator's: letters to 10..35, Luhn over the digits."""
    if len(isin) != 12 or not isin[:2].isalpha() or not isin.isalnum():
        return False
    digits = "".join(str(int(c, 36)) for c in isin.upper())
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d // 10 + d % 10
    return total % 10 == 0

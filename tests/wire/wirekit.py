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

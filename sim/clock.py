"""Simulated clocks: a scaled real-time clock for the simulator and a manual clock for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What the simulator needs from a clock."""

    def now(self) -> datetime: ...


def _require_aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")
    return value.astimezone(UTC)


class ScaledClock:
    """Simulated time running `scale` times faster than real time, starting at `start`."""

    def __init__(
        self,
        start: datetime,
        scale: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._start = _require_aware(start, "start")
        scale = float(scale)
        # A non-positive scale would freeze or reverse time, which no caller can cope with.
        if not scale > 0.0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        self._scale = scale
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._t0 = monotonic()
        self._offset = timedelta(0)

    @property
    def scale(self) -> float:
        return self._scale

    def _now_locked(self) -> datetime:
        elapsed = (self._monotonic() - self._t0) * self._scale
        return self._start + timedelta(seconds=elapsed) + self._offset

    def now(self) -> datetime:
        # The lock keeps a concurrent jump from being half-applied to a reading.
        with self._lock:
            return self._now_locked()

    def jump(self, delta: timedelta) -> None:
        """Shift simulated time by `delta`; negative deltas are allowed so faults can step time back."""
        if not isinstance(delta, timedelta):
            raise TypeError(f"delta must be a timedelta, got {type(delta).__name__}")
        with self._lock:
            self._offset += delta

    def jump_to(self, t: datetime) -> None:
        """Move simulated time forward to `t`; a `t` at or before now is ignored."""
        target = _require_aware(t, "t")
        with self._lock:
            current = self._now_locked()
            if target > current:
                self._offset += target - current

    def real_seconds(self, sim: timedelta) -> float:
        return sim.total_seconds() / self._scale

    def __repr__(self) -> str:
        return f"ScaledClock(now={self.now().isoformat()}, scale={self._scale})"


class ManualClock:
    """A clock that only moves when told to; same `now()` contract as `ScaledClock`."""

    def __init__(self, start: datetime, scale: float = 1.0) -> None:
        self._now = _require_aware(start, "start")
        scale = float(scale)
        if not scale > 0.0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        self._scale = scale
        self._lock = threading.Lock()

    @property
    def scale(self) -> float:
        return self._scale

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, t: datetime) -> None:
        value = _require_aware(t, "t")
        with self._lock:
            self._now = value

    def advance(self, delta: timedelta) -> None:
        if not isinstance(delta, timedelta):
            raise TypeError(f"delta must be a timedelta, got {type(delta).__name__}")
        with self._lock:
            self._now += delta

    # Mirrors ScaledClock so either clock can drive the simulator.
    jump = advance

    def jump_to(self, t: datetime) -> None:
        target = _require_aware(t, "t")
        with self._lock:
            if target > self._now:
                self._now = target

    def real_seconds(self, sim: timedelta) -> float:
        return sim.total_seconds() / self._scale

    def __repr__(self) -> str:
        return f"ManualClock(now={self.now().isoformat()})"

"""The service's clocks: the wall clock, and one that follows the Gateway's time."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class WallClock:
    """The machine's clock."""

    scale = 1.0

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)


class GatewayClock:
    """Follows the Gateway's time: anchored to its reqCurrentTime at each (re)connect and
    periodically, advancing at `scale` between anchors (1.0 for a real Gateway).

    A Raspberry Pi's clock drifts, and a simulator runs faster than real time; the trading
    date, market hours and timeouts must come from the broker's clock, not ours. Until the
    first sync it reads the wall clock.
    """

    def __init__(self, scale: float = 1.0, monotonic=time.monotonic):
        self.scale = scale
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._anchor = datetime.now(UTC)
        self._anchor_mono = monotonic()
        self.synced = False

    def now(self) -> datetime:
        with self._lock:
            return self._anchor + timedelta(
                seconds=(self._monotonic() - self._anchor_mono) * self.scale
            )

    def sync(self, gateway_time: datetime) -> float:
        """Re-anchor; returns how far (seconds) our reading was from the Gateway's."""
        before = self.now()
        with self._lock:
            self._anchor = gateway_time.astimezone(UTC)
            self._anchor_mono = self._monotonic()
            self.synced = True
        return (before - gateway_time).total_seconds()

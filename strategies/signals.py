"""The signal a strategy emits for every bar: a direction (or HOLD), a confidence and its reasons."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

SIGNAL_KINDS = ("scalp", "whale")


class Direction(StrEnum):
    CALL = "call"
    PUT = "put"


@dataclass(frozen=True, slots=True)
class Signal:
    """What a strategy concluded from one bar; `direction` None means HOLD."""

    kind: str
    symbol: str
    direction: Direction | None
    confidence: float
    reasons: tuple[str, ...]
    bar_time: datetime
    price: float

    def __post_init__(self) -> None:
        if self.kind not in SIGNAL_KINDS:
            raise ValueError(f"signal kind must be one of {SIGNAL_KINDS}, got {self.kind!r}")
        if not (0.0 <= self.confidence <= 1.0):
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence!r}")

    @property
    def is_hold(self) -> bool:
        return self.direction is None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready view for the signal journal (times as ISO 8601, NaN price as None)."""
        return {
            "kind": self.kind,
            "symbol": self.symbol,
            "direction": None if self.direction is None else self.direction.value,
            "confidence": self.confidence,
            "reasons": list(self.reasons),
            "bar_time": self.bar_time.isoformat(),
            "price": self.price if math.isfinite(self.price) else None,
        }


def hold(kind: str, symbol: str, bar_time: datetime, price: float, *reasons: str) -> Signal:
    return Signal(kind, symbol, None, 0.0, tuple(reasons), bar_time, price)


def clip01(x: float) -> float:
    if not math.isfinite(x):
        return 0.0
    return min(1.0, max(0.0, x))

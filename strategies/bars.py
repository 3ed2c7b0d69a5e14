"""The bar type every strategy consumes and the check that decides whether a bar is usable."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

BAR_PROBLEMS = (
    "naive_time",
    "nan_price",
    "non_positive_price",
    "nan_volume",
    "negative_volume",
    "high_below_low",
    "outside_range",
    "out_of_order",
    "duplicate",
)


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar; `time` is the bar START, tz-aware (UTC by convention)."""

    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def typical_price(self) -> float:
        return (self.high + self.low + self.close) / 3.0


def bar_problem(bar: Bar, previous: Bar | None) -> str | None:
    """Return a machine-readable reason why `bar` is unusable, or None when it is good.

    Reasons (checked in this order, first one wins): "naive_time", "nan_price" (any OHLC NaN
    or infinite), "non_positive_price", "nan_volume" (NaN or infinite volume),
    "negative_volume", "high_below_low", "outside_range" (open or close outside
    [low, high]), then, against `previous` (the last GOOD bar), "duplicate" (same start
    time) and "out_of_order" (earlier start time).
    """
    if bar.time.tzinfo is None or bar.time.utcoffset() is None:
        return "naive_time"
    prices = (bar.open, bar.high, bar.low, bar.close)
    if not all(math.isfinite(p) for p in prices):
        return "nan_price"
    if min(prices) <= 0.0:
        return "non_positive_price"
    if not math.isfinite(bar.volume):
        return "nan_volume"
    if bar.volume < 0.0:
        return "negative_volume"
    if bar.high < bar.low:
        return "high_below_low"
    if not (bar.low <= bar.open <= bar.high and bar.low <= bar.close <= bar.high):
        return "outside_range"
    # A naive `previous` cannot be ordered against an aware time; the caller only passes
    # bars that passed this check, so skipping is safer than raising inside an actor.
    if previous is not None and previous.time.utcoffset() is not None:
        if bar.time == previous.time:
            return "duplicate"
        if bar.time < previous.time:
            return "out_of_order"
    return None

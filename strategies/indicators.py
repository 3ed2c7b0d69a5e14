"""Incremental indicators (EMA, Wilder RSI, session VWAP), O(1) per update and matching TA-Lib."""

from __future__ import annotations

import math

from strategies.bars import Bar

# TA-Lib treats |x| < 1e-8 as zero (TA_IS_ZERO) when it divides by avg gain + avg loss.
_TA_ZERO = 1e-8


class EMA:
    """Exponential moving average with k = 2 / (period + 1), seeded like TA-Lib's EMA.

    The first value comes with the `period`-th input and is the SMA of the first `period`
    inputs; after that ema = (x - ema) * k + ema, the exact operation order of TA-Lib so the
    two agree to the last few ulps.

    Differences from TA-Lib: a NaN or infinite input is ignored (the state and the returned
    value stay as they were) where TA-Lib would propagate NaN forever; an incremental state
    cannot be recomputed, so one bad print must not poison it.
    """

    __slots__ = ("period", "_k", "_count", "_sum", "_value")

    def __init__(self, period: int) -> None:
        if int(period) != period or period < 1:
            raise ValueError(f"EMA period must be a positive integer, got {period!r}")
        self.period = int(period)
        self._k = 2.0 / (self.period + 1)
        self._count = 0
        self._sum = 0.0
        self._value: float | None = None

    def update(self, x: float) -> float | None:
        if not math.isfinite(x):
            return self._value
        self._count += 1
        if self._value is None:
            self._sum += x
            if self._count == self.period:
                self._value = self._sum / self.period
        else:
            self._value = (x - self._value) * self._k + self._value
        return self._value

    @property
    def value(self) -> float | None:
        return self._value

    @property
    def ready(self) -> bool:
        return self._value is not None

    @property
    def count(self) -> int:
        """Finite values seen so far."""
        return self._count


class RSI:
    """Wilder's RSI with TA-Lib's conventions (seeded averages, first value after period+1 closes).

    Average gain and loss start as the plain means of the first `period` changes and then
    follow avg = (avg * (period - 1) + change) / period, in TA-Lib's operation order.

    Differences from TA-Lib:
    - when avg gain + avg loss is zero (|sum| < 1e-8, TA-Lib's own zero test), i.e. a flat
      market, this returns 50.0 (neutral) where TA-Lib returns 0.0; 0 would read as
      "deeply oversold" and trigger a PUT on a market that did not move;
    - a NaN or infinite close is ignored (state and returned value unchanged) where TA-Lib
      propagates NaN.
    """

    __slots__ = ("period", "_prev", "_changes", "_gain", "_loss", "_value")

    def __init__(self, period: int = 14) -> None:
        if int(period) != period or period < 1:
            raise ValueError(f"RSI period must be a positive integer, got {period!r}")
        self.period = int(period)
        self._prev: float | None = None
        self._changes = 0
        self._gain = 0.0
        self._loss = 0.0
        self._value: float | None = None

    def update(self, close: float) -> float | None:
        if not math.isfinite(close):
            return self._value
        prev, self._prev = self._prev, close
        if prev is None:
            return None
        change = close - prev
        self._changes += 1
        p = self.period
        if self._changes <= p:
            if change < 0:
                self._loss -= change
            else:
                self._gain += change
            if self._changes < p:
                return None
            self._loss /= p
            self._gain /= p
        else:
            self._loss *= p - 1
            self._gain *= p - 1
            if change < 0:
                self._loss -= change
            else:
                self._gain += change
            self._loss /= p
            self._gain /= p
        total = self._gain + self._loss
        self._value = 50.0 if -_TA_ZERO < total < _TA_ZERO else 100.0 * (self._gain / total)
        return self._value

    @property
    def value(self) -> float | None:
        return self._value

    @property
    def ready(self) -> bool:
        return self._value is not None

    @property
    def avg_gain(self) -> float | None:
        return self._gain if self._value is not None else None

    @property
    def avg_loss(self) -> float | None:
        return self._loss if self._value is not None else None


class SessionVWAP:
    """Volume-weighted average of the typical price (h + l + c) / 3, reset when the session changes.

    `session_key` is any equality-comparable value (the caller passes the New York trading
    date); a key different from the previous one starts a new session. While the session's
    cumulative volume is zero the VWAP is undefined, so the current bar's typical price is
    returned. A bar with a non-finite typical price, or non-finite or negative volume, adds
    no weight (bars are expected to have passed `bar_problem`).
    TA-Lib has no VWAP, so there is no convention to differ from.
    """

    __slots__ = ("_key", "_pv", "_v", "_value", "_started")

    def __init__(self) -> None:
        self._key: object = None
        self._started = False
        self._pv = 0.0
        self._v = 0.0
        self._value: float | None = None

    def update(self, bar: Bar, session_key: object) -> float:
        if not self._started or session_key != self._key:
            self._key = session_key
            self._started = True
            self._pv = 0.0
            self._v = 0.0
            self._value = None
        typical = bar.typical_price
        if not math.isfinite(typical):
            return self._value if self._value is not None else typical
        volume = bar.volume
        if math.isfinite(volume) and volume > 0.0:
            self._pv += typical * volume
            self._v += volume
        self._value = self._pv / self._v if self._v > 0.0 else typical
        return self._value

    @property
    def value(self) -> float | None:
        return self._value

    @property
    def session_key(self) -> object:
        return self._key

    @property
    def cumulative_volume(self) -> float:
        return self._v

"""Spike bars: a bar whose move is implausible against recent bars is held as suspect, then
accepted if the next bar confirms its level or dropped if the next bar reverts.

A bad print reverts; a genuine gap (an open after news) persists. So a suspect bar is never
traded on: it is held until the next bar says which it was. Confirmed, it is delivered as
history (indicators see it, no signal is made from it); reverted, it is dropped and counted.
The ATR is over accepted bars only, so one spike never widens the yardstick for the next.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from strategies.bars import Bar

Outcome = Literal["accept", "hold", "confirm", "drop"]


@dataclass(frozen=True, slots=True)
class SpikeParams:
    # A bar is suspect when its true range exceeds atr_multiple x the mean true range of the
    # last atr_period accepted bars, or floor_pct of the previous close, whichever is larger.
    atr_multiple: float = 12.0
    atr_period: int = 14
    floor_pct: float = 0.005
    # Until atr_period true ranges are known, nothing under this move is suspect: the ATR of a
    # few bars is no yardstick, and a 10x print is still far beyond it.
    warmup_pct: float = 0.10

    def __post_init__(self) -> None:
        if not (math.isfinite(self.atr_multiple) and self.atr_multiple > 0):
            raise ValueError("atr_multiple must be a positive number")
        if self.atr_period < 1:
            raise ValueError("atr_period must be at least 1")
        if not (math.isfinite(self.floor_pct) and self.floor_pct > 0):
            raise ValueError("floor_pct must be a positive number")
        if not (math.isfinite(self.warmup_pct) and self.warmup_pct > 0):
            raise ValueError("warmup_pct must be a positive number")


def true_range(bar: Bar, prev_close: float) -> float:
    return max(bar.high, prev_close) - min(bar.low, prev_close)


def spike_threshold(
    prev_close: float, atr: float | None, params: SpikeParams, warm: bool = True
) -> float:
    """The largest true range that is plausible: k x ATR, never below the floor (a market so
    quiet that ATR is a cent), nor below the warm-up floor while the ATR is not `warm`."""
    floor = (params.floor_pct if warm else max(params.floor_pct, params.warmup_pct)) * prev_close
    return floor if atr is None else max(params.atr_multiple * atr, floor)


def implausible(
    bar: Bar, prev_close: float, atr: float | None, params: SpikeParams, warm: bool = True
) -> str | None:
    """Why `bar` is implausible after a close of `prev_close` (a one-line reason), or None."""
    limit = spike_threshold(prev_close, atr, params, warm)
    tr = true_range(bar, prev_close)
    if tr <= limit:
        return None
    move = abs(bar.close - prev_close) / prev_close
    yardstick = f"{params.atr_multiple:g} x ATR {atr:.4g}" if atr is not None else "no ATR yet"
    floor = params.floor_pct if warm else max(params.floor_pct, params.warmup_pct)
    return (
        f"true range {tr:.4g} > {limit:.4g} ({yardstick}, floor {floor:.2%}); "
        f"close {bar.close:.4g} vs previous {prev_close:.4g} ({move:.1%})"
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    bar: Bar
    outcome: Outcome  # accept: deliver; hold: suspect; confirm: deliver as history; drop: spike
    reason: str = ""


class SpikeGuard:
    """One series' spike filter. `offer(bar)` returns what to do with it and with a held bar,
    in delivery order. Bars must come already checked by `bar_problem` and in time order."""

    def __init__(self, params: SpikeParams) -> None:
        self.params = params
        self.last: Bar | None = None  # the last accepted bar
        self.held: Bar | None = None
        self.held_reason = ""
        self._ranges: deque[float] = deque(maxlen=params.atr_period)

    @property
    def atr(self) -> float | None:
        return sum(self._ranges) / len(self._ranges) if self._ranges else None

    @property
    def warm(self) -> bool:
        return len(self._ranges) >= self.params.atr_period

    @property
    def newest(self) -> Bar | None:
        """The newest bar seen, held or accepted: what the next bar is ordered against."""
        return self.held or self.last

    def _accept(self, bar: Bar) -> None:
        if self.last is not None:
            self._ranges.append(true_range(bar, self.last.close))
        self.last = bar

    def offer(self, bar: Bar) -> list[Verdict]:
        if self.last is None:
            self._accept(bar)
            return [Verdict(bar, "accept")]
        why = implausible(bar, self.last.close, self.atr, self.params, self.warm)
        held, self.held = self.held, None
        if held is None:
            if why is None:
                self._accept(bar)
                return [Verdict(bar, "accept")]
            self.held, self.held_reason = bar, why
            return [Verdict(bar, "hold", why)]
        if why is None:
            # Back at the old level: the held bar was a spike.
            self._accept(bar)
            return [Verdict(held, "drop", self.held_reason), Verdict(bar, "accept")]
        if implausible(bar, held.close, self.atr, self.params, self.warm) is None:
            # The new level persists: a real move (a gap). Its bars count from here on.
            self._accept(held)
            self._ranges.clear()  # the gap itself is not the new yardstick
            self._accept(bar)
            return [
                Verdict(held, "confirm", f"confirmed by the next bar ({self.held_reason})"),
                Verdict(bar, "accept"),
            ]
        # Far from both: the held bar is dropped and this one waits for its own confirmation.
        dropped = Verdict(held, "drop", self.held_reason)
        self.held, self.held_reason = bar, why
        return [dropped, Verdict(bar, "hold", why)]


# ---------------------------------------------------------------------- quote age


@dataclass(frozen=True, slots=True)
class QuoteMark:
    """What the service knows of one contract's bid/ask over time.

    IB stamps nothing: a snapshot's ticks arrive fresh, and a line opens with the current
    (possibly frozen) bid/ask. So a quote's age is only what the service has watched: `since`
    is the earliest the current bid/ask can have been set (the last time different values were
    observed), None while they have never been seen to change.
    """

    bid: float
    ask: float
    seen: datetime  # the last time these values were observed
    since: datetime | None


def observe_quote(
    mark: QuoteMark | None, bid: float, ask: float, now: datetime, watched: bool = False
) -> QuoteMark:
    """The mark after observing (bid, ask) at `now`.

    `watched`: the observation comes from a streaming line that has been open since `mark.seen`,
    so a change is known to have happened now (IB sends a tick on every change). Otherwise the
    change happened at some unknown time after `mark.seen`, and the oldest it can be is assumed.
    """
    if mark is None:
        return QuoteMark(bid, ask, now, None)
    if same_price(bid, mark.bid) and same_price(ask, mark.ask):
        return QuoteMark(mark.bid, mark.ask, now, mark.since)
    return QuoteMark(bid, ask, now, now if watched else mark.seen)


def same_price(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def quote_age_s(mark: QuoteMark, now: datetime, scale: float = 1.0) -> float:
    """Real seconds since the bid/ask last changed, at the oldest; inf when never seen to change."""
    if mark.since is None:
        return math.inf
    return max(0.0, (now - mark.since).total_seconds() / scale)

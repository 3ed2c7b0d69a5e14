"""Hourly bars built from the 1-minute stream, on IB's RTH grid (09:30-10:00, then on the hour)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from strategies.bars import Bar

MINUTE = timedelta(minutes=1)


def hour_bucket(
    t: datetime, session_open: datetime, session_close: datetime
) -> tuple[datetime, datetime]:
    """The (start, end) of the hourly bar containing minute t, as IB stamps RTH hourly bars.

    The first bar runs from the open to the next full hour (09:30-10:00); later ones start on
    the hour; the last one ends at the close (13:00 on a half day).
    """
    top = t.replace(minute=0, second=0, microsecond=0)
    start = max(top, session_open)
    end = min(top + timedelta(hours=1), session_close)
    return start, end


@dataclass
class HourlyAggregator:
    """Feeds on closed 1-minute bars; returns a closed hourly bar when its last minute arrives.

    A gap in the minutes (a lost bar) still closes the hour when a later minute arrives, so an
    hour is never held back for good; the caller backfills hourly history separately.
    """

    current: Bar | None = None
    current_end: datetime | None = None

    def update(self, bar: Bar, session_open: datetime, session_close: datetime) -> list[Bar]:
        closed: list[Bar] = []
        start, end = hour_bucket(bar.time, session_open, session_close)
        if self.current is not None and self.current.time != start:
            closed.append(self.current)  # the hour ended without its last minute
            self.current = None
        if self.current is None:
            self.current = Bar(start, bar.open, bar.high, bar.low, bar.close, bar.volume)
        else:
            c = self.current
            self.current = Bar(
                start,
                c.open,
                max(c.high, bar.high),
                min(c.low, bar.low),
                bar.close,
                c.volume + bar.volume,
            )
        self.current_end = end
        if bar.time + MINUTE >= end:
            closed.append(self.current)
            self.current = None
        return closed


FIVE = timedelta(seconds=5)


@dataclass
class MinuteAggregator:
    """Minute bars from IB's real-time 5-second bars (reqRealTimeBars), closed on their last bar.

    A minute is complete, and returned, when its twelfth 5-second bar (the one starting at :55)
    arrives: at the minute's end, with nothing missing and no timer needed. A minute joined in
    its middle (the subscription started then) or with a 5-second bar missing (an outage) is
    never returned: its values would be wrong, and the caller fetches it from history instead
    (a hole in the minutes is a gap to fill, as with any stream).
    """

    current: Bar | None = None
    count: int = 0  # 5-second bars in `current`, contiguous from the minute's start
    incomplete: int = 0  # minutes dropped for a missing 5-second bar

    def update(self, five: Bar) -> list[Bar]:
        start = five.time.replace(second=0, microsecond=0)
        index = int((five.time - start) / FIVE)
        if self.current is not None and (self.current.time != start or index != self.count):
            if self.current.time != start or index > self.count:
                self.incomplete += 1
                self.current, self.count = None, 0
            else:
                return []  # a 5-second bar seen already (a repeat): nothing new
        if self.current is None:
            if index != 0:
                return []  # joined mid-minute: wait for the next minute's first bar
            self.current = five
            self.count = 1
        else:
            c = self.current
            self.current = Bar(
                start,
                c.open,
                max(c.high, five.high),
                min(c.low, five.low),
                five.close,
                c.volume + five.volume,
            )
            self.count += 1
        if self.count == 12:
            done, self.current, self.count = self.current, None, 0
            return [done]
        return []

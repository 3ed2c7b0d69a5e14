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

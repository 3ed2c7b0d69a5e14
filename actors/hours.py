"""Market hours from the XNYS exchange calendar: open, minutes since open / to close, NY trading date."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import exchange_calendars as xcals

NY = ZoneInfo("America/New_York")


@dataclass(frozen=True, slots=True)
class Session:
    date: date
    open: datetime
    close: datetime


class MarketHours:
    """Regular sessions (holidays and half days included), looked up by bisect, not per call to the library."""

    def __init__(self, start: date | None = None, end: date | None = None, name: str = "XNYS"):
        cal = xcals.get_calendar(
            name, start=start or date(2020, 1, 2), end=end or date(2030, 12, 31)
        )
        self.sessions = [
            Session(d.date(), o.to_pydatetime().astimezone(UTC), c.to_pydatetime().astimezone(UTC))
            for d, o, c in zip(cal.sessions, cal.opens, cal.closes, strict=True)
        ]
        self._opens = [s.open for s in self.sessions]

    def session_at(self, t: datetime) -> Session | None:
        """The session whose regular hours contain t."""
        i = bisect.bisect_right(self._opens, t) - 1
        if i >= 0 and self.sessions[i].open <= t < self.sessions[i].close:
            return self.sessions[i]
        return None

    def is_open(self, t: datetime) -> bool:
        return self.session_at(t) is not None

    def last_session(self, t: datetime) -> Session | None:
        """The latest session that opened at or before t."""
        i = bisect.bisect_right(self._opens, t) - 1
        return self.sessions[i] if i >= 0 else None

    def next_open(self, t: datetime) -> datetime | None:
        i = bisect.bisect_right(self._opens, t)
        return self._opens[i] if i < len(self._opens) else None

    def minutes_since_open(self, t: datetime) -> float | None:
        s = self.session_at(t)
        return None if s is None else (t - s.open) / timedelta(minutes=1)

    def minutes_to_close(self, t: datetime) -> float | None:
        s = self.session_at(t)
        return None if s is None else (s.close - t) / timedelta(minutes=1)

    @staticmethod
    def trading_date(t: datetime) -> date:
        """The New York calendar date: the key of the daily loss guard."""
        return t.astimezone(NY).date()

"""The Gateway's own routines as time windows (pure): is `now` inside one, and which.

A window starts at `start` local time on each of its `days` and lasts `minutes`, so one that
starts late on a Sunday runs into Monday. Local time is the window's zone (New York for IB's),
daylight saving included: 00:15 ET is 05:15 UTC in winter and 04:15 UTC in summer.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from configs.settings import WEEKDAYS, RoutineWindow


def window_start(routine: RoutineWindow, now: datetime) -> datetime | None:
    """The start of the window `now` is in, or None. `now` must be timezone-aware."""
    zone = ZoneInfo(routine.tz)
    local = now.astimezone(zone)
    length = timedelta(minutes=routine.minutes)
    at = time.fromisoformat(routine.start)
    # A window is at most a day long: it began today or yesterday (local dates).
    for back in (0, 1):
        day = local.date() - timedelta(days=back)
        if WEEKDAYS[day.weekday()] not in routine.days:
            continue
        # Compared in UTC: aware datetimes of one zone compare by wall time, which is off by
        # the DST shift for a window that spans the change.
        start = datetime.combine(day, at, tzinfo=zone).astimezone(UTC)
        if start <= now < start + length:
            return start
    return None


def active(routines: Iterable[RoutineWindow], now: datetime) -> RoutineWindow | None:
    """The routine whose window holds `now`, or None. Where windows overlap (Sunday's re-login
    begins inside the nightly reset), the one that began last: it is what just happened."""
    found = [(start, i, r) for i, r in enumerate(routines) if (start := window_start(r, now))]
    if not found:
        return None
    return max(found, key=lambda x: (x[0], -x[1]))[2]


def describe(routine: RoutineWindow, now: datetime) -> str:
    """'weekly_reauth until 09:00 America/New_York', for the one line that reports it."""
    start = window_start(routine, now)
    if start is None:
        return routine.name
    end = (start + timedelta(minutes=routine.minutes)).astimezone(ZoneInfo(routine.tz))
    return f"{routine.name} until {end:%H:%M} {routine.tz}"

"""Market hours from the XNYS exchange calendar: open, minutes since open / to close, NY trading date."""

from __future__ import annotations

import bisect
import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from zoneinfo import ZoneInfo

NY = ZoneInfo("America/New_York")
log = logging.getLogger("optionsbot.hours")


@dataclass(frozen=True, slots=True)
class Session:
    date: date
    open: datetime
    close: datetime


class MarketHours:
    """Regular sessions (holidays and half days included), looked up by bisect, not per call to the library."""

    def __init__(
        self,
        start: date | None = None,
        end: date | None = None,
        name: str = "XNYS",
        cache: Path | None = None,
    ):
        """`cache`: a JSON file keeping the calendar's sessions between starts. Building the
        calendar (and importing exchange-calendars) is about a quarter of a start-up's CPU;
        the file is keyed by the exchange-calendars version, so an upgrade rebuilds it."""
        start, end = start or date(2020, 1, 2), end or date(2030, 12, 31)
        key = {
            "calendar": name,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "exchange_calendars": version("exchange-calendars"),
        }
        cache = Path(cache) if cache else None
        self.sessions = _read_cache(cache, key) if cache else None
        if self.sessions is None:
            # With a cache (the service's case) the calendar is built in a child process: it
            # imports exchange-calendars and pandas (about 45 MB), which would otherwise stay in
            # the service's memory for good, for a table of dates read once.
            self.sessions = (_build_in_child(name, start, end) if cache else None) or _build(
                name, start, end
            )
            if cache:
                _write_cache(cache, key, self.sessions)
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


def _build(name: str, start: date, end: date) -> list[Session]:
    import exchange_calendars as xcals

    cal = xcals.get_calendar(name, start=start, end=end)
    return [
        Session(d.date(), o.to_pydatetime().astimezone(UTC), c.to_pydatetime().astimezone(UTC))
        for d, o, c in zip(cal.sessions, cal.opens, cal.closes, strict=True)
    ]


def _rows(sessions: list[Session]) -> list[list[str]]:
    return [[s.date.isoformat(), s.open.isoformat(), s.close.isoformat()] for s in sessions]


def _sessions(rows: list[list[str]]) -> list[Session]:
    return [
        Session(date.fromisoformat(d), datetime.fromisoformat(o), datetime.fromisoformat(c))
        for d, o, c in rows
    ]


def _build_in_child(name: str, start: date, end: date) -> list[Session] | None:
    """_build in a child process; None when that fails (the caller builds it here instead)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "actors.hours", name, start.isoformat(), end.isoformat()],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1:] or done.returncode)
        return _sessions(json.loads(done.stdout))
    except Exception as exc:  # noqa: BLE001 - building it in this process still works
        log.warning("market calendar not built in a child process (%s); building it here", exc)
        return None


def _read_cache(path: Path, key: dict[str, str]) -> list[Session] | None:
    try:
        data = json.loads(path.read_text())
        if data.get("key") != key:
            return None
        return _sessions(data["sessions"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("market-hours cache %s unreadable (%s); rebuilding it", path, exc)
        return None


def _write_cache(path: Path, key: dict[str, str], sessions: list[Session]) -> None:
    rows = _rows(sessions)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "sessions": rows}))
        tmp.replace(path)  # atomic: a crash never leaves half a file
    except OSError as exc:
        log.warning("market-hours cache %s not written (%s)", path, exc)


if __name__ == "__main__":  # the child process of _build_in_child
    import sys

    _name, _start, _end = sys.argv[1:4]
    print(json.dumps(_rows(_build(_name, date.fromisoformat(_start), date.fromisoformat(_end)))))

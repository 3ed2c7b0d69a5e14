"""Market hours from exchange-calendars, and the cache that spares a restart from rebuilding them."""

import json
import subprocess
import sys
from datetime import UTC, date, datetime

from actors.hours import MarketHours

# Thanksgiving week 2026: Thursday closed, Friday a half day (13:00 New York = 18:00 UTC).
START, END = date(2026, 11, 2), date(2026, 12, 31)


def test_holidays_and_half_days_come_from_the_calendar():
    hours = MarketHours(START, END)
    assert not hours.is_open(datetime(2026, 11, 26, 16, 0, tzinfo=UTC))
    friday = hours.session_at(datetime(2026, 11, 27, 15, 0, tzinfo=UTC))
    assert friday is not None and friday.close == datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
    assert hours.minutes_to_close(datetime(2026, 11, 27, 17, 30, tzinfo=UTC)) == 30


def test_the_cache_gives_the_same_sessions_and_is_used_on_the_next_start(tmp_path):
    cache = tmp_path / "var" / "market-hours.json"
    built = MarketHours(START, END, cache=cache)
    assert cache.exists()
    again = MarketHours(START, END, cache=cache)
    assert again.sessions == built.sessions == MarketHours(START, END).sessions
    # The next start reads the file and never imports exchange-calendars (nor pandas for it).
    probe = (
        "import sys; from datetime import date; from actors.hours import MarketHours; "
        f"h = MarketHours(date(2026, 11, 2), date(2026, 12, 31), cache={str(cache)!r}); "
        "print(len(h.sessions), 'exchange_calendars' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(len(built.sessions)), "False"]


def test_a_cache_from_another_calendar_version_or_range_is_rebuilt(tmp_path):
    cache = tmp_path / "market-hours.json"
    MarketHours(START, END, cache=cache)
    data = json.loads(cache.read_text())
    data["key"]["exchange_calendars"] = "0.0.1"
    data["sessions"] = data["sessions"][:3]  # what an old version would have said
    cache.write_text(json.dumps(data))
    assert len(MarketHours(START, END, cache=cache).sessions) > 3
    assert json.loads(cache.read_text())["key"]["exchange_calendars"] != "0.0.1"


def test_a_damaged_cache_is_rebuilt_with_a_warning(tmp_path, caplog):
    cache = tmp_path / "market-hours.json"
    cache.write_text('{"key": ')
    hours = MarketHours(START, END, cache=cache)
    assert hours.is_open(datetime(2026, 11, 27, 15, 0, tzinfo=UTC))
    assert "unreadable" in caplog.text
    assert json.loads(cache.read_text())["sessions"]

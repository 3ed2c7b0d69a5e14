"""The Gateway's routine windows: inside or not, across midnight, weekdays and DST."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from actors.connection.routines import active, describe, window_start
from configs.settings import RoutineWindow, Settings

NY = ZoneInfo("America/New_York")
RESET = RoutineWindow(name="server_reset", start="00:15", minutes=90)
REAUTH = RoutineWindow(name="weekly_reauth", days=("sun",), start="01:00", minutes=480)
LATE = RoutineWindow(name="late", days=("sun",), start="23:30", minutes=60)


def ny(*args):
    return datetime(*args, tzinfo=NY).astimezone(UTC)


def test_inside_and_outside_a_nightly_window():
    assert window_start(RESET, ny(2026, 11, 20, 0, 15)) is not None  # its first minute
    assert window_start(RESET, ny(2026, 11, 20, 1, 44, 59)) is not None
    assert window_start(RESET, ny(2026, 11, 20, 1, 45)) is None  # the end is outside
    assert window_start(RESET, ny(2026, 11, 20, 0, 14, 59)) is None


def test_a_window_keeps_its_weekday_and_runs_past_midnight():
    assert window_start(REAUTH, ny(2026, 11, 22, 8, 59)) is not None  # Sunday 08:59
    assert window_start(REAUTH, ny(2026, 11, 29 - 1, 3, 0)) is None  # Saturday
    assert window_start(LATE, ny(2026, 11, 23, 0, 20)) is not None  # Sunday's, on Monday
    assert window_start(LATE, ny(2026, 11, 24, 0, 20)) is None  # Monday's does not exist


def test_new_york_time_through_daylight_saving():
    # 00:15 ET is 04:15 UTC in summer and 05:15 UTC in winter.
    assert window_start(RESET, datetime(2026, 7, 1, 4, 15, tzinfo=UTC)) is not None
    assert window_start(RESET, datetime(2026, 12, 1, 4, 15, tzinfo=UTC)) is None
    assert window_start(RESET, datetime(2026, 12, 1, 5, 15, tzinfo=UTC)) is not None


@given(
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31)),
    offset=st.integers(-24 * 60, 48 * 60),
)
def test_in_the_window_exactly_when_minutes_since_its_start_are_fewer_than_its_length(
    start, offset
):
    """Generated against the definition: a moment is inside iff some start on an allowed day is
    at most `minutes` before it (in real elapsed time, so DST cannot stretch a window)."""
    now = start.replace(tzinfo=UTC) + timedelta(minutes=offset)
    got = window_start(REAUTH, now)
    starts = []
    for back in range(0, 3):
        day = now.astimezone(NY).date() - timedelta(days=back)
        if day.weekday() == 6:
            starts.append(datetime(day.year, day.month, day.day, 1, 0, tzinfo=NY).astimezone(UTC))
    inside = [s for s in starts if s <= now < s + timedelta(minutes=480)]
    assert (got is not None) == bool(inside)
    if got is not None:
        assert got == inside[0]


def test_the_defaults_cover_ibs_three_routines():
    routines = Settings().broker.routines
    assert active(routines, ny(2026, 11, 20, 0, 30)).name == "server_reset"
    assert active(routines, ny(2026, 11, 19, 23, 45)).name == "gateway_restart"
    assert active(routines, ny(2026, 11, 22, 5, 0)).name == "weekly_reauth"
    # Sunday 01:10: inside the reset (since 00:15) and the re-login (since 01:00): the latter.
    assert active(routines, ny(2026, 11, 22, 1, 10)).name == "weekly_reauth"
    assert active(routines, ny(2026, 11, 21, 1, 10)).name == "server_reset"  # a Saturday
    assert active(routines, ny(2026, 11, 20, 10, 0)) is None  # a trading morning
    assert describe(REAUTH, ny(2026, 11, 22, 5, 0)) == "weekly_reauth until 09:00 America/New_York"

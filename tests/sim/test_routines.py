"""Gateway routines in the fault injector: faults that come back on a schedule (`repeat`), keep
their own window, and skip the times a jumping clock never lived through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sim.faults import FaultInjector, Scenario, ScenarioError, make_fault
from sim.protocol import EASTERN

ORIGIN = datetime(2026, 11, 19, 23, 0, tzinfo=EASTERN).astimezone(UTC)


def _et(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=EASTERN).astimezone(UTC)


def _walk(injector: FaultInjector, start: datetime, end: datetime, step: timedelta):
    t, events = start, []
    while t <= end:
        started, ended = injector.poll(t)
        events += [("start", t)] * len(started) + [("end", t)] * len(ended)
        t += step
    return events


def test_a_nightly_window_comes_back_every_night_on_its_own_schedule() -> None:
    inj = FaultInjector(ORIGIN)
    inj.add("server_reset", at="2026-11-20T00:15:00", duration="1h30m", repeat="1d")
    events = _walk(inj, ORIGIN, ORIGIN + timedelta(days=3), timedelta(minutes=1))
    starts = [t for kind, t in events if kind == "start"]
    ends = [t for kind, t in events if kind == "end"]
    assert starts == [_et(20, 0, 15), _et(21, 0, 15), _et(22, 0, 15)]
    assert ends == [_et(20, 1, 45), _et(21, 1, 45), _et(22, 1, 45)]


def test_a_clock_that_jumps_over_the_night_skips_the_reset_rather_than_run_it_at_the_open() -> None:
    inj = FaultInjector(ORIGIN)
    inj.add("server_reset", at="2026-11-20T00:15:00", duration="1h30m", repeat="1d")
    # The simulator skipping closed hours: from the close straight to the next open.
    started, _ = inj.poll(_et(20, 9, 30))
    assert started == []
    started, _ = inj.poll(_et(21, 0, 20))  # lived through: runs, ending on its schedule
    assert len(started) == 1
    _, ended = inj.poll(_et(21, 1, 44))
    assert ended == []
    _, ended = inj.poll(_et(21, 1, 45))
    assert len(ended) == 1


def test_an_event_routine_fires_once_per_period() -> None:
    inj = FaultInjector(ORIGIN)
    f = inj.add("gateway_restart", at="2026-11-19T23:45:00", repeat="1d", lost_seconds=120)
    events = _walk(inj, ORIGIN, ORIGIN + timedelta(days=2, hours=1), timedelta(minutes=1))
    assert [t for kind, t in events if kind == "start"] == [
        _et(19, 23, 45),
        _et(20, 23, 45),
        _et(21, 23, 45),
    ]
    assert f["lost_seconds"] == 120.0 and inj.counts["gateway_restart"] == 3


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"repeat": "1d", "duration": "1h"}, "repeat: a routine needs 'at'"),
        ({"repeat": "1d", "at": "+1m", "until": "+2h"}, "use 'duration'"),
        ({"repeat": "1h", "at": "+1m", "duration": "2h"}, "must be shorter than 'repeat'"),
        ({"repeat": "0s", "at": "+1m", "duration": "2h"}, "must be longer than 0"),
        ({"repeat": "soon", "at": "+1m"}, "expected a duration"),
    ],
)
def test_bad_routines_are_refused_naming_the_key(values, words) -> None:
    with pytest.raises(ScenarioError, match=words):
        make_fault("server_reset", "faults[0]", **values)


def test_routine_kinds_validate_their_parameters() -> None:
    with pytest.raises(ScenarioError, match="style: expected one of"):
        make_fault("server_reset", "f", style="both")
    with pytest.raises(ScenarioError, match="flaps: expected a positive integer"):
        make_fault("server_reset", "f", flaps=0)
    with pytest.raises(ScenarioError, match="takes no 'until' or 'duration'"):
        Scenario.from_dict({"faults": [{"kind": "gateway_restart", "duration": "1m"}]})

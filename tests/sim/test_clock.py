"""Tests for the simulator's scaled and manual clocks."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from sim.clock import Clock, ManualClock, ScaledClock

START = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


class FakeMonotonic:
    def __init__(self, value: float = 1000.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def test_scaled_clock_runs_scale_times_faster() -> None:
    mono = FakeMonotonic()
    clock = ScaledClock(START, scale=60.0, monotonic=mono)
    assert clock.now() == START
    mono.value += 1.5
    assert clock.now() == START + timedelta(seconds=90)
    assert clock.now().tzinfo is UTC


def test_scaled_clock_converts_start_to_utc() -> None:
    eastern = timezone(timedelta(hours=-5))
    clock = ScaledClock(datetime(2026, 11, 20, 9, 30, tzinfo=eastern), monotonic=FakeMonotonic())
    assert clock.now() == START
    assert clock.now().utcoffset() == timedelta(0)


def test_scaled_clock_rejects_naive_start_and_bad_scale() -> None:
    with pytest.raises(ValueError, match="start"):
        ScaledClock(datetime(2026, 11, 20, 14, 30))
    with pytest.raises(ValueError, match="scale"):
        ScaledClock(START, scale=0.0)
    with pytest.raises(ValueError, match="scale"):
        ScaledClock(START, scale=-2.0)


def test_scale_is_read_only() -> None:
    clock = ScaledClock(START, scale=30.0, monotonic=FakeMonotonic())
    assert clock.scale == 30.0
    with pytest.raises(AttributeError):
        clock.scale = 10.0  # type: ignore[misc]


def test_jump_adds_to_elapsed_time() -> None:
    mono = FakeMonotonic()
    clock = ScaledClock(START, scale=10.0, monotonic=mono)
    clock.jump(timedelta(hours=17))
    mono.value += 2.0
    assert clock.now() == START + timedelta(hours=17, seconds=20)
    clock.jump(timedelta(minutes=-5))
    assert clock.now() == START + timedelta(hours=17, seconds=20) - timedelta(minutes=5)


def test_jump_to_only_moves_forward() -> None:
    mono = FakeMonotonic()
    clock = ScaledClock(START, scale=60.0, monotonic=mono)
    target = START + timedelta(days=3, hours=1)
    clock.jump_to(target)
    assert clock.now() == target
    clock.jump_to(START)
    assert clock.now() == target
    clock.jump_to(target)
    assert clock.now() == target
    mono.value += 1.0
    assert clock.now() == target + timedelta(minutes=1)
    with pytest.raises(ValueError, match="t"):
        clock.jump_to(datetime(2030, 1, 1))


def test_real_seconds() -> None:
    clock = ScaledClock(START, scale=60.0, monotonic=FakeMonotonic())
    assert clock.real_seconds(timedelta(minutes=1)) == pytest.approx(1.0)
    assert clock.real_seconds(timedelta(hours=6, minutes=30)) == pytest.approx(390.0)
    assert clock.real_seconds(timedelta(0)) == 0.0


def test_concurrent_jumps_are_not_lost() -> None:
    clock = ScaledClock(START, scale=1.0, monotonic=FakeMonotonic())
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        for _ in range(500):
            clock.jump(timedelta(seconds=1))
            clock.now()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert clock.now() == START + timedelta(seconds=2000)


def test_manual_clock() -> None:
    clock = ManualClock(START)
    assert clock.now() == START
    clock.advance(timedelta(minutes=5))
    assert clock.now() == START + timedelta(minutes=5)
    later = START + timedelta(days=1)
    clock.set(later)
    assert clock.now() == later
    clock.set(START)
    assert clock.now() == START
    clock.jump_to(START - timedelta(hours=1))
    assert clock.now() == START
    clock.jump(timedelta(seconds=30))
    assert clock.now() == START + timedelta(seconds=30)
    assert clock.now().tzinfo is UTC
    assert clock.real_seconds(timedelta(seconds=30)) == 30.0


def test_manual_clock_rejects_naive_times() -> None:
    with pytest.raises(ValueError, match="start"):
        ManualClock(datetime(2026, 1, 1))
    clock = ManualClock(START)
    with pytest.raises(ValueError, match="t"):
        clock.set(datetime(2026, 1, 1))


def test_both_clocks_satisfy_the_protocol() -> None:
    assert isinstance(ManualClock(START), Clock)
    assert isinstance(ScaledClock(START, monotonic=FakeMonotonic()), Clock)

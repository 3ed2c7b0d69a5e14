"""sim/server/history.py: IB bar sizes, and bars of any size built from the market model's own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serverkit import START, new_server

from sim.market import BAR_SIZES
from sim.server import parse_bar_size

# IB's barSizeSetting values (TWS API, "Historical Bar Data": valid bar sizes), and what the
# simulator makes of each: seconds per bar, "W"/"M", or None where it has no such bars.
IB_BAR_SIZES = {
    "1 secs": None,
    "5 secs": 5,
    "10 secs": 10,
    "15 secs": 15,
    "30 secs": 30,
    "1 min": 60,
    "2 mins": 120,
    "3 mins": 180,
    "5 mins": 300,
    "10 mins": 600,
    "15 mins": 900,
    "20 mins": 1200,
    "30 mins": 1800,
    "1 hour": 3600,
    "2 hours": 7200,
    "3 hours": 10800,
    "4 hours": 14400,
    "8 hours": 28800,
    "1 day": 86400,
    "1 week": "W",
    "1 month": "M",
}


@pytest.mark.parametrize(("text", "expected"), IB_BAR_SIZES.items())
def test_ib_bar_sizes(text: str, expected: int | str | None) -> None:
    assert parse_bar_size(text) == expected


@pytest.mark.parametrize(
    "text", ["", "0 mins", "2 days", "2 weeks", "7 secs", "9 hours", "1 fortnight"]
)
def test_bar_sizes_the_simulator_refuses(text: str) -> None:
    assert parse_bar_size(text) is None


@given(n=st.integers(1, 40_000), unit=st.sampled_from(["secs", "mins", "hours", "S"]))
def test_a_parsed_bar_size_can_be_built(n: int, unit: str) -> None:
    size = parse_bar_size(f"{n} {unit}")
    if size is None:
        return
    assert isinstance(size, int)
    # history_bars merges the largest native size that divides it.
    assert size in BAR_SIZES or (size % 5 == 0 and size <= 8 * 3600)


SERVER = new_server()
INTRADAY = [10, 15, 30, 120, 180, 600, 1200, 7200, 10800, 14400, 28800]


@settings(max_examples=40, deadline=None)
@given(size=st.sampled_from(INTRADAY), back=st.integers(0, 3), span=st.integers(1, 400))
def test_merged_bars_are_aligned_and_keep_the_volume(size: int, back: int, span: int) -> None:
    market = SERVER.market
    start = market.sessions_back(START, back) + timedelta(minutes=span % 97)
    end = start + timedelta(minutes=span)
    bars = SERVER.history_bars("SPY", start, end, size)
    times = [b.time for b in bars]
    assert times == sorted(set(times))
    for b in bars:
        session_open = market.sessions_back(b.time, 0)
        assert (b.time - session_open).total_seconds() % size == 0
        assert b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high
    if bars:
        base = max(x for x in (5, 60, 300, 900, 1800) if size % x == 0)
        native = market.bars("SPY", bars[0].time, end, base)
        assert sum(b.volume for b in bars) == sum(b.volume for b in native)

"""`optionsbot history fetch` against the simulator over a real socket: the bars are the
market's own, the pacing holds, and a second run asks only for what the first did not get."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import pytest
from ib_async import IB

from actors.hours import MarketHours
from actors.pacing import HistoricalPacer
from backtest.bars import load
from backtest.history import fetch, read_done
from sim.config import SimOptions
from sim.runner import EmbeddedSim

NOW = datetime(2026, 11, 20, 21, 30, tzinfo=UTC)  # Friday evening, after the close
SYMBOLS = ["SPY", "QQQ"]


@pytest.fixture
def sim():
    s = EmbeddedSim(SimOptions(seed=3, start=NOW, time_scale=1.0, symbols=tuple(SYMBOLS)))
    port = s.start(host="127.0.0.1", port=0)
    yield s, port
    s.stop()


def run_fetch(port, out, days, hours, **kw):
    async def go():
        ib = IB()
        await ib.connectAsync("127.0.0.1", port, clientId=77, timeout=10, readonly=True)
        try:
            return await fetch(ib, SYMBOLS, days, out, hours, **kw)
        finally:
            ib.disconnect()

    return asyncio.run(go())


def test_fetch_gets_every_bar_of_the_last_sessions_and_resumes(sim, tmp_path):
    server, port = sim
    hours = MarketHours(cache=tmp_path / "hours.json")
    out = tmp_path / "bars.csv"
    first = run_fetch(port, out, 3, hours)
    assert first.failed == [] and first.requests == 6
    loaded = load(out)
    assert loaded.skipped == {}
    days = {date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)}
    for sym in SYMBOLS:
        bars = loaded.bars[sym]
        assert {MarketHours.trading_date(b.time) for b in bars} == days
        assert len(bars) == 3 * 390
        # The simulator's own numbers for the same minutes.
        want = server.market.bars(sym, bars[0].time, bars[-1].time, 60)
        by_time = {b.time: b for b in want}
        for b in bars[:-1]:
            w = by_time[b.time]
            assert (b.open, b.high, b.low, b.close) == pytest.approx(
                (w.open, w.high, w.low, w.close)
            )
    assert {(s, d.isoformat()) for s in SYMBOLS for d in days} == read_done(
        out.with_name("bars.csv.done")
    )

    # A run interrupted after QQQ's last day was written but before it was listed as done:
    # the next run asks for that one only, and the file keeps one copy of each bar.
    done = out.with_name("bars.csv.done")
    lines = done.read_text().splitlines()
    done.write_text("\n".join(lines[:-1]) + "\n")
    second = run_fetch(port, out, 3, hours)
    assert second.requests == 1 and second.skipped_done == 5
    again = load(out)
    assert again.skipped == {"duplicate": 390}
    assert {s: len(b) for s, b in again.bars.items()} == {"SPY": 1170, "QQQ": 1170}


def test_requests_keep_the_pacing_rules(sim, tmp_path):
    """Identical requests 15 s apart at least: the pacer is asked for every request."""
    server, port = sim
    hours = MarketHours(cache=tmp_path / "hours.json")
    booked = []

    class Recording(HistoricalPacer):
        def reserve(self, key, contract_key, now, small_bars=True):
            delay = super().reserve(key, contract_key, now, small_bars)
            booked.append((key, contract_key, small_bars))
            return delay

    result = run_fetch(port, tmp_path / "b.csv", 2, hours, pacer=Recording())
    assert result.requests == len(booked) == 4
    assert all(small is False for *_, small in booked)  # 1-min bars: not the 60/10-min rule
    assert server.violations == {} or sum(server.violations.values()) == 0

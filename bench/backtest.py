"""How fast the backtest goes: bars per second and trading days per minute, memory as it runs.

The goal (issue 15): 20 trading days of 10 symbols (78,000 one-minute bars) in under 60 s on a
2-core machine, with memory flat. The actors, SQLite and the simulated market are the real
ones; the run is the same as `optionsbot backtest` without --bars.

    python bench/backtest.py                    # 10 symbols x 20 days
    python bench/backtest.py --symbols 3 --days 5
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.hours import MarketHours  # noqa: E402
from backtest.engine import run  # noqa: E402
from backtest.market import SimMarket  # noqa: E402
from configs.settings import load_settings  # noqa: E402

SYMBOLS = ("SPY", "QQQ", "IWM", "AAPL", "MSFT", "NVDA", "AMZN", "META", "TSLA", "AMD")
FIRST = date(2026, 10, 5)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--days", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    symbols = SYMBOLS[: args.symbols]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        hours = MarketHours(cache=out / "market-hours.json")
        days = [s.date for s in hours.sessions if s.date >= FIRST][: args.days]
        settings = load_settings(None, environ={}).model_copy(update={"symbols": symbols})
        samples: list = []  # (seconds, MB, during the replay)
        done = threading.Event()
        replayed = threading.Event()

        def sample() -> None:  # memory every half second, from a side thread
            t0 = time.monotonic()
            while not done.wait(0.5):
                samples.append((time.monotonic() - t0, rss_mb(), not replayed.is_set()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        def progress(i: int, total: int, _bars: int) -> None:
            if i >= total:
                replayed.set()  # the report and its plot (matplotlib) come after: not the replay

        t0 = time.monotonic()
        cpu0 = time.process_time()
        result = run(
            settings, SimMarket(args.seed, symbols), days[0], days[-1], out, progress=progress
        )
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        done.set()
        sampler.join()
        peak = max((v for _, v, _ in samples), default=0.0)
        samples = [(t, v) for t, v, during in samples if during]
    r = result.report
    print(f"backtest bench: {len(symbols)} symbols x {len(days)} days ({days[0]} .. {days[-1]})")
    print(f"  bars {r['bars_processed']:,}, trades {r['trades']}, net P&L ${r['net_pnl']:,.2f}")
    print(
        f"  run {r['seconds']:.1f} s (with start-up and report: {wall:.1f} s;"
        f" CPU {cpu:.1f} s, the figure a busy machine disturbs least)"
    )
    print(f"  {r['bars_per_second']:,.0f} bars/s, {r['days_per_minute']:.1f} trading days/min")
    if samples:
        n = len(samples)
        early = max(v for _, v in samples[: max(1, n // 4)])
        late = max(v for _, v in samples[-max(1, n // 4) :])
        print(
            f"  memory (RSS) while replaying: first quarter max {early:.0f} MB,"
            f" last quarter max {late:.0f} MB; peak with the report {peak:.0f} MB"
        )
    goal = 78_000 / 60
    verdict = "meets" if r["bars_per_second"] >= goal else "misses"
    print(f"  goal 1,300 bars/s (78,000 bars in 60 s): {verdict} it")


if __name__ == "__main__":
    main()

"""How fast bars become decisions: the pure strategy, and the real actor pipeline with SQLite."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from actors import messages as m
from actors.metrics import Metrics, new_registry
from actors.strategy import StrategyActor
from configs.settings import load_settings
from strategies.bars import Bar
from strategies.scalp import ScalpParams, ScalpStrategy

START = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


def series(n: int, seed: int = 1) -> list[Bar]:
    rng = np.random.default_rng(seed)
    closes = 680 * np.exp(np.cumsum(rng.normal(0, 0.0006, n)))
    return [
        Bar(
            START + timedelta(minutes=i),
            c,
            c * 1.0004,
            c * 0.9996,
            c,
            float(rng.integers(1e4, 1e5)),
        )
        for i, c in enumerate(closes)
    ]


def bench_strategy(n: int) -> None:
    bars = series(n)
    strat = ScalpStrategy("SPY", ScalpParams())
    t0 = time.perf_counter()
    for b in bars:
        strat.on_bar(b, b.time.date())
    dt = time.perf_counter() - t0
    # Memory on a second pass: tracemalloc slows Python down, so it must not be in the timing.
    strat = ScalpStrategy("SPY", ScalpParams())
    tracemalloc.start()
    for b in bars:
        strat.on_bar(b, b.time.date())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"scalp strategy: {n} bars in {dt:.3f} s = {dt / n * 1e6:.1f} us/bar, peak memory {peak / 1024:.0f} KiB"
    )


class Sink:
    def __init__(self) -> None:
        self.n = 0

    def tell(self, msg) -> None:
        self.n += 1


def bench_actor(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(
            f"storage: {{path: {tmp}/b.sqlite}}\nlog: {{json_file: null}}\nscalp: {{cooldown_bars: 0}}\n"
        )
        settings = load_settings(path, environ={})
        ref = StrategyActor.start("SPY", settings, Metrics(new_registry(process=False)), Sink())
        bars = series(n)
        for b in bars[:60]:
            ref.tell(m.BarClosed(symbol="SPY", bar_size="1 min", bar=b, live=False))
        latencies = []
        t0 = time.perf_counter()
        for b in bars[60:]:
            sent = time.monotonic()
            ref.ask(
                m.BarClosed(symbol="SPY", bar_size="1 min", bar=b, live=True, received_mono=sent),
                timeout=10,
            )
            latencies.append(time.monotonic() - sent)
        dt = time.perf_counter() - t0
        ref.stop()
    k = len(latencies)
    q = statistics.quantiles(latencies, n=100)
    print(
        f"StrategyActor (journaled to SQLite): {k} live bars in {dt:.2f} s = {k / dt:.0f} bars/s; "
        f"bar-to-decision p50 {q[49] * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=50_000)
    parser.add_argument("--actor-bars", type=int, default=2_000)
    args = parser.parse_args()
    bench_strategy(args.bars)
    bench_actor(args.actor_bars)


if __name__ == "__main__":
    main()

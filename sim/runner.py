"""Run the simulated IB Gateway on its own event loop in a background thread, or from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sim.config import PacingOptions, SimOptions
from sim.faults import FaultInjector, Scenario, ScenarioError, describe_kinds
from sim.latency import PROFILES, LatencyOptions
from sim.market import MarketModel
from sim.pacing import Monotonic
from sim.protocol import EASTERN
from sim.server import SimServer

log = logging.getLogger(__name__)


class EmbeddedSim:
    """A SimServer on a private asyncio loop in a daemon thread; usable as a context manager."""

    def __init__(
        self,
        options: SimOptions | None = None,
        market: MarketModel | None = None,
        clock: Any = None,
        monotonic: Monotonic | None = None,
    ):
        self.options = options or SimOptions()
        extra = {} if monotonic is None else {"monotonic": monotonic}
        self.server = SimServer(self.options, market=market, clock=clock, **extra)
        self.port = 0
        self.host = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def clock(self) -> Any:
        return self.server.clock

    @property
    def market(self) -> MarketModel:
        return self.server.market

    @property
    def book(self) -> Any:
        return self.server.book

    @property
    def stats(self) -> dict[str, Any]:
        return self.server.stats

    @property
    def faults(self) -> FaultInjector:
        """Add faults from any thread: `sim.faults.add("history_stall", after=3)`."""
        return self.server.faults

    @property
    def violations(self) -> dict[str, int]:
        return dict(self.server.pacing.violations)

    def set_pacing(self, options: PacingOptions) -> None:
        self.call(self.server.set_pacing, options)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0) -> int:
        """Start listening and return the bound port (0 picks a free one)."""
        if self.running:
            return self.port
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.server.start(host, port))
            except BaseException as e:
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                try:
                    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                    for t in pending:
                        t.cancel()
                    if pending:
                        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                    loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="ib-sim", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("simulator did not start listening in time")
        if failure:
            self._thread.join(timeout)
            self._thread = None
            self._loop = None
            raise failure[0]
        self.port = self.server.port
        self.host = self.server.host
        return self.port

    def call(self, fn: Any, *args: Any, timeout: float = 5.0) -> Any:
        """Run a plain function on the simulator's loop and return its result (for tests and faults)."""
        if self._loop is None:
            raise RuntimeError("simulator is not running")

        async def wrapper() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server, close the loop and join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self.server.stop(), loop)
            try:
                fut.result(timeout)
            except Exception:
                log.exception("simulator did not stop cleanly")
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._loop = None

    def __enter__(self) -> EmbeddedSim:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _parse_start(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    # A time without a zone is exchange time, which is what an operator means by "09:30".
    return t.replace(tzinfo=EASTERN).astimezone(UTC) if t.tzinfo is None else t.astimezone(UTC)


def _parse_symbols(values: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        out += [s.strip().upper() for s in v.split(",") if s.strip()]
    return tuple(dict.fromkeys(out))


def build_parser() -> argparse.ArgumentParser:
    defaults = SimOptions()
    p = argparse.ArgumentParser(
        prog="optionsbot sim",
        description="Run the simulated IB Gateway for any TWS API client.",
        epilog="fault kinds for --scenario files:\n" + describe_kinds(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4002)
    # None means "not given", so a scenario's own settings apply unless overridden here.
    p.add_argument("--seed", type=int, default=None, help=f"default {defaults.seed}")
    p.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help=f"simulated seconds per real second (default {defaults.time_scale:g})",
    )
    p.add_argument(
        "--start",
        type=_parse_start,
        default=None,
        help="simulated start, ISO 8601; without a zone it is US/Eastern (default: the latest session open)",
    )
    p.add_argument("--symbols", nargs="+", default=None, help="e.g. SPY QQQ or SPY,QQQ")
    p.add_argument("--scenario", default=None, help="YAML file of faults (see sim/scenarios/)")
    p.add_argument(
        "--no-pacing", action="store_true", help="do not enforce IB's pacing rules and limits"
    )
    p.add_argument(
        "--latency",
        choices=sorted(PROFILES),
        default=None,
        help="how long answers take: instant (default) or realistic, like a real Gateway",
    )
    p.add_argument("--log-level", default="INFO")
    return p


def build_options(args: argparse.Namespace) -> SimOptions:
    """SimOptions from the command line: defaults, then the scenario file, then explicit flags."""
    options = SimOptions()
    explicit: dict[str, Any] = {
        "seed": args.seed,
        "time_scale": args.time_scale,
        "start": args.start,
        "symbols": _parse_symbols(args.symbols) if args.symbols else None,
    }
    if args.scenario:
        options = Scenario.load(args.scenario).apply(options, **explicit)
    else:
        options = replace(options, **{k: v for k, v in explicit.items() if v is not None})
    if args.no_pacing:
        options = replace(options, pacing=PacingOptions.off())
    if args.latency:
        options = replace(options, latency=LatencyOptions(profile=args.latency))
    return options


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        options = build_options(args)
    except (ScenarioError, ValueError) as e:
        print(f"optionsbot sim: bad scenario: {e}", file=sys.stderr)
        return 2
    sim = EmbeddedSim(options)
    # A standalone simulator stands in for a Gateway that is up before the service: its market
    # is ready before it listens, so the first requests measure the client, not our maths.
    sim.market.prepare(options.symbols)
    stop = threading.Event()
    # Signals only set a flag, so Ctrl-C at any moment (even mid-print) still ends in a clean stop.
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        try:
            port = sim.start(args.host, args.port)
        except OSError as e:
            print(f"cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
            return 1
        print(
            f"simulated IB Gateway listening on {args.host}:{port} "
            f"(simulated time {sim.clock.now().isoformat()}, x{options.time_scale:g})",
            flush=True,
        )
        scenario = options.scenario
        if scenario is not None:
            print(
                f"scenario {scenario.name or scenario.source}: {len(scenario.faults)} faults "
                f"({', '.join(f.label for f in scenario.faults) or 'none'})",
                flush=True,
            )
        print(f"pacing {'on' if options.pacing.enabled else 'off'}", flush=True)
        while not stop.wait(0.5):
            if not sim.running:
                break
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stats = _jsonable(sim.stats)
    print(json.dumps(stats, indent=2, sort_keys=True), flush=True)
    print(f"pacing violations: {json.dumps(stats['violations'], sort_keys=True)}", flush=True)
    print(f"faults applied: {json.dumps(stats['faults'], sort_keys=True)}", flush=True)
    return 0


def _jsonable(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        k: ({str(kk): vv for kk, vv in v.items()} if isinstance(v, dict) else v)
        for k, v in stats.items()
    }


if __name__ == "__main__":
    raise SystemExit(main())

"""From a closed bar to an order on the wire: the service beside the simplest script that could
do the same (bench/bare.py), on one simulator, timed by the simulator's own clock.

    python -m bench.latency [--symbols 1 10 50] [--minutes 6] [--scale 4] [--json]

For each symbol count, one simulator (its latency profile: `realistic` when the simulator has
one, else `instant`; `--profile` to choose) serves first the service (in gateway mode, with live
orders: the simulator is the only broker) and then the bare ib_async script, each for
`--minutes` simulated minutes after their warm-up. The simulator notes, on its clock:

- when each 1-minute bar ended, and when it sent each client the update that closed it (the
  next bar's first keepUpToDate update, or the minute's last 5-second bar);
- when each entry's placeOrder (a bracket's parent) arrived;
- every request each client made about that symbol in between: the round trips the entry
  waited on (requests of one kind sent together are one round trip; a streaming line still
  open when the placeOrder came is not one: nothing waited for it). `--json` lists, under
  `multi_round_trips`, the requests of every entry that waited on more than one.

It then cancels the entry (with its children), as a market that never trades at the limit
would, so that every symbol is free for its next signal. Latencies are in milliseconds of
Gateway time (the simulator's clock divided by its speed: the realistic profile's delays are
real seconds at any speed). `--json` prints one object per symbol count:
`{"symbols", "profile", "service": {"entries", "p50_ms", "p99_ms", "max_ms"}, "bare": {...},
"ratio_p99", "round_trips": {"service", "bare"}}`; the `*_from_update` figures count from the
closing update instead of the bar's end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from bench.soak import NAMES
from sim import protocol as P
from sim.clock import ScaledClock
from sim.config import SimOptions
from sim.protocol import In
from sim.runner import EmbeddedSim

SESSION_START = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # Friday 10:00 New York
SERVICE_CLIENT, BARE_CLIENT = 1, 77
# Requests an entry waits on (their answers): quotes, contract details, chains, bars.
ANSWERED = {
    In.REQ_MKT_DATA,
    In.REQ_CONTRACT_DATA,
    In.REQ_SEC_DEF_OPT_PARAMS,
    In.REQ_HISTORICAL_DATA,
    In.REQ_MARKET_RULE,
}


def profiles() -> tuple[str, ...]:
    if "latency" not in SimOptions.__dataclass_fields__:
        return ("instant",)  # a simulator without latency profiles answers at once
    try:
        from sim.latency import PROFILES  # type: ignore[import-not-found]
    except ImportError:
        return ("instant",)
    return tuple(PROFILES)


def with_profile(options: SimOptions, profile: str) -> SimOptions:
    if profile == "instant" and "latency" not in SimOptions.__dataclass_fields__:
        return options
    from sim.latency import LatencyOptions  # type: ignore[import-not-found]

    return replace(options, latency=LatencyOptions(profile=profile))


@dataclass
class Recorder:
    """What the simulator saw, stamped with its clock: closing updates, entries, requests."""

    clock: Any
    # (client, symbol, bar start) -> when the update closing that bar was sent
    closes: dict[tuple[int, str, datetime], datetime] = field(default_factory=dict)
    entries: list[tuple[int, str, datetime]] = field(default_factory=list)
    requests: dict[tuple[int, str], list[tuple[datetime, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # (client, symbol) -> for each of its requests above that opened a streaming line (not a
    # snapshot), its index there and its request id; (client, request id) -> when cancelled.
    lines: dict[tuple[int, str], dict[int, int]] = field(default_factory=lambda: defaultdict(dict))
    cancelled: dict[tuple[int, int], datetime] = field(default_factory=dict)

    def install(self, server: Any) -> None:
        send_updates, send_rt = server._send_bar_updates, server._send_real_time_bars
        dispatch, place = server.dispatch, server._h_place_order

        def bar_updates(s: Any, sub: Any, now: datetime) -> None:
            before = sub.last_bar_start
            send_updates(s, sub, now)
            if sub.last_bar_start > before:
                self.closes.setdefault((s.client_id, sub.contract.symbol, before), now)

        def real_time_bars(s: Any, sub: Any, now: datetime) -> None:
            before = sub.next_start
            send_rt(s, sub, now)
            after = sub.next_start
            if after > before and after.second == 0:
                minute = after - timedelta(minutes=1)
                self.closes.setdefault((s.client_id, sub.contract.symbol, minute), now)

        async def dispatched(s: Any, fields: list[str]) -> None:
            try:
                msg_id = int(fields[0])
            except (ValueError, IndexError):
                msg_id = -1
            if msg_id in ANSWERED and s.client_id is not None:
                now = self.clock.now()
                symbol = server._request_symbol(s, msg_id, fields, now)
                if symbol:
                    asked = self.requests[(s.client_id, symbol)]
                    if msg_id == In.REQ_MKT_DATA:
                        req = P.decode_req_mkt_data(fields)
                        if not req.snapshot:
                            self.lines[(s.client_id, symbol)][len(asked)] = req.req_id
                    asked.append((now, msg_id))
            elif msg_id == In.CANCEL_MKT_DATA and s.client_id is not None:
                req_id = P.Reader(fields, 2).int()
                self.cancelled.setdefault((s.client_id, req_id), self.clock.now())
            await dispatch(s, fields)

        def placed(s: Any, fields: list[str]) -> None:
            now = self.clock.now()
            req = P.decode_place_order(fields, s.version)
            if req.parent_id == 0 and req.action == "BUY" and not req.what_if:
                self.entries.append((s.client_id, req.contract.symbol, now))
            if not (req.parent_id and req.transmit):
                place(s, fields)
                return
            # The whole bracket is in: cancel it, as a market that never reaches the limit
            # would, so the symbol is free for its next signal. The handler matches the bracket
            # it has just activated: that match is skipped, or a marketable entry would fill
            # before any later cancel (at a fast simulated clock, always).
            book = server.book
            book.match = lambda *args, **kwargs: 0
            try:
                place(s, fields)
            finally:
                del book.match
            parent = book.get(s.client_id, req.parent_id)
            if parent is not None and not parent.is_done:
                book.cancel_by_system(parent, self.clock.now())

        server._send_bar_updates = bar_updates
        server._send_real_time_bars = real_time_bars
        server.dispatch = dispatched
        server._handlers[In.PLACE_ORDER] = placed  # the table holds the bound handlers

    def entry_requests(
        self, client: int, since: datetime, until: datetime, open_lines: bool = False
    ) -> list[tuple[str, datetime, list[int]]]:
        """Per entry of `client` placed in [since, until): its symbol, when its placeOrder came,
        and the kinds (In ids) of the requests about its symbol from its bar's end until then
        that it can have waited on. A streaming line still open when the placeOrder came is
        left out: nothing waited for it (the service's warm lines open as the spot moves, at the
        same bar close), while a snapshot, or a line watched and closed before, is counted."""
        out = []
        for c, symbol, at in self.entries:
            if c != client or not since <= at < until:
                continue
            end = at.replace(second=0, microsecond=0)  # the bar it answers ended here
            lines = self.lines[(client, symbol)]
            asked = []
            for i, (t, k) in enumerate(self.requests[(client, symbol)]):
                if not end <= t <= at:
                    continue
                line = lines.get(i)
                if (
                    not open_lines
                    and line is not None
                    and not self.cancelled.get((client, line), at) < at
                ):
                    continue
                asked.append(k)
            out.append((symbol, at, asked))
        return out

    def latencies(
        self, client: int, since: datetime, until: datetime, scale: float
    ) -> dict[str, Any]:
        from_end, from_update, rounds, slow = [], [], [], []
        for symbol, at, asked in self.entry_requests(client, since, until):
            # The bar it answers: the last one that ended before the order came.
            end = at.replace(second=0, microsecond=0)
            bar = end - timedelta(minutes=1)
            from_end.append((at - end).total_seconds() * 1000 / scale)
            closed = self.closes.get((client, symbol, bar))
            if closed is not None and closed <= at:
                from_update.append((at - closed).total_seconds() * 1000 / scale)
            rounds.append(round_trips(asked))
            if round_trips(asked) > 1:
                slow.append(f"{symbol} {at:%H:%M:%S}: " + " ".join(In(k).name for k in asked))
        # The same, with lines opened after the bar and still open at the placeOrder counted
        # too: a warm line the spot's move opened is not waited on, but a line the entry asked
        # for and the service then kept (as a warm line) was; the wire cannot tell them apart.
        wider = [
            round_trips(asked) for _, _, asked in self.entry_requests(client, since, until, True)
        ]
        return {
            "entries": len(from_end),
            **stats(from_end, ""),
            **stats(from_update, "_from_update"),
            "round_trips": max(rounds, default=0),
            "round_trips_mean": round(sum(rounds) / len(rounds), 2) if rounds else None,
            "round_trips_with_open_lines": max(wider, default=0),
            "round_trips_with_open_lines_mean": round(sum(wider) / len(wider), 2)
            if wider
            else None,
            # The requests of every entry that waited on more than one round trip.
            "multi_round_trips": slow,
        }


def why_not(reason: str) -> str:
    """A skipped entry's reason, short enough to count: the gate's reason up to its first
    comma ("connection: degraded"), an option skip by what its target strike (the first named)
    lacked ("no_option: stale", "no_option: quote request timed out")."""
    head, _, rest = reason.partition(": ")
    if head == "no_option" and rest:
        first = rest.split("; ", 1)[0]
        what = first.split(": ", 1)[1] if ": " in first else first
        return f"no_option: {what.split(':', 1)[0].split(' (', 1)[0].strip()}"
    return reason.split(",", 1)[0][:60]


def service_decisions(path: Path, since: datetime, until: datetime) -> dict[str, int]:
    """What became of the service's signals whose bar closed in [since, until): counts of
    entries placed and of every reason an entry was not (the journal's decisions rows)."""
    import sqlite3

    out: dict[str, int] = defaultdict(int)
    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "select stage, outcome, reason, detail from decisions"
            " where stage in ('risk_gate', 'option') order by id"
        ).fetchall()
    finally:
        con.close()
    for stage, outcome, reason, detail in rows:
        try:
            facts = json.loads(detail)
            bar = datetime.fromisoformat(facts["bar_time"])
        except (ValueError, KeyError, TypeError):
            continue
        if not since <= bar + timedelta(minutes=1) < until:
            continue
        if stage == "option" and facts.get("quote_asks", 0) > 1:
            # Its target failed and it asked the other strikes: a second quote round trip,
            # which the request log cannot tell from the first (both are market data lines).
            out["(asked the other strikes after the target)"] += 1
        if outcome == "approved":
            if stage == "option":
                out["placed"] += 1
            continue
        out[f"{stage}: {why_not(reason)}"] += 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def round_trips(kinds: list[int]) -> int:
    """Round trips in a sequence of request kinds: requests of one kind sent together are one."""
    return sum(1 for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def stats(values: list[float], suffix: str) -> dict[str, float | None]:
    if not values:
        return {f"p50_ms{suffix}": None, f"p99_ms{suffix}": None, f"max_ms{suffix}": None}
    return {
        f"p50_ms{suffix}": round(percentile(values, 0.5), 1),
        f"p99_ms{suffix}": round(percentile(values, 0.99), 1),
        f"max_ms{suffix}": round(max(values), 1),
    }


def service_settings(
    workdir: Path, port: int, symbols: list[str], stream: str, lines: int | None = None
) -> Any:
    from configs.settings import load_settings

    broker: dict[str, Any] = {"mode": "gateway", "host": "127.0.0.1", "port": port, "client_id": 1}
    if lines is not None:
        broker["max_market_data_lines"] = lines
    cfg = {
        "symbols": symbols,
        "dry_run": False,
        "live": {"enabled": True, "confirm": "I accept real orders"},
        "broker": broker,
        "data": {"stream": stream} if stream != "historical" else {},
        "scalp": {"cooldown_bars": 0},
        "whale": {"enabled": False},
        "risk": {
            "max_open_positions": 1000,
            "max_daily_loss_pct": 1.0,
            "no_entry_first_minutes": 0,
            "no_entry_last_minutes": 0,
            "kill_switch_file": str(workdir / "KILL"),
        },
        "storage": {"path": str(workdir / "latency.sqlite")},
        "metrics": {"enabled": False},
        "log": {"level": "ERROR", "json_file": str(workdir / "latency.jsonl")},
    }
    (workdir / "latency.yaml").write_text(yaml.safe_dump(cfg))
    # The simulator's account: it refuses orders for any other.
    return load_settings(
        workdir / "latency.yaml", environ={"OPTIONSBOT_BROKER__ACCOUNT": "DU123456"}
    )


def wait_until(clock: Any, t: datetime, poll: float = 0.05) -> None:
    while clock.now() < t:
        time.sleep(poll)


def run(
    symbols: int,
    minutes: float,
    scale: float,
    profile: str,
    stream: str = "historical",
    warmup_minutes: float = 2.0,
    lines: int | None = None,
) -> dict[str, Any]:
    from actors.system import System
    from configs.settings import Settings  # noqa: F401 - imported for the service's own checks

    names = NAMES[:symbols] if symbols <= len(NAMES) else [f"S{i:03d}" for i in range(symbols)]
    clock = ScaledClock(SESSION_START, scale=scale)
    options = with_profile(
        SimOptions(
            seed=11,
            time_scale=scale,
            start=SESSION_START,
            skip_closed=False,
            symbols=tuple(names),
            tick_interval=0.01,
        ),
        profile,
    )
    recorder = Recorder(clock)
    workdir = Path(tempfile.mkdtemp(prefix="latency-"))
    out: dict[str, Any] = {"symbols": symbols, "profile": profile, "stream": stream}
    with EmbeddedSim(options, clock=clock) as sim:
        recorder.install(sim.server)
        # (a) the service
        settings = service_settings(workdir, sim.port, list(names), stream, lines)
        system = System(settings, clock=clock, serve_metrics=False)
        system.start()
        try:
            since = clock.now() + timedelta(minutes=warmup_minutes)
            since = since.replace(second=0, microsecond=0)
            until = since + timedelta(minutes=minutes)
            wait_until(clock, until + timedelta(seconds=20))
        finally:
            system.stop()
        out["service"] = recorder.latencies(SERVICE_CLIENT, since, until, scale)
        out["service"]["decisions"] = service_decisions(Path(settings.storage.path), since, until)
        # (b) the bare script, on the same simulator
        from actors.orders.entry import option_params
        from actors.strategy import scalp_params
        from bench.bare import Bare

        bare = Bare(
            sim.port,
            list(names),
            clock.now,
            client_id=BARE_CLIENT,
            stream=stream,
            scalp=scalp_params(settings),
            cooldown_bars=0,
            options=option_params(settings),
        )
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(bare.start(), loop).result(timeout=600)
        since = (clock.now() + timedelta(minutes=1)).replace(second=0, microsecond=0)
        until = since + timedelta(minutes=minutes)
        wait_until(clock, until + timedelta(seconds=20))
        loop.call_soon_threadsafe(bare.stop)
        time.sleep(0.2)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        out["bare"] = recorder.latencies(BARE_CLIENT, since, until, scale)
        out["bare"]["skips"] = bare.skips
        out["violations"] = dict(sim.violations)
    s, b = out["service"], out["bare"]
    out["ratio_p99"] = round(s["p99_ms"] / b["p99_ms"], 2) if s["p99_ms"] and b["p99_ms"] else None
    out["ratio_p99_from_update"] = (
        round(s["p99_ms_from_update"] / b["p99_ms_from_update"], 2)
        if s["p99_ms_from_update"] and b["p99_ms_from_update"]
        else None
    )
    out["round_trips"] = {"service": s["round_trips"], "bare": b["round_trips"]}
    return out


def show(r: dict[str, Any], scale: float) -> str:
    lines = [
        f"{r['symbols']} symbols, profile {r['profile']}, stream {r['stream']}, x{scale:g}:"
        f" pacing/limit violations {r['violations'] or 0}"
    ]
    for who in ("service", "bare"):
        x = r[who]
        lines.append(
            f"  {who:8} {x['entries']:4} entries  from the bar's end: p50 {x['p50_ms']} ms,"
            f" p99 {x['p99_ms']} ms, max {x['max_ms']} ms;  from the closing update: p50"
            f" {x['p50_ms_from_update']} ms, p99 {x['p99_ms_from_update']} ms;"
            f"  round trips per entry: at most {x['round_trips']}"
            f" (mean {x['round_trips_mean']}; counting lines left open:"
            f" {x['round_trips_with_open_lines']}, mean {x['round_trips_with_open_lines_mean']})"
        )
    lines.append(f"  skipped by the bare script: {r['bare'].get('skips')}")
    lines.append(f"  the service's signals (its journal): {r['service'].get('decisions')}")
    lines.append(
        f"  ratio p99 service/bare: {r['ratio_p99']} (from the closing update:"
        f" {r['ratio_p99_from_update']})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--symbols", type=int, nargs="+", default=[1, 10, 50])
    p.add_argument("--minutes", type=float, default=6.0, help="simulated minutes measured per side")
    p.add_argument("--scale", type=float, default=4.0, help="simulated seconds per real second")
    known = profiles()
    p.add_argument(
        "--profile", choices=known, default="realistic" if "realistic" in known else "instant"
    )
    p.add_argument("--stream", choices=("historical", "realtime"), default="historical")
    p.add_argument(
        "--lines",
        type=int,
        help="the service's market data lines (broker.max_market_data_lines; IB's 100 by"
        " default): fewer leave symbols without warm quote lines at a small symbol count",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.profile != "realistic":
        print(
            f"latency profile: {args.profile} (this simulator has {', '.join(known)})",
            file=sys.stderr,
        )
    for n in args.symbols:
        r = run(n, args.minutes, args.scale, args.profile, args.stream, lines=args.lines)
        print(json.dumps(r) if args.json else show(r, args.scale), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

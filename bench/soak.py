"""A simulated trading day for many symbols through the Gateway's bad days, with pacing enforced;
or, with --days N, the service's memory over N trading days.

Runs the whole service on the embedded simulator with a fault scenario (default: the bad day:
farm flaps, an entitlement gap, history stalls and delays, outages with data lost and kept,
order trouble, clock jumps, a Gateway restart with a quick-reconnect 326, a dropped socket),
then prints what happened: pacing violations, breaker trips, reconnects, and every 1-minute bar
the service delivered compared with the simulator's own bars for the session.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from actors.cli import TRACE_ENV
from actors.hours import MarketHours
from actors.metrics import Metrics, new_registry
from actors.system import System
from configs.settings import load_settings
from storage import open_db

ROOT = Path(__file__).resolve().parents[1]
BAD_DAY = ROOT / "sim" / "scenarios" / "bad_day.yaml"
SESSION = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)  # Friday 09:30 New York
NEW_YORK = ZoneInfo("America/New_York")
NAMES = (
    "SPY QQQ IWM AAPL MSFT NVDA AMZN GOOGL META TSLA AMD NFLX INTC CSCO ORCL CRM ADBE QCOM TXN AVGO "
    "JPM BAC WFC C GS MS V MA PYPL XOM CVX COP SLB KO PEP WMT COST HD LOW NKE DIS MCD SBUX BA CAT "
    "DE GE F GM UBER"
    # Beyond 50: the next large caps, for the 100-symbol day (real-time bars past 45).
    " ABBV ABT ACN AIG AMAT AMGN AXP BK BKNG BLK BMY CB CHTR CL CMCSA COF CVS DHR DUK EMR EXC"
    " FDX GD GILD HON IBM INTU ISRG JNJ LIN LLY LMT MDLZ MDT MET MMM MO MRK NEE PFE PG PM RTX"
    " SCHW SO T TGT TMO UNH UNP"
).split()


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            head = line.split(" ", 1)[0]
            if head == name or head.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def soak(
    symbols: int = 50,
    scale: float = 150,
    scenario: Path | None = BAD_DAY,
    workdir: Path | None = None,
    seed: int = 11,
    minutes: int | None = None,
    trading: bool = True,
    rate: float | None = None,
    log_level: str = "WARNING",
) -> dict:
    """`minutes`: only the session's first minutes (the suite's short day), else all of it."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="soak-"))
    hours = MarketHours()
    session = hours.session_at(SESSION)
    cfg = {
        "symbols": NAMES[:symbols],
        "sim": {
            "seed": seed,
            "time_scale": scale,
            "start": session.open.isoformat(),
            "skip_closed": False,
            "scenario": str(scenario) if scenario else None,
            "bar_update_s": 20,
        },
        "data": {"record_bars": True},
        # Without trading, only the data path: at 60x, 100 symbols' entries send 60 times a
        # real day's quote requests, and keep the message gate full all day.
        **({} if trading else {"scalp": {"enabled": False}, "whale": {"enabled": False}}),
        # Timeouts and the breaker's cooldown are real seconds; at 120x a 60 s timeout would be
        # two simulated hours. These keep a stalled request's cost near a real Gateway's.
        "broker": {
            "timeouts_s": {"historical": 15},
            "breaker_cooldown_s": 10,
            # A slower gate, to see what the day costs with more margin under IB's 50.
            **({"max_messages_per_second": rate, "message_burst": 5} if rate else {}),
        },
        "storage": {"path": str(workdir / "soak.sqlite")},
        "metrics": {"port": 0},
        "risk": {"kill_switch_file": str(workdir / "KILL")},
        "log": {"level": log_level, "json_file": str(workdir / "soak.jsonl")},
    }
    (workdir / "soak.yaml").write_text(yaml.safe_dump(cfg))
    settings = load_settings(workdir / "soak.yaml", environ={})
    from actors.pacing import stream_kinds

    realtime = stream_kinds(
        settings.symbols, settings.data.stream, settings.broker.max_open_historical
    )
    metrics = Metrics(new_registry())
    system = System(settings, metrics=metrics)
    close = session.close if minutes is None else session.open + timedelta(minutes=minutes)
    t0 = time.monotonic()
    system.start()
    cold_start_s = cold_start_requests = None
    stale_seen: set[str] = set()
    try:
        data = system.refs["data"].proxy()
        real_budget = (close - session.open).total_seconds() / scale * 2 + 60
        end = close + timedelta(minutes=1)
        while (
            system.clock.now() < end
            and time.monotonic() - t0 < real_budget
            and not system.failed.is_set()
        ):
            if cold_start_s is None and all(f.ready for f in data.feeds.get().values()):
                # Every symbol's 1-minute and 1-hour history delivered: the cold start.
                cold_start_s = time.monotonic() - t0
                cold_start_requests = sum(system.sim.stats["requests"].values())
            stale_seen |= {sym for sym, stale in data.stale.get().items() if stale}
            time.sleep(0.1 if cold_start_s is None else 0.5)
        # A symbol that never had a bar is stale too (DataActor's clock starts at its first).
        stale_seen |= {
            sym for (sym, size), f in data.feeds.get().items() if size == "1 min" and f.last is None
        }
        # After the close: give the service time to recover from the day's last faults and fill
        # its gaps (the simulator's restart downtime is in real seconds: long at this speed).
        last_minute = (close - timedelta(minutes=1)).isoformat()
        db = open_db(settings.storage.path)
        recovery_deadline = time.monotonic() + 90
        while time.monotonic() < recovery_deadline and not system.failed.is_set():
            done = db.execute(
                "select count(distinct symbol) from bars where bar_size = '1 min' and time >= ?",
                [last_minute],
            ).fetchone()[0]
            if done == len(settings.symbols):
                break
            time.sleep(0.5)
        db.close()
        from prometheus_client import generate_latest

        text = generate_latest(metrics.registry).decode()
        violations = dict(system.sim.violations) if system.sim else {}
        faults = system.sim.stats.get("faults", {}) if system.sim else {}
        market = system.sim.market
        connection = system.refs["connection"].proxy()
        final_state = connection.model.get(timeout=5).state
        streams_open = connection.open_stream_count().get(timeout=10)
    finally:
        system.stop()
    elapsed = time.monotonic() - t0

    db = open_db(settings.storage.path)
    lost, extra, expected_total, per_symbol = 0, 0, 0, {}
    lost_at: dict[str, int] = {}  # UTC minute -> symbols that lost it
    # Every bar of the session, the last one too (delivered from the stream after the close).
    last_checked = close
    for sym in settings.symbols:
        expected = {
            b.time
            for b in market.bars(sym, session.open, last_checked, 60)
            if b.time < last_checked
        }
        got = {
            datetime.fromisoformat(r["time"])
            for r in db.query(
                "select time from bars where symbol = ? and bar_size = '1 min' and time >= ? and time < ?",
                [sym, session.open.isoformat(), last_checked.isoformat()],
            )
        }
        expected_total += len(expected)
        lost += len(expected - got)
        for t in sorted(expected - got):
            lost_at[t.isoformat()[11:16]] = lost_at.get(t.isoformat()[11:16], 0) + 1
        extra += len(got - expected)
        per_symbol[sym] = len(got)
    delivered = sample(text, "optionsbot_bars_total", bar_size="1 min")
    recorded = db.execute("select count(*) from bars where bar_size = '1 min'").fetchone()[0]
    transitions = {}
    for line in text.splitlines():
        if line.startswith("optionsbot_connection_transitions_total{"):
            dest = line.split('dest="')[1].split('"')[0]
            trig = line.split('trigger="')[1].split('"')[0]
            transitions[f"{trig}->{dest}"] = transitions.get(f"{trig}->{dest}", 0) + float(
                line.rsplit(" ", 1)[1]
            )
    b = settings.broker
    return {
        "symbols": symbols,
        "streams": {
            "historical": sum(1 for v in realtime.values() if not v),
            "realtime": sum(realtime.values()),
        },
        # From start() to every symbol's history delivered, beside the least the message gate
        # allows for the requests it took (a burst, then max_messages_per_second); IB's own
        # limit is 50 a second.
        "cold_start_s": round(cold_start_s, 2) if cold_start_s is not None else None,
        "cold_start_requests": cold_start_requests,
        "cold_start_gate_bound_s": round(
            max(0, (cold_start_requests or 0) - b.message_burst) / b.max_messages_per_second, 2
        ),
        "stale_symbols": sorted(stale_seen),
        "simulated_minutes": round((close - session.open).total_seconds() / 60),
        "real_seconds": round(elapsed, 1),
        "failed": system.failure or None,
        "final_connection_state": final_state,
        "streams_open_at_end": streams_open,
        "pacing_violations": violations,
        "faults_applied": faults,
        "breaker_trips": sample(text, "optionsbot_breaker_trips_total"),
        "reconnects": sample(text, "optionsbot_reconnects_total"),
        "connection_transitions": {k: int(v) for k, v in sorted(transitions.items()) if v},
        "request_timeouts": sample(text, "optionsbot_request_timeouts_total"),
        "bars_expected": expected_total,
        "bars_lost": lost,
        "bars_lost_by_minute_utc": dict(sorted(lost_at.items())[:20]),
        "bars_unexpected": extra,
        "bars_delivered_twice": int(delivered - recorded),
        "min_bars_per_symbol": min(per_symbol.values()),
        "max_bars_per_symbol": max(per_symbol.values()),
        "signals": db["signals"].count,
        "orders": db["orders"].count,
        "fills": db["fills"].count,
        "workdir": str(workdir),
    }


# -- days: the service's memory over a week ---------------------------------------------------
# Wednesday 09:30 New York: five sessions reach the next Tuesday, so a weekend is crossed.
WEEK = datetime(2026, 11, 18, 14, 30, tzinfo=UTC)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> str:
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def start_simulator(args: list[str], names, env: dict[str, str], log_path: Path | None = None):
    """A standalone simulator process (its memory is not the service's) and its port; with
    `log_path`, its INFO log (pacing violations) is kept there."""
    import subprocess
    import sys

    level = "INFO" if log_path else "WARNING"
    sim = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "sim", "--port", "0", "--log-level", level]
        + args
        + ["--symbols", *names],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = sim.stdout.readline()
    if "listening on" not in line:
        sim.kill()
        raise RuntimeError(f"the simulator did not start: {line}")
    threading_drain(sim.stdout, log_path)
    return sim, int(line.split("listening on ")[1].split(" ")[0].rsplit(":", 1)[1])


def start_service(workdir: Path, cfg: dict, env: dict[str, str]):
    """The service as its own process on `cfg` (written to workdir/soak.yaml), its output in
    workdir/service.log; returns the process and the monotonic and wall-clock times of its start
    (the simulator's log is in wall-clock time)."""
    import subprocess
    import sys

    (workdir / "soak.yaml").write_text(yaml.safe_dump(cfg))
    with open(workdir / "service.log", "w") as log_file:  # the child keeps its own handle
        t0, wall0 = time.monotonic(), time.time()
        service = subprocess.Popen(
            [sys.executable, "-m", "actors.cli", "run", "--config", str(workdir / "soak.yaml")],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return service, t0, wall0


def sim_stats(sim_text: str) -> dict:
    """The statistics a standalone simulator prints as JSON when it stops (its log's text)."""
    start_at = sim_text.index("\n{") + 1
    return json.loads(sim_text[start_at : sim_text.index("\n}", start_at) + 2])


def stale_now(metrics_text: str) -> set[str]:
    """The symbols the service's /metrics says are stale at this moment."""
    out = set()
    for line in metrics_text.splitlines():
        if line.startswith("optionsbot_data_stale{") and float(line.rsplit(" ", 1)[1]) >= 1:
            out.add(line.split('symbol="')[1].split('"')[0])
    return out


def lost_bars(db, names, start: datetime, end: datetime, seed: int | None = None) -> dict:
    """Every 1-minute bar the simulator's market (same seed and symbols as the standalone
    simulator's) made in [start, end), against what the service recorded."""
    from sim.config import SimOptions
    from sim.market import MarketModel, default_spec

    model = MarketModel(
        seed=SimOptions().seed if seed is None else seed, specs=[default_spec(n) for n in names]
    )
    lost, expected_total, per_symbol = 0, 0, {}
    for sym in names:
        expected = {b.time for b in model.bars(sym, start, end, 60) if b.time < end}
        got = {
            datetime.fromisoformat(r[0])
            for r in db.execute(
                "select time from bars where symbol = ? and bar_size = '1 min'"
                " and time >= ? and time < ?",
                [sym, start.isoformat(), end.isoformat()],
            )
        }
        expected_total += len(expected)
        lost += len(expected - got)
        per_symbol[sym] = len(expected & got)
    return {
        "expected": expected_total,
        "lost": lost,
        "min_per_symbol": min(per_symbol.values()) if per_symbol else 0,
    }


def memory_growth(prefix: Path, days: int, top: int = 12) -> list[dict] | None:
    """What grew from the second day's snapshot to the last (the first holds the start-up's
    one-off allocations): the top allocation sites by growth, each with its traceback."""
    import tracemalloc

    if days < 3:
        return None
    first, last = Path(f"{prefix}.2"), Path(f"{prefix}.{days}")
    for _ in range(100):  # the service writes each snapshot from its signal handler
        if last.exists() and first.exists():
            break
        time.sleep(0.1)
    if not (first.exists() and last.exists()):
        return None
    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<*")]
    a = tracemalloc.Snapshot.load(str(first)).filter_traces(keep)
    b = tracemalloc.Snapshot.load(str(last)).filter_traces(keep)
    return [
        {
            "kib": round(d.size_diff / 1024, 1),
            "blocks": d.count_diff,
            "where": [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}" for f in d.traceback],
        }
        for d in b.compare_to(a, "traceback")[:top]
    ]


def stop_processes(service, sim) -> None:
    """The service first (SIGINT: a clean stop), then its simulator."""
    import subprocess

    if service is not None and service.poll() is None:
        service.send_signal(2)
        try:
            service.wait(60)
        except subprocess.TimeoutExpired:
            service.kill()
    sim.terminate()
    try:
        sim.wait(30)
    except subprocess.TimeoutExpired:
        sim.kill()


def soak_days(
    days: int = 5,
    symbols: int = 50,
    scale: float = 300,
    workdir: Path | None = None,
    real_budget_s: float | None = None,
    trading: bool = True,
    rate: float | None = None,
    log_level: str = "WARNING",
    record_bars: bool = True,
    trace_memory: bool = False,
) -> dict:
    """The service in gateway mode (its own process, as on a Pi) against a standalone simulator
    (another process, so its memory is not counted and its reads are not delayed by the
    service's work), for `days` trading sessions from a Wednesday, nights and the weekend passed
    as the Gateway's clock jumps over them, with the default message rate. The service's
    resident memory is read from /proc at the end of each session; every 1-minute bar is checked
    against the simulator's market, and every pacing violation it counted is reported.
    """
    workdir = workdir or Path(tempfile.mkdtemp(prefix="soak-days-"))
    hours = MarketHours()
    sessions = []
    t = WEEK
    while len(sessions) < days:
        s = hours.session_at(t) or hours.session_at(hours.next_open(t))
        sessions.append(s)
        t = hours.next_open(s.close)
    names = NAMES[:symbols]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIONSBOT_")}
    sim_log = workdir / "sim.log"
    sim, port = start_simulator(
        ["--time-scale", str(scale), "--start", sessions[0].open.isoformat()], names, env, sim_log
    )
    if trace_memory:
        env = {**env, TRACE_ENV: str(workdir / "memory")}
    service = None
    try:
        metrics_port = _free_port()
        cfg = {
            "symbols": names,
            "broker": {
                "mode": "gateway",
                "port": port,
                "clock_scale": scale,
                "clock_sync_s": 2,
                "timeouts_s": {"historical": 15},
                "breaker_cooldown_s": 10,
                **({"max_messages_per_second": rate} if rate else {}),
            },
            "storage": {"path": str(workdir / "soak.sqlite"), "backup_dir": None},
            "metrics": {"port": metrics_port},
            "risk": {"kill_switch_file": str(workdir / "KILL")},
            "log": {"level": log_level, "json_file": str(workdir / "soak.jsonl")},
            "data": {"record_bars": record_bars},
            **({} if trading else {"scalp": {"enabled": False}, "whale": {"enabled": False}}),
        }
        service, t0, _ = start_service(workdir, cfg, env)
        budget = real_budget_s or (days * 390 * 60 / scale * 3 + 300)
        per_day: list[dict] = []
        peak, samples = 0, 0
        stale_seen: set[str] = set()
        while len(per_day) < days and time.monotonic() - t0 < budget:
            if service.poll() is not None:
                break
            time.sleep(1.0)
            kib = rss_kib(service.pid)
            peak = max(peak, kib)
            try:
                text = _scrape(metrics_port)
            except OSError:
                continue
            now = sample(text, "optionsbot_clock_timestamp_seconds")
            stale_seen |= stale_now(text)
            samples += 1
            day = sessions[len(per_day)]
            # Near the end of the session: the day's work is done and nothing was freed yet.
            if now >= (day.close - timedelta(minutes=3)).timestamp():
                per_day.append(
                    {
                        "date": day.date.isoformat(),
                        "rss_mb": round(kib / 1024, 1),
                        "clock": datetime.fromtimestamp(now, UTC),
                    }
                )
                if trace_memory:
                    os.kill(service.pid, signal.SIGUSR2)
        elapsed = time.monotonic() - t0
        exit_code = service.poll()
    finally:
        stop_processes(service, sim)
    db = open_db(workdir / "soak.sqlite")
    rss = [d["rss_mb"] for d in per_day]
    for d, session in zip(per_day, sessions, strict=False):
        # Each day to two minutes before it was measured: its last bars may still be on the way.
        end = d.pop("clock") - timedelta(minutes=2)
        if record_bars:
            d["bars"] = lost_bars(db.conn, names, session.open, end)
    stats = sim_stats((sim_log).read_text(errors="replace"))
    growth = memory_growth(workdir / "memory", len(per_day)) if trace_memory else None
    lost = sum(d.get("bars", {}).get("lost", 0) for d in per_day)
    return {
        **({"traced_growth_second_to_last_day": growth} if growth is not None else {}),
        **(
            {
                "traced_warning": "the traced service fell behind (bars lost): the growth is its"
                " backlog, not a leak; trace fewer symbols or a lower --scale"
            }
            if trace_memory and lost
            else {}
        ),
        "days": days,
        "symbols": symbols,
        "scale": scale,
        "real_seconds": round(elapsed, 1),
        "service_exit": exit_code,
        "rss_by_day": per_day,
        "rss_peak_mb": round(peak / 1024, 1),
        "growth_day2_to_last_pct": (
            round((rss[-1] - rss[1]) / rss[1] * 100, 2) if len(rss) >= 3 else None
        ),
        "bars_lost": sum(d["bars"]["lost"] for d in per_day) if record_bars else None,
        "stale_symbols": sorted(stale_seen),
        "pacing_violations": stats["violations"],
        "signals": db["signals"].count,
        "orders": db["orders"].count,
        "decisions": db["decisions"].count,
        "workdir": str(workdir),
    }


# A weekend of the Gateway's routines, in New York time: Friday's close, the daily restart and
# the nightly reset every night, the Sunday re-login, then Monday's open.
ROUTINES_FROM = "2026-11-20T15:30:00"  # Friday, half an hour before the close
ROUTINES_UNTIL = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)  # Monday 10:30 ET


def routines_scenario(restart_real_s: float) -> dict:
    """sim/scenarios/nightly_reset.yaml, daily_restart.yaml and weekly_reauth.yaml in one file,
    nights not skipped. The restart's parts are real seconds in the simulator; at a high clock
    scale they are kept short so that they fit the service's 15-minute window."""
    return {
        "name": "routines",
        "description": "Friday close to Monday open with every Gateway routine",
        "skip_closed": False,
        "faults": [
            {
                "kind": "server_reset",
                "name": "nightly server reset",
                "at": "2026-11-21T00:15:00",
                "duration": "1h30m",
                "repeat": "1d",
                "style": "farms",
                "flaps": 3,
            },
            {
                "kind": "gateway_restart",
                "name": "daily auto-restart",
                "at": "2026-11-20T23:45:00",
                "repeat": "1d",
                "lost_seconds": restart_real_s,
                "down_seconds": restart_real_s,
            },
            {
                "kind": "reauth_required",
                "name": "weekly login",
                "at": "2026-11-22T01:00:00",
                "duration": "8h",
            },
        ],
    }


def soak_routines(symbols: int = 10, scale: float = 1200, workdir: Path | None = None) -> dict:
    """The service (gateway mode, its own process) from Friday's close to Monday's open through
    every Gateway routine, with the default broker.routines. Expected: no breaker trip, each
    routine said once, connected with every stream open again by Monday, and Monday's bars all
    there."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="soak-routines-"))
    # 1100 for 5 simulated minutes, then 5 down: the 23:45 restart ends inside the 23:40-23:55
    # window of the default broker.routines.
    restart_real_s = round(min(60.0, 300 / scale), 2)
    scenario = workdir / "routines.yaml"
    scenario.write_text(yaml.safe_dump(routines_scenario(restart_real_s)))
    names = NAMES[:symbols]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIONSBOT_")}
    sim, port = start_simulator(
        ["--time-scale", str(scale), "--start", ROUTINES_FROM, "--scenario", str(scenario)],
        names,
        env,
    )
    service = None
    metrics: dict[str, float] = {}
    try:
        metrics_port = _free_port()
        cfg = {
            "symbols": list(names),
            "broker": {
                "mode": "gateway",
                "port": port,
                "clock_scale": scale,
                "clock_sync_s": 2,
                "connect_timeout_s": 3,
                "timeouts_s": {"historical": 15},
                "breaker_cooldown_s": 10,
            },
            "storage": {"path": str(workdir / "soak.sqlite"), "backup_dir": None},
            "metrics": {"port": metrics_port},
            "risk": {"kill_switch_file": str(workdir / "KILL")},
            "log": {"level": "INFO", "json_file": None},
            "data": {"record_bars": True},
        }
        service, t0, _ = start_service(workdir, cfg, env)
        span = (ROUTINES_UNTIL - datetime.fromisoformat(ROUTINES_FROM + "-05:00")).total_seconds()
        budget = span / scale * 2 + 120
        text = ""
        while time.monotonic() - t0 < budget and service.poll() is None:
            time.sleep(1.0)
            try:
                text = _scrape(metrics_port)
            except OSError:
                continue
            if sample(text, "optionsbot_clock_timestamp_seconds") >= ROUTINES_UNTIL.timestamp():
                break
        elapsed = time.monotonic() - t0
        for name in (
            "optionsbot_breaker_trips_total",
            "optionsbot_reconnects_total",
            "optionsbot_data_stale",
        ):
            metrics[name] = sample(text, name)
        metrics["connected"] = sample(
            text, "optionsbot_connection_state", optionsbot_connection_state="connected"
        )
        exit_code = service.poll()
    finally:
        stop_processes(service, sim)
    log_text = (workdir / "service.log").read_text(errors="replace")
    said = {
        r: log_text.count(f"during the Gateway's {r}")
        for r in ("server_reset", "gateway_restart", "weekly_reauth")
    }
    db = open_db(workdir / "soak.sqlite")
    # Monday 09:30 to 10:30 ET: every symbol's 60 minutes, after a weekend of routines.
    monday = db.execute(
        "select symbol, count(*) from bars where bar_size = '1 min' and live = 1"
        " and time >= '2026-11-23T14:30' and time < '2026-11-23T15:30' group by symbol"
    ).fetchall()
    got = dict(monday)
    return {
        "symbols": symbols,
        "scale": scale,
        "real_seconds": round(elapsed, 1),
        "service_exit": exit_code,
        "breaker_trips": metrics.get("optionsbot_breaker_trips_total"),
        "reconnects": metrics.get("optionsbot_reconnects_total"),
        "connected_at_end": metrics.get("connected") == 1,
        "routines_said": said,
        "stale_symbols_at_end": metrics.get("optionsbot_data_stale"),
        "monday_first_hour_bars": {n: got.get(n, 0) for n in names},
        "workdir": str(workdir),
    }


def threading_drain(stream, path: Path | None = None) -> None:
    """Read a child's output in the background so a full pipe never blocks it."""
    import threading

    def drain() -> None:
        with open(path or os.devnull, "a") as out:
            for line in stream:
                out.write(line)
                out.flush()

    threading.Thread(target=drain, daemon=True).start()


def soak_cold_start(
    symbols: int = 50,
    rate: float | None = None,
    burst: int | None = None,
    workdir: Path | None = None,
):
    """The service and the simulator as two processes, as beside a real Gateway (the embedded
    simulator shares the service's interpreter and reads its messages late and bunched): from the
    service's start to every symbol's 1-minute and 1-hour history delivered, with the default
    settings (or `rate` and `burst`), and every pacing violation the simulator saw meanwhile."""

    workdir = workdir or Path(tempfile.mkdtemp(prefix="soak-cold-"))
    names = NAMES[:symbols]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIONSBOT_")}
    sim_log = workdir / "sim.log"
    start = (SESSION + timedelta(hours=2)).astimezone(NEW_YORK).strftime("%Y-%m-%dT%H:%M:%S")
    sim, port = start_simulator(["--time-scale", "1", "--start", start], names, env, sim_log)
    service = None
    try:
        cfg = {
            "symbols": list(names),
            "broker": {
                "mode": "gateway",
                "port": port,
                "connect_timeout_s": 5,
                # The service follows the simulator's clock (its session, not today's date).
                "clock_sync_s": 2,
                **({"max_messages_per_second": rate} if rate else {}),
                **({"message_burst": burst} if burst else {}),
            },
            "storage": {"path": str(workdir / "soak.sqlite"), "backup_dir": None},
            "metrics": {"port": _free_port()},
            "risk": {"kill_switch_file": str(workdir / "KILL")},
            "scalp": {"enabled": False},
            "whale": {"enabled": False},
            # Without the option chains and warm quotes that follow each symbol's backfill (at a
            # lower priority in the gate), the simulator's count is the cold start's alone, and
            # IB's bound is computed on it. With them the backfills end no later (3.57 and 3.58 s
            # in two runs), but 90 more requests are counted by then.
            "options": {"warm_quotes": False},
            # Its JSON lines carry milliseconds: the last backfill's own time, not our polling's.
            "log": {"level": "INFO", "json_file": str(workdir / "service.jsonl")},
        }
        (workdir / "soak.yaml").write_text(yaml.safe_dump(cfg))
        settings = load_settings(workdir / "soak.yaml", environ={})
        log_path = workdir / "service.log"
        service, t0, wall0 = start_service(workdir, cfg, env)
        cold = None
        while time.monotonic() - t0 < 120 and service.poll() is None:
            text = log_path.read_text(errors="replace")
            if text.count("bars of history delivered (backfill)") >= 2 * len(names):
                cold = time.monotonic() - t0
                break
            time.sleep(0.05)
        time.sleep(2.0)  # a late violation would show in the logs by now
    finally:
        stop_processes(service, sim)
    text = (workdir / "service.log").read_text(errors="replace")
    sim_text = sim_log.read_text(errors="replace")
    stats = sim_stats(sim_text)
    requests = sum(stats["requests"].values())
    # The simulator logs, in wall-clock time, the moment the service's API session started: from
    # there on, only the service's requests and IB's limits count.
    started = re.search(r"^(\S+ \S+) INFO .*: API started", sim_text, re.M)
    api_at = datetime.strptime(started.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    if cold is not None:
        delivered = [
            datetime.fromisoformat(r["ts"]).timestamp()
            for r in map(json.loads, (workdir / "service.jsonl").read_text().splitlines())
            if "bars of history delivered (backfill)" in r.get("msg", "")
        ]
        cold = max(delivered) - wall0
    b = settings.broker
    return {
        "symbols": symbols,
        "max_messages_per_second": b.max_messages_per_second,
        "message_burst": b.message_burst,
        # From the process's start (about a second of it is Python importing the service).
        "cold_start_s": round(cold, 2) if cold is not None else None,
        "from_connect_s": round(cold - (api_at - wall0), 2) if cold is not None else None,
        "requests": requests,
        "gate_bound_s": round(max(0, requests - b.message_burst) / b.max_messages_per_second, 2),
        "ib_bound_s": round(requests / 50, 2),  # IB's 50 messages a second, nothing else
        "pacing_violations": stats["violations"],
        "timeouts": text.count("timed out"),
        "breaker_opened": text.count("-> breaker_open"),
        "workdir": str(workdir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--scale", type=float, default=None, help="default 150; with --days 300")
    parser.add_argument(
        "--scenario", type=Path, default=BAD_DAY, help="a fault scenario, or 'none' for a calm day"
    )
    parser.add_argument("--minutes", type=int, default=None, help="only the session's first N")
    parser.add_argument("--no-trading", action="store_true", help="the data path alone")
    parser.add_argument(
        "--no-record-bars", action="store_true", help="with --days: bars not kept, not checked"
    )
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="with --days: tracemalloc in the service, the top growth from day 2 to the last"
        " (about 3x slower: 50 symbols fell behind even at 100x)",
    )
    parser.add_argument("--rate", type=float, default=None, help="broker.max_messages_per_second")
    parser.add_argument("--burst", type=int, default=None, help="broker.message_burst")
    parser.add_argument(
        "--log-level", default="WARNING", help="the service's (INFO: every request)"
    )
    parser.add_argument(
        "--days", type=int, default=0, help="trading days of memory use (gateway mode)"
    )
    parser.add_argument(
        "--cold-start",
        action="store_true",
        help="the service and the simulator as two processes: start to all history delivered",
    )
    parser.add_argument(
        "--routines",
        action="store_true",
        help="Friday close to Monday open through the Gateway's nightly reset, daily restart and"
        " weekly re-login (gateway mode)",
    )
    args = parser.parse_args()
    import logging

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s %(message)s"
    )
    if args.cold_start:
        result = soak_cold_start(args.symbols, args.rate, args.burst)
    elif args.routines:
        result = soak_routines(min(args.symbols, 50), args.scale or 1200)
    elif args.days:
        result = soak_days(
            args.days,
            args.symbols,
            args.scale or 300,
            trading=not args.no_trading,
            rate=args.rate,
            log_level=args.log_level,
            record_bars=not args.no_record_bars,
            trace_memory=args.trace_memory,
        )
    else:
        scenario = None if str(args.scenario) == "none" else args.scenario
        result = soak(
            args.symbols,
            args.scale or 150,
            scenario,
            minutes=args.minutes,
            trading=not args.no_trading,
            rate=args.rate,
            log_level=args.log_level,
            record_bars=not args.no_record_bars,
        )
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()

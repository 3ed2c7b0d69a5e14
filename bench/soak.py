"""A simulated trading day for many symbols through the Gateway's bad days, with pacing enforced.

Runs the whole service on the embedded simulator with a fault scenario (default: the bad day:
farm flaps, an entitlement gap, history stalls and delays, outages with data lost and kept,
order trouble, clock jumps, a Gateway restart with a quick-reconnect 326, a dropped socket),
then prints what happened: pacing violations, breaker trips, reconnects, and every 1-minute bar
the service delivered compared with the simulator's own bars for the session.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from actors.hours import MarketHours
from actors.metrics import Metrics, new_registry
from actors.system import System
from configs.settings import load_settings
from storage import open_db

ROOT = Path(__file__).resolve().parents[1]
BAD_DAY = ROOT / "sim" / "scenarios" / "bad_day.yaml"
SESSION = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)  # Friday 09:30 New York
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
            # The embedded simulator counts messages as its loop reads them, and at a
            # 100-symbol start this process keeps that loop waiting: a slower gate keeps the
            # bunched reads under 50 a second (a Gateway is a process of its own).
            **({"max_messages_per_second": rate, "message_burst": 5} if rate else {}),
        },
        "storage": {"path": str(workdir / "soak.sqlite")},
        "metrics": {"port": 0},
        "risk": {"kill_switch_file": str(workdir / "KILL")},
        "log": {"level": "WARNING", "json_file": str(workdir / "soak.jsonl")},
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--scale", type=float, default=150)
    parser.add_argument(
        "--scenario", type=Path, default=BAD_DAY, help="a fault scenario, or 'none' for a calm day"
    )
    parser.add_argument("--minutes", type=int, default=None, help="only the session's first N")
    parser.add_argument("--no-trading", action="store_true", help="the data path alone")
    parser.add_argument("--rate", type=float, default=None, help="broker.max_messages_per_second")
    args = parser.parse_args()
    scenario = None if str(args.scenario) == "none" else args.scenario
    r = soak(
        args.symbols,
        args.scale,
        scenario,
        minutes=args.minutes,
        trading=not args.no_trading,
        rate=args.rate,
    )
    print(json.dumps(r, indent=2, default=str))


if __name__ == "__main__":
    main()

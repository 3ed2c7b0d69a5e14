"""SIGKILL the service anywhere on the order path, restart it, and check the broker against SQLite.

A standalone simulator (a separate process, so the "broker" survives the kills) trades with the
service in live mode (dry_run false). Each run kills the service at a named crash point
(OPTIONSBOT_CRASH_AT) or, when the point is not reached in time, at a random moment. The next
run is the restart. At the end a clean run reconciles, and the simulator's book is compared
with SQLite: duplicate orders, lost fills, unprotected positions. Lanes run in parallel, each
with its own simulator and database.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import yaml

from actors.crash import POINTS
from configs.settings import LIVE_CONFIRMATION
from sim.config import SimOptions

SIM_ACCOUNT = SimOptions().account

ROOT = Path(__file__).resolve().parents[1]
START = "2026-11-20T10:05:00"  # New York; a Friday session
SCALE = 30
SYMBOLS = ("SPY", "QQQ", "IWM", "AAPL", "MSFT")
# A run's clock starts once the service has reconciled: on a loaded machine the start-up alone
# can take longer than a run, and a kill before the first bracket would test nothing.
READY_LINE = "reconciliation done"
READY_CAP_S = 30.0


@dataclass
class LaneResult:
    runs: int = 0
    crashed_at: Counter = field(default_factory=Counter)
    killed_randomly: int = 0
    orders_at_broker: int = 0
    duplicate_orders: int = 0
    executions_at_broker: int = 0
    lost_fills: int = 0
    phantom_fills: int = 0
    positions: int = 0
    unprotected_positions: int = 0
    foreign_orders: int = 0
    stacked_entries: int = 0
    unsettled_orders: int = 0
    problems: list[str] = field(default_factory=list)


def start_sim(seed: int, start: str = START, scale: int = SCALE) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "actors.cli",
            "sim",
            "--port",
            "0",
            "--time-scale",
            str(scale),
            "--start",
            start,
            "--seed",
            str(seed),
            "--symbols",
            *SYMBOLS,
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    match = re.search(r"127\.0\.0\.1:(\d+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return proc, int(match.group(1))


def config(tmp: Path, port: int) -> Path:
    cfg = {
        "dry_run": False,
        # Live against a Gateway needs the typed opt-in; the account comes from the environment.
        "live": {"enabled": True, "confirm": LIVE_CONFIRMATION},
        # Several symbols and tight brackets: positions must keep closing, or the one-position-per-
        # symbol gate stops new brackets and the send-path crash points become unreachable.
        "symbols": list(SYMBOLS),
        "broker": {
            "mode": "gateway",
            "port": port,
            "client_id": 21,
            "clock": "gateway",
            "clock_scale": SCALE,
            "connect_timeout_s": 5,
        },
        "scalp": {"cooldown_bars": 1},
        "risk": {
            "no_entry_first_minutes": 0,
            "max_open_positions": 6,
            "kill_switch_file": str(tmp / "KILL"),
        },
        "orders": {"entry_timeout_s": 300, "take_profit_pct": 0.05, "stop_loss_pct": 0.05},
        "storage": {"path": str(tmp / "bot.sqlite")},
        "metrics": {"enabled": False},
        "log": {"level": "INFO", "json_file": None},
    }
    path = tmp / "crash.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_service(cfg: Path, crash_at: str | None, timeout: float, log: Path) -> str:
    """'crashed' (our crash point), 'killed' (random kill `timeout` seconds after the service
    reconciled) or 'stopped' (clean stop, likewise)."""
    # The standalone simulator's account (sim/config.py): it refuses orders for any other.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OPTIONSBOT_BROKER__ACCOUNT": SIM_ACCOUNT}
    env.pop("OPTIONSBOT_CRASH_AT", None)
    if crash_at:
        env["OPTIONSBOT_CRASH_AT"] = crash_at
    log.touch()
    with log.open("a") as out, log.open("rb") as tail:
        tail.seek(0, os.SEEK_END)
        seen = b""
        proc = subprocess.Popen(
            [sys.executable, "-m", "actors.cli", "run", "--config", str(cfg)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + READY_CAP_S
        ready = False
        while proc.poll() is None and time.monotonic() < deadline:
            if not ready:
                seen = seen[-200:] + tail.read()
                if READY_LINE.encode() in seen:
                    ready, deadline = True, time.monotonic() + timeout
            time.sleep(0.05)
        if proc.returncode is not None:
            return "crashed" if proc.returncode == -signal.SIGKILL else f"exited {proc.returncode}"
        if crash_at:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            return "killed"
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        return "stopped" if proc.returncode == 0 else f"exited {proc.returncode}"


def broker_state(port: int) -> dict:
    """What the simulated broker holds, read by a master client (id 0) that sees every client."""
    from ib_async import IB

    ib = IB()
    ib.connect("127.0.0.1", port, clientId=0, timeout=10)
    try:
        open_trades = ib.reqAllOpenOrders()
        completed = ib.reqCompletedOrders(False)
        fills = ib.reqExecutions()
        positions = ib.reqPositions()
        return {
            "orders": [
                (
                    t.order.orderRef,
                    t.order.permId,
                    t.orderStatus.status,
                    t.order.action,
                    t.order.orderType,
                    t.order.totalQuantity,
                    t.order.ocaGroup,
                    t.contract.conId,
                    t.order.parentId,
                )
                for t in [*open_trades, *completed]
            ],
            "open": [
                (
                    t.order.orderRef,
                    t.order.action,
                    t.order.totalQuantity,
                    t.order.ocaGroup,
                    t.contract.conId,
                    t.order.orderType,
                    t.orderStatus.status,
                )
                for t in open_trades
            ],
            "executions": [
                (f.execution.execId, f.execution.orderRef, f.execution.time) for f in fills
            ],
            "positions": [(p.contract.conId, p.position) for p in positions if p.position],
        }
    finally:
        ib.disconnect()


def check(port: int, db_path: Path, result: LaneResult) -> None:
    broker = broker_state(port)
    db = sqlite3.connect(db_path)
    ours = {r[0]: r for r in db.execute("select order_ref, bracket_ref, role, state from orders")}
    fills = {r[0] for r in db.execute("select exec_id from fills")}
    # The simulator keeps trading after the last stop: a take-profit can fill while no service
    # runs. Only executions up to the service's last clock reading can be held against it.
    (stopped_at,) = db.execute("select value from kv where key = 'clock'").fetchone()
    stopped_at = datetime.fromisoformat(stopped_at)
    # Duplicate orders: one orderRef twice at the broker (completed and open lists overlap by permId).
    by_perm = {(ref, perm) for ref, perm, *_ in broker["orders"] if ref}
    refs = Counter(ref for ref, _ in by_perm)
    result.orders_at_broker = len(refs)
    result.duplicate_orders = sum(n - 1 for n in refs.values() if n > 1)
    result.foreign_orders = sum(1 for ref in refs if ref not in ours)
    # Reconciliation settles every order that was in flight at a crash.
    result.unsettled_orders = sum(
        1 for r in ours.values() if r[3] in ("unknown", "pending_submit", "new")
    )
    # Lost fills: an execution of one of our orders that SQLite does not hold.
    ours_at_broker = [
        (e, ref) for e, ref, t in broker["executions"] if ref in ours and t <= stopped_at
    ]
    result.executions_at_broker = len(ours_at_broker)
    result.lost_fills = sum(1 for e, _ in ours_at_broker if e not in fills)
    result.phantom_fills = sum(1 for e in fills if e not in {x for x, _, _ in broker["executions"]})
    # Unprotected positions: contracts held without working exits for the whole quantity.
    result.positions = len(broker["positions"])
    for con_id, qty in broker["positions"]:
        protective = {}
        for ref, action, oqty, oca, cid, otype, status in broker["open"]:
            if cid == con_id and action == "SELL" and status in ("Submitted", "PreSubmitted"):
                protective.setdefault(oca or ref, {})[otype] = oqty
        covered = sum(
            min(v.get("LMT", 0), v.get("STP", 0)) if "MKT" not in v else v["MKT"]
            for v in protective.values()
        )
        if covered < qty:
            result.unprotected_positions += 1
            result.problems.append(f"position {con_id} x{qty} covered by {covered}: {protective}")
    # One bracket per symbol at a time: an entry placed while another on the same symbol was still
    # working (not yet filled, cancelled or rejected) would stack two positions. Event ids give the
    # order in which things happened (timestamps written before the clock's first sync at a
    # restart read the wall clock, not the simulator's).
    entries = db.execute(
        "select o.symbol, o.order_ref, (select min(e.id) from order_events e where"
        " e.order_ref = o.order_ref and e.event = 'created'), (select min(e.id) from order_events e"
        " where e.order_ref = o.order_ref and e.dest in ('filled', 'cancelled', 'rejected',"
        " 'inactive')) from orders o where o.role = 'entry' order by o.symbol, 3"
    ).fetchall()
    for a, b in zip(entries, entries[1:], strict=False):
        if a[0] == b[0] and (a[3] is None or a[3] > b[2]):
            result.stacked_entries += 1
            result.problems.append(f"{b[1]} placed while {a[1]} was still working")
    if result.lost_fills:
        result.problems.append(
            f"lost fills: {[e for e, _ in ours_at_broker if e not in fills][:5]}"
        )


def lane(index: int, runs: int, workdir: Path, per_run_s: float, seed: int) -> LaneResult:
    rng = random.Random(seed * 1000 + index)
    tmp = workdir / f"lane{index}"
    if tmp.exists():  # a database from an earlier run would meet a fresh simulator
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sim, port = start_sim(seed + index)
    result = LaneResult()
    log = tmp / "service.log"
    try:
        cfg = config(tmp, port)
        for i in range(runs):
            point = POINTS[(i + index) % len(POINTS)]
            # Send-path points aim at a run's first bracket (reached in seconds), fills at one
            # of the first two; reconciliation runs once per start.
            nth = rng.randint(1, 2) if point == "after_fill_recorded" else 1
            outcome = run_service(cfg, f"{point}:{nth}", rng.uniform(0.6, 1.0) * per_run_s, log)
            result.runs += 1
            if outcome == "crashed":
                result.crashed_at[point] += 1
            elif outcome == "killed":
                result.killed_randomly += 1
            else:
                result.problems.append(f"run {i}: {outcome}")
        # The last restart: a clean run that reconciles, then a clean stop.
        outcome = run_service(cfg, None, per_run_s + 4, log)
        if outcome != "stopped":
            result.problems.append(f"final run: {outcome}")
        check(port, tmp / "bot.sqlite", result)
    finally:
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
    return result


def crash_test(
    runs: int = 100,
    lanes: int = 4,
    per_run_s: float = 6.0,
    seed: int = 1,
    workdir: Path | None = None,
) -> dict:
    import tempfile

    workdir = workdir or Path(tempfile.mkdtemp(prefix="crash-"))
    per_lane = [runs // lanes + (1 if i < runs % lanes else 0) for i in range(lanes)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(lanes) as pool:
        results = list(
            pool.map(lambda i: lane(i, per_lane[i], workdir, per_run_s, seed), range(lanes))
        )
    total = LaneResult()
    for r in results:
        for name in (
            "runs",
            "killed_randomly",
            "orders_at_broker",
            "duplicate_orders",
            "executions_at_broker",
            "lost_fills",
            "phantom_fills",
            "positions",
            "unprotected_positions",
            "foreign_orders",
            "unsettled_orders",
            "stacked_entries",
        ):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        total.crashed_at.update(r.crashed_at)
        total.problems += r.problems
    summary = {
        "runs": total.runs,
        "seconds": round(time.monotonic() - t0, 1),
        "crashed_at_point": dict(total.crashed_at),
        "killed_at_random": total.killed_randomly,
        "orders_at_broker": total.orders_at_broker,
        "duplicate_orders": total.duplicate_orders,
        "executions_at_broker": total.executions_at_broker,
        "lost_fills": total.lost_fills,
        "phantom_fills": total.phantom_fills,
        "positions_at_broker": total.positions,
        "unprotected_positions": total.unprotected_positions,
        "foreign_orders": total.foreign_orders,
        "unsettled_orders": total.unsettled_orders,
        "stacked_entries": total.stacked_entries,
        "problems": total.problems[:20],
        "workdir": str(workdir),
    }
    return summary


# -- the "database lost" lane ---------------------------------------------------------------------
# Each way a database is lost while the broker keeps the positions: deleted, truncated to 0 bytes,
# its positions table dropped (after a clean stop), or its -wal removed after a SIGKILL. The
# restarted service must place no entry until `optionsbot adopt`, and adoption must record the
# broker's positions and seed the day's loss guard from the broker's P&L.
DAMAGES = ("deleted", "truncated", "positions_dropped", "wal_removed")
BLOCK_REASON = "unknown_broker_state"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(cfg: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OPTIONSBOT_CRASH_AT", None)
    with log.open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "actors.cli", "run", "--config", str(cfg)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _until(cond, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the service exited ({proc.returncode}) waiting for {what}")
        found = cond()
        if found:
            return found
        time.sleep(0.25)
    raise TimeoutError(f"no {what} within {timeout:.0f}s")


def _protected_positions(port: int) -> list[tuple[int, float]]:
    """Option positions at the broker covered by working take-profit and stop orders."""
    broker = broker_state(port)
    out = []
    for con_id, qty in broker["positions"]:
        kinds = {
            otype
            for _, action, _, _, cid, otype, status in broker["open"]
            if cid == con_id and action == "SELL" and status in ("Submitted", "PreSubmitted")
        }
        if {"LMT", "STP"} <= kinds:
            out.append((con_id, qty))
    return out


def _query(db_path: Path, sql: str, args: tuple = ()) -> list[tuple]:
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []


def damage_database(path: Path, how: str) -> None:
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if how == "deleted":
        for f in (path, wal, shm):
            f.unlink(missing_ok=True)
    elif how == "truncated":
        path.write_bytes(b"")
        for f in (wal, shm):
            f.unlink(missing_ok=True)
    elif how == "positions_dropped":
        db = sqlite3.connect(path)
        db.execute("drop table positions")
        db.commit()
        db.close()
    elif how == "wal_removed":
        for f in (wal, shm):
            f.unlink(missing_ok=True)
    else:
        raise ValueError(f"unknown damage {how!r}: one of {', '.join(DAMAGES)}")


def _gauge(port: int, name: str) -> float | None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def lost_database_lane(damage: str, workdir: Path, seed: int = 5, cap_s: float = 120.0) -> dict:
    """Trade to a protected position, lose the database one way, restart, then adopt."""
    tmp = workdir / f"lost-{damage}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sim, port = start_sim(seed)
    metrics_port = _free_port()
    cfg_path = config(tmp, port)
    cfg = yaml.safe_load(cfg_path.read_text())
    # Wide exits: the positions must still be open when the service comes back.
    cfg["orders"].update(take_profit_pct=1.0, stop_loss_pct=0.6)
    cfg["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": metrics_port}
    cfg_path.write_text(yaml.safe_dump(cfg))
    db_path, log = tmp / "bot.sqlite", tmp / "service.log"
    out: dict = {"damage": damage}
    proc = _spawn(cfg_path, log)
    try:
        held = _until(lambda: _protected_positions(port), cap_s, "protected position", proc)
        out["positions_before"] = len(held)
        if damage == "wal_removed":
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        else:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        damage_database(db_path, damage)
        before = {ref for ref, *_ in broker_state(port)["orders"] if ref}
        proc = _spawn(cfg_path, log)
        # A signal that reached the risk gate after the restart, and was refused: on a database
        # that cannot vouch for the broker, that is where an entry would have been placed.
        refused = _until(
            lambda: _query(
                db_path,
                "select reason from decisions where stage = 'risk_gate' and reason like ?",
                (f"{BLOCK_REASON}%",),
            ),
            cap_s,
            "entry refused for the unknown broker state",
            proc,
        )
        out["entries_refused"] = len(refused)
        out["blocked_journaled"] = [
            r[0]
            for r in _query(
                db_path,
                "select reason from decisions where stage = 'reconcile' and outcome = 'blocked'",
            )
        ]
        out["unvouched_gauge"] = _gauge(metrics_port, "optionsbot_unvouched_broker_state")
        after = broker_state(port)
        out["new_entries"] = sorted(
            ref for ref, *_ in after["orders"] if ref and ref not in before and ref.endswith("-E")
        )
        adopt = subprocess.run(
            [
                sys.executable,
                "-m",
                "actors.cli",
                "adopt",
                "--config",
                str(cfg_path),
                "--wait",
                "60",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
        )
        out["adopt_rc"], out["adopt_output"] = adopt.returncode, adopt.stdout.strip()
        broker = broker_state(port)
        held_at_broker = {c for c, _ in broker["positions"]}

        # Adopted positions are protected at the broker: by the exits that survived there, or by
        # the take-profit and stop the protection invariant places for those that had none.
        def covered() -> set[int] | None:
            got = {c for c, _ in _protected_positions(port)}
            return got if held_at_broker <= got else None

        try:
            _until(covered, 30, "adopted positions protected at the broker", proc)
        except TimeoutError:
            pass
        protected_now = {c for c, _ in _protected_positions(port)}
        out["unprotected_after_adopt"] = sorted(held_at_broker - protected_now)
        ours = dict(_query(db_path, "select con_id, quantity from positions where quantity != 0"))
        out["broker_positions"] = len(broker["positions"])
        out["positions_unrecorded"] = sorted(
            c for c, q in broker["positions"] if abs(ours.get(c, 0.0) - q) > 1e-9
        )
        # The exits working at the broker were adopted with the positions they protect.
        exits = {
            c
            for (c,) in _query(
                db_path,
                "select con_id from orders where action = 'SELL' and state in"
                " ('submitted', 'partially_filled', 'pending_submit')",
            )
        }
        out["positions_without_exits_in_db"] = sorted(
            c for c, _ in broker["positions"] if c not in exits
        )
        out["cleared_journaled"] = len(
            _query(
                db_path,
                "select id from decisions where stage = 'reconcile' and outcome = 'cleared'",
            )
        )
        out["unvouched_gauge_after"] = _gauge(metrics_port, "optionsbot_unvouched_broker_state")
        days = _query(db_path, "select start_equity, realized_pnl from trading_days")
        out["start_equity"] = days[-1][0] if days else None
        out["realized_today"] = days[-1][1] if days else None
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        out["exit_code"] = proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
    return out


# -- the overnight lane: positions carried over a weekend keep their protection at the broker ----

# A Friday afternoon, half an hour before the close, at one simulated minute per real second: the
# service trades for a few seconds, is killed (or stopped), and the standalone simulator crosses
# the close (DAY orders expire there) and jumps over the weekend to Monday's open while no service
# runs. The broker alone must keep every position covered, and it still must after the restart.
OVERNIGHT_START = "2026-11-20T15:25:00"  # New York, a Friday
OVERNIGHT_SCALE = 60
MONDAY_OPEN = datetime(2026, 11, 23, 14, 30, 0)  # 09:30 New York, in UTC


def overnight_config(tmp: Path, port: int) -> Path:
    path = config(tmp, port)
    cfg = yaml.safe_load(path.read_text())
    cfg["broker"]["clock_scale"] = OVERNIGHT_SCALE
    # Hold scalps over the close ("bracket only"), enter until the close, and keep the positions
    # open: wide exits, and an expiry after Monday so the expiry-day exit does not close them.
    cfg["risk"].update(no_entry_last_minutes=0, flatten_scalps_before_close_minutes=0)
    cfg["orders"].update(take_profit_pct=0.8, stop_loss_pct=0.6)
    cfg["options"] = {"min_dte": 3}
    path.write_text(yaml.safe_dump(cfg))
    return path


def sim_time(port: int) -> datetime:
    from ib_async import IB

    ib = IB()
    ib.connect("127.0.0.1", port, clientId=0, timeout=10)
    try:
        return ib.reqCurrentTime().replace(tzinfo=None)
    finally:
        ib.disconnect()


def uncovered(broker: dict) -> list[str]:
    """Positions at the broker without working SELL exits for their whole quantity: per OCA group
    the smaller of its take-profit and stop (a market exit covers alone), summed over groups."""
    out = []
    for con_id, qty in broker["positions"]:
        groups: dict[str, dict[str, float]] = {}
        for ref, action, oqty, oca, cid, otype, status in broker["open"]:
            if cid == con_id and action == "SELL" and status in ("Submitted", "PreSubmitted"):
                groups.setdefault(oca or ref, {})[otype] = oqty
        covered = sum(
            v["MKT"] if "MKT" in v else min(v.get("LMT", 0), v.get("STP", 0))
            for v in groups.values()
        )
        if covered < qty:
            out.append(f"position {con_id} x{qty} covered by {covered}: {groups}")
    return out


@dataclass
class OvernightResult(LaneResult):
    positions_over_weekend: int = 0
    unprotected_over_weekend: int = 0


def overnight_lane(index: int, runs: int, workdir: Path, seed: int) -> OvernightResult:
    """Each run: a fresh simulator on a Friday afternoon; the service trades, is killed (even
    runs, counting lanes) or stopped (odd) before the close; the weekend passes with no service; the broker
    is checked on Monday; the service restarts, reconciles, stops; everything is checked."""
    rng = random.Random(seed * 1000 + index)
    result = OvernightResult()
    for i in range(runs):
        tmp = workdir / f"overnight{index}-{i}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        sim, port = start_sim(seed + index * 100 + i, OVERNIGHT_START, OVERNIGHT_SCALE)
        log = tmp / "service.log"
        try:
            cfg = overnight_config(tmp, port)
            kill = (index + i) % 2 == 0
            # "overnight" is no crash point: the run is SIGKILLed when its time is up.
            outcome = run_service(cfg, "overnight:1" if kill else None, rng.uniform(12, 18), log)
            result.runs += 1
            if outcome == "killed":
                result.killed_randomly += 1
            elif outcome != "stopped":
                result.problems.append(f"overnight run {i}: {outcome}")
            deadline = time.monotonic() + 120
            while sim_time(port) < MONDAY_OPEN + timedelta(minutes=2):
                if time.monotonic() > deadline:
                    result.problems.append(f"overnight run {i}: the simulator never reached Monday")
                    break
                time.sleep(1)
            monday = broker_state(port)
            result.positions_over_weekend += len(monday["positions"])
            bare = uncovered(monday)
            result.unprotected_over_weekend += len(bare)
            result.problems += [f"Monday, before the restart: {b}" for b in bare]
            outcome = run_service(cfg, None, 6.0, log)
            if outcome != "stopped":
                result.problems.append(f"overnight run {i}, Monday restart: {outcome}")
            run = LaneResult()
            check(port, tmp / "bot.sqlite", run)
            # Not phantom fills: reqExecutions answers with the current day's executions only,
            # so Friday's fills are not at the broker's list on Monday.
            for name in (
                "orders_at_broker",
                "duplicate_orders",
                "executions_at_broker",
                "lost_fills",
                "positions",
                "unprotected_positions",
                "foreign_orders",
                "unsettled_orders",
                "stacked_entries",
            ):
                setattr(result, name, getattr(result, name) + getattr(run, name))
            result.problems += run.problems
        finally:
            sim.send_signal(signal.SIGINT)
            try:
                sim.wait(10)
            except subprocess.TimeoutExpired:
                sim.kill()
    return result


def overnight_test(
    runs: int = 4, lanes: int = 2, seed: int = 1, workdir: Path | None = None
) -> dict:
    import tempfile

    workdir = workdir or Path(tempfile.mkdtemp(prefix="overnight-"))
    per_lane = [runs // lanes + (1 if i < runs % lanes else 0) for i in range(lanes)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(lanes) as pool:
        results = list(
            pool.map(lambda i: overnight_lane(i, per_lane[i], workdir, seed), range(lanes))
        )
    keys = (
        "runs",
        "killed_randomly",
        "positions_over_weekend",
        "unprotected_over_weekend",
        "orders_at_broker",
        "duplicate_orders",
        "executions_at_broker",
        "lost_fills",
        "positions",
        "unprotected_positions",
        "foreign_orders",
        "unsettled_orders",
        "stacked_entries",
    )
    summary: dict = {k: sum(getattr(r, k) for r in results) for k in keys}
    summary["seconds"] = round(time.monotonic() - t0, 1)
    summary["problems"] = [p for r in results for p in r.problems][:20]
    summary["workdir"] = str(workdir)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--lane",
        choices=("crash", "overnight"),
        default="crash",
        help="crash: SIGKILL on the order path; overnight: positions carried over a weekend",
    )
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument(
        "--per-run",
        type=float,
        default=6.0,
        help="real seconds after the service has reconciled before a random kill",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--lost-database",
        choices=(*DAMAGES, "all"),
        help="instead: the database-lost lane (lose the database that way, restart, adopt)",
    )
    args = parser.parse_args()
    if args.lost_database:
        import tempfile

        workdir = Path(tempfile.mkdtemp(prefix="lost-db-"))
        kinds = DAMAGES if args.lost_database == "all" else (args.lost_database,)
        for kind in kinds:
            print(json.dumps(lost_database_lane(kind, workdir, args.seed), indent=2))

    if args.lane == "overnight":
        print(json.dumps(overnight_test(args.runs, args.lanes, args.seed), indent=2))
        return
    print(json.dumps(crash_test(args.runs, args.lanes, args.per_run, args.seed), indent=2))


if __name__ == "__main__":
    main()

"""The `optionsbot` command: a thin layer over actors.system."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path

from actors.failures import describe
from configs.settings import ConfigError, Settings, load_settings

log = logging.getLogger("optionsbot")
# A test hook (actors/notify.py's tests): the named actor hangs once the service is ready.
HANG_ENV = "OPTIONSBOT_DEBUG_HANG"
# A bench hook (bench.soak --days --trace-memory): traces allocations from the start, and each
# SIGUSR2 writes a tracemalloc snapshot to <value>.<n>. Slows the service; never for trading.
TRACE_ENV = "OPTIONSBOT_TRACE_MEMORY"
ROOT = Path(__file__).resolve().parents[1]


def _load(path: str | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        raise SystemExit(2) from None


def _fail(command: str, exc: BaseException, database: Path | None = None) -> int:
    """One line on stderr naming the cause; the traceback only in the JSON log, if there is one."""
    log.debug("%s failed", command, exc_info=exc)
    print(f"optionsbot {command}: {describe(exc, database)}", file=sys.stderr)
    return 1


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    # A thread outside the actors (the ticker, the simulator's) dies with one line, not a traceback.
    name = args.thread.name if args.thread else "a thread"
    log.error(
        "%s failed: %s",
        name,
        describe(args.exc_value) if args.exc_value else args.exc_type,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _few_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own arena (up to 8 per core), and the service
    runs a thread per actor (one per symbol): dozens of part-used arenas are megabytes of RSS on
    a Pi. Two are plenty for threads that mostly wait (glibc mallopt(3), M_ARENA_MAX; the
    MALLOC_ARENA_MAX variable does the same, but only if set before the process starts).
    Elsewhere than glibc: nothing to do."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-8, 2)  # M_ARENA_MAX from malloc.h
    except (OSError, AttributeError):
        pass


def cmd_run(args: argparse.Namespace) -> int:
    _few_malloc_arenas()  # before any actor thread starts
    settings = _load(args.config)
    from actors import logs
    from actors.system import StartupError, System

    hang = os.environ.get(HANG_ENV, "")
    if hang and settings.broker.mode != "embedded":
        print(f"{HANG_ENV}: a test hook for the embedded simulator only; unset it", file=sys.stderr)
        return 2
    try:
        logs.setup(
            settings.log.level,
            settings.log.json_file,
            [settings.broker.account.get_secret_value()],
            max_bytes=settings.log.max_bytes,
            backups=settings.log.backups,
        )
    except OSError as exc:
        return _fail("run", exc)
    threading.excepthook = _thread_failed
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        import pykka.debug

        signal.signal(signal.SIGUSR1, pykka.debug.log_thread_tracebacks)
    except (AttributeError, ValueError):
        pass
    if os.environ.get(TRACE_ENV):
        _trace_memory(os.environ[TRACE_ENV])
    system = System(settings)
    try:
        system.start()
    except StartupError as exc:
        log.debug("start-up failed", exc_info=True)
        log.error("start-up failed: %s", exc)
        return 1
    from actors.notify import Heartbeat

    def hang_an_actor() -> None:
        # The test hook: once ready, one actor blocks as a deadlocked one would.
        from actors.messages import DebugHang

        for name, ref in system.actors:
            if name == hang:
                ref.tell(DebugHang(seconds=3600))

    heartbeat = Heartbeat(
        lambda: list(system.actors), system.waiting_for, on_ready=hang_an_actor if hang else None
    ).start()
    try:
        while not stop.wait(0.5):
            if system.failed.is_set():
                break
    finally:
        log.info("stopping: actors stop in reverse order")
        heartbeat.stop()
        system.stop()
    return 1 if system.failed.is_set() else 0


def _trace_memory(prefix: str) -> None:
    import itertools
    import tracemalloc

    tracemalloc.start(12)
    numbers = itertools.count(1)

    def dump(*_: object) -> None:
        path = f"{prefix}.{next(numbers)}"
        tracemalloc.take_snapshot().dump(f"{path}.part")
        os.replace(f"{path}.part", path)  # whole or absent: the bench waits for the name
        log.info("memory snapshot written to %s", path)

    signal.signal(signal.SIGUSR2, dump)
    log.warning("%s is set: allocations are traced (slower; a bench hook)", TRACE_ENV)


def cmd_check(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    print(
        f"configuration OK: {args.config or 'configs/default.yaml'} ({len(settings.symbols)} symbols, "
        f"{'dry-run' if settings.dry_run else 'LIVE'}, broker {settings.broker.mode})"
    )
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    from storage.files import private_file

    path: Path = settings.risk.kill_switch_file
    try:
        private_file(path).write_text(json.dumps({"flatten": bool(args.flatten)}))
    except OSError as exc:
        return _fail("kill", exc)
    print(
        f"kill switch engaged ({path}); new entries pause within a second. `optionsbot resume` to release."
    )
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    path: Path = settings.risk.kill_switch_file
    if path.exists():
        try:
            path.unlink()
        except OSError as exc:
            return _fail("resume", exc)
        print(
            f"kill switch released ({path} removed); restart the service or it resumes on its next check"
        )
    else:
        print("kill switch was not engaged")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    path = settings.storage.path
    if not path.exists():
        print(f"no database yet at {path}")
        return 0
    if path.is_file() and path.stat().st_size == 0:
        print(
            f"optionsbot status: database {path} is empty (0 bytes): restore a backup or move it"
            " aside",
            file=sys.stderr,
        )
        return 1
    try:
        return _status(path)
    except (sqlite3.Error, OSError) as exc:
        return _fail("status", exc, path)


def _status(path: Path) -> int:
    from sqlite_utils import Database

    from storage import JournalRepo, OrderRepo, PositionRepo, TradingDayRepo, identity
    from storage.rows import multiplier

    # Read-only: a status check never migrates or repairs the file it is looking at.
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    db = Database(conn)
    orders = OrderRepo(db)
    print("orders by state:", json.dumps(orders.count_by_state(), sort_keys=True))
    print("open positions:")
    for p in PositionRepo(db).open():
        print(f"  {p.local_symbol or p.symbol}: {p.quantity:g} @ {p.avg_cost / multiplier(p):.2f}")
    for d in TradingDayRepo(db).recent(3):
        print(
            f"day {d.trading_date.isoformat()}: start equity {d.start_equity:.2f}, realized {d.realized_pnl:+.2f}"
            f"{', LOSS GUARD TRIPPED' if d.guard_tripped else ''}"
        )
    # What stops new entries, as the service last saw it: a lost database's block above all.
    if "meta" in db.table_names():
        facts = identity.meta(db)
        if facts.get("damaged"):
            print(f"database: damaged ({facts['damaged']})")
        if identity.pending_adoption(db) is not None:
            print("adoption: requested, waiting for the running service to carry it out")
        elif facts.get("adopt_result"):
            print(f"last adoption: {facts['adopt_result']}")
    journal = JournalRepo(db)
    block = journal.last_decision(stage="reconcile")
    if block is not None and block.outcome == "blocked":
        print(f"ENTRIES BLOCKED since {block.at}: {block.reason}")
        print("  the database cannot vouch for the broker's state: see README, A lost database")
    last = journal.last_decision()
    if last is not None:
        print(f"last decision: {last.at} {last.symbol} {last.stage} {last.outcome}: {last.reason}")
    return 0


def cmd_adopt(args: argparse.Namespace) -> int:
    """The operator's consent to trade on from the broker's state (see README, "A lost database")."""
    import time

    settings = _load(args.config)
    if settings.dry_run:
        print("dry-run: the paper book has no broker behind it, nothing to adopt")
        return 0
    from storage import identity, open_db

    db = open_db(settings.storage.path)
    identity.request_adoption(db)
    print(
        f"adoption requested in {settings.storage.path}; waiting up to {args.wait:g}s for the service"
    )
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        result = identity.adoption_result(db)
        if result:
            print(result)
            return 1 if result.startswith("refused") else 0
        time.sleep(0.25)
    print(
        "no running service answered: the request stays recorded, and the service adopts the "
        "broker's state at its next reconciliation (start it with `optionsbot run`)"
    )
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    from storage.backup import BackupError, backup

    out = Path(args.out) if args.out else settings.storage.backup_dir
    if out is None:
        print("optionsbot backup: give --out DIR (storage.backup_dir is null)", file=sys.stderr)
        return 2
    keep = args.keep or settings.storage.backup_keep
    try:
        path = backup(settings.storage.path, out, keep)
    except BackupError as exc:
        print(f"optionsbot backup: {exc}", file=sys.stderr)
        return 1
    except (sqlite3.Error, OSError) as exc:
        return _fail("backup", exc, settings.storage.path)
    print(f"backup written: {path} (keeping the newest {keep} in {out})")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    from storage.backup import BackupError, restore

    try:
        aside = restore(Path(args.file), settings.storage.path, force=args.force)
    except BackupError as exc:
        print(f"optionsbot restore: {exc}", file=sys.stderr)
        return 1
    except (sqlite3.Error, OSError) as exc:
        return _fail("restore", exc, settings.storage.path)
    print(
        f"restored {args.file} to {settings.storage.path}"
        + (f"; the replaced database is kept as {aside}" if aside else "")
    )
    if not settings.dry_run:
        print(
            "live mode: if the backup is older than the broker's state, the next start blocks"
            " new entries until `optionsbot adopt` (see README, A lost database)"
        )
    return 0


def cmd_install_service(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    from actors.unit import render_unit

    config = Path(args.config or ROOT / "configs" / "default.yaml").absolute()
    try:
        text, writable = render_unit(settings, config, args.user, args.group or args.user, ROOT)
    except ValueError as exc:
        print(f"optionsbot install-service: {exc}", file=sys.stderr)
        return 2
    if args.print:
        print(text, end="")
        return 0
    from actors.unit import writable_dirs
    from storage.files import private_dirs

    out = Path(args.output)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        os.chmod(out, 0o644)  # a unit file is read by systemd and `systemctl cat`; no secret
        # ReadWritePaths= must exist when the service starts, and belong to its user.
        for d in writable_dirs(settings, ROOT, nested=True):
            private_dirs(d)
            _chown(d, args.user)
    except OSError as exc:
        return _fail("install-service", exc)
    print(f"unit written: {out} (writable for the service: {', '.join(map(str, writable))})")
    print(
        "next: sudo systemctl daemon-reload && sudo systemctl enable --now optionsbot;"
        " logs: journalctl -u optionsbot -f"
    )
    return 0


def _chown(path: Path, user: str) -> None:
    if os.geteuid() != 0:
        return
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        print(f"note: no user {user!r} yet; create it, then chown -R {user} {path}")
        return
    os.chown(path, pw.pw_uid, pw.pw_gid)


def cmd_doctor(args: argparse.Namespace) -> int:
    from configs.settings import SYMBOL_CHARS

    settings = _load(args.config)
    symbols = [x.upper() for x in args.symbols or []]
    bad = [x for x in symbols if not x or set(x) - SYMBOL_CHARS or len(x) > 8]
    if bad:
        print(f"--symbols: {bad[0]!r} is not a US stock symbol (letters and '.')", file=sys.stderr)
        return 2
    from actors.doctor import main as doctor_main

    return doctor_main(settings, symbols or None, args.json)


def cmd_sim(argv: list[str]) -> int:
    from sim.runner import main as sim_main

    return sim_main(argv)


def cmd_diagram(argv: list[str]) -> int:
    from machines.diagram import main as diagram_main

    return diagram_main(argv)


def cmd_backtest(argv: list[str]) -> int:
    from backtest.cli import main as backtest_main

    try:
        return backtest_main(argv)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line naming the cause, never a traceback
        return _fail("backtest", exc)


def cmd_history(argv: list[str]) -> int:
    from backtest.history import main as history_main

    try:
        return history_main(argv)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001
        return _fail("history", exc)


def _keep(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 365:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number from 1 to 365")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The database, its WAL, the logs and the kill file are the owner's alone.
    os.umask(0o077)
    # `sim` and `diagram` own their arguments.
    if argv[:1] == ["sim"]:
        return cmd_sim(argv[1:])
    if argv[:1] == ["diagram"]:
        return cmd_diagram(argv[1:])
    if argv[:1] == ["backtest"]:
        return cmd_backtest(argv[1:])
    if argv[:1] == ["history"]:
        return cmd_history(argv[1:])
    parser = argparse.ArgumentParser(prog="optionsbot", description="IBKR options trading service")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, text in (
        ("run", cmd_run, "run the service (default config: the embedded simulator, dry-run)"),
        ("check-config", cmd_check, "validate a configuration file and exit"),
        ("kill", cmd_kill, "pause new entries (kill switch)"),
        ("resume", cmd_resume, "release the kill switch"),
        ("status", cmd_status, "orders, positions and P&L from the database"),
        ("adopt", cmd_adopt, "trade on from the broker's positions and orders (lost database)"),
        ("doctor", cmd_doctor, "diagnose the Gateway, data, options and storage setup"),
        ("backup", cmd_backup, "an online copy of the database (safe while the service runs)"),
        ("restore", cmd_restore, "put a backup in place of the database (service stopped)"),
        ("install-service", cmd_install_service, "write the systemd unit for these settings"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", "-c", help="YAML settings file (default: configs/default.yaml)")
        if name == "kill":
            p.add_argument("--flatten", action="store_true", help="also cancel working entries")
        if name == "adopt":
            p.add_argument(
                "--wait", type=float, default=30.0, help="seconds to wait for the service"
            )
        if name == "backup":
            p.add_argument("--out", help="directory (default: storage.backup_dir)")
            p.add_argument(
                "--keep", type=_keep, help="backups to keep (default: storage.backup_keep)"
            )
        if name == "restore":
            p.add_argument("file", help="a backup written by `optionsbot backup`")
            p.add_argument(
                "--force", action="store_true", help="replace a database with newer history"
            )
        if name == "install-service":
            p.add_argument("--user", default="optionsbot", help="the service's own user")
            p.add_argument("--group", help="its group (default: the user's name)")
            p.add_argument("--output", default="/etc/systemd/system/optionsbot.service")
            p.add_argument("--print", action="store_true", help="print the unit, write nothing")
        if name == "doctor":
            p.add_argument("--json", action="store_true", help="a JSON list of checks")
            p.add_argument("--symbols", nargs="+", help="underlyings to check (default: settings)")
        p.set_defaults(fn=fn)
    sub.add_parser("sim", help="run the IB Gateway simulator alone (see `optionsbot sim --help`)")
    sub.add_parser("diagram", help="print the state machines as Mermaid")
    sub.add_parser("backtest", help="judge the strategy in money over past or simulated bars")
    sub.add_parser("history", help="fetch 1-minute bars from the Gateway (`history fetch`)")
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line naming the cause, never a traceback
        return _fail(args.command, exc)


if __name__ == "__main__":
    raise SystemExit(main())

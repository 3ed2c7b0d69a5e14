"""Opening the database (WAL) and its migrations, recorded in the database itself."""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from storage.files import private_file, tighten

migrations = Migrations("optionsbot")

# Memory per connection, and the service holds one per actor (50 symbols: 55 of them). SQLite's
# default page cache may grow to 2 MB each; the file is small and the OS caches it anyway.
# Python keeps 128 prepared statements per connection, and sqlite-utils names every nested
# write's savepoint at random, so those caches fill with statements never run twice: a few MB
# that took a day of trading to appear. Both stay bounded either way; these bounds are small.
PAGE_CACHE_KIB = 512
STATEMENT_CACHE = 32


@migrations()
def m001_initial(db: Database) -> None:
    db["orders"].create(
        {
            "order_ref": str,  # our idempotency key, echoed by IB on executions
            "bracket_ref": str,
            "parent_ref": str,
            "role": str,  # entry | take_profit | stop_loss | exit
            "symbol": str,
            "strategy": str,
            "con_id": int,
            "local_symbol": str,
            "expiry": str,
            "strike": float,
            "right": str,
            "action": str,
            "order_type": str,
            "quantity": float,
            "limit_price": float,
            "aux_price": float,
            "oca_group": str,
            "state": str,
            "filled": float,
            "avg_fill_price": float,
            "order_id": int,
            "perm_id": int,
            "client_id": int,
            "dry_run": int,
            "reason": str,
            "trading_date": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="order_ref",
        not_null={"symbol", "state", "action", "quantity", "created_at"},
    )
    db["orders"].create_index(["state"])
    db["orders"].create_index(["bracket_ref"])
    db["order_events"].create(
        {
            "id": int,
            "order_ref": str,
            "at": str,
            "event": str,
            "source": str,
            "dest": str,
            "detail": str,
        },
        pk="id",
        foreign_keys=[("order_ref", "orders", "order_ref")],
    )
    db["order_events"].create_index(["order_ref"])
    db["fills"].create(
        {
            "exec_id": str,  # IB's execution id: a duplicate is the same fill
            "order_ref": str,
            "at": str,
            "side": str,
            "quantity": float,
            "price": float,
            "commission": float,
            "con_id": int,
            "symbol": str,
        },
        pk="exec_id",
        foreign_keys=[("order_ref", "orders", "order_ref")],
    )
    db["positions"].create(
        {
            "con_id": int,
            "symbol": str,
            "local_symbol": str,
            "expiry": str,
            "strike": float,
            "right": str,
            "quantity": float,
            "avg_cost": float,  # per contract, premium x multiplier
            "realized_pnl": float,
            "bracket_ref": str,
            "strategy": str,
            "updated_at": str,
        },
        pk="con_id",
    )
    db["trading_days"].create(
        {
            "trading_date": str,  # New York date: the daily loss guard never reads a stale day
            "start_equity": float,
            "realized_pnl": float,
            "guard_tripped": int,
            "updated_at": str,
        },
        pk="trading_date",
    )
    db["machine_states"].create(
        {"name": str, "state": str, "data": str, "updated_at": str},
        pk="name",
    )
    db["signals"].create(
        {
            "id": int,
            "at": str,
            "bar_time": str,
            "symbol": str,
            "strategy": str,
            "direction": str,
            "confidence": float,
            "price": float,
            "reasons": str,
        },
        pk="id",
    )
    db["signals"].create_index(["symbol", "bar_time"])
    db["decisions"].create(
        {
            "id": int,
            "at": str,
            "symbol": str,
            "stage": str,  # signal | option | risk | order
            "outcome": str,  # approved | skipped
            "reason": str,
            "detail": str,
        },
        pk="id",
    )
    db["whale_debounce"].create({"symbol": str, "last_fired": str}, pk="symbol")
    db["kv"].create({"key": str, "value": str, "updated_at": str}, pk="key")


@contextmanager
def write(db: Database) -> Iterator[Database]:
    """A write transaction that takes the write lock up front (BEGIN IMMEDIATE).

    Several actors write the same file. A deferred transaction that reads first and writes
    later fails at once with SQLITE_BUSY_SNAPSHOT when another actor committed in between
    (sqlite-utils' update() reads before it writes); an immediate one waits its turn under
    busy_timeout instead. Nested blocks become savepoints, as in sqlite-utils' atomic().
    """
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    else:
        db.conn.execute("COMMIT")


@migrations()
def m002_recorded_bars(db: Database) -> None:
    # Every delivered bar, when data.record_bars is on: for replay, and to prove none is lost
    # or delivered twice (the primary key refuses a second copy).
    db["bars"].create(
        {
            "symbol": str,
            "bar_size": str,
            "time": str,
            "open": float,
            "high": float,
            "low": float,
            "close": float,
            "volume": float,
            "live": int,
        },
        pk=("symbol", "bar_size", "time"),
    )


@migrations()
def m003_identity(db: Database) -> None:
    # Which account and which history this file belongs to (storage.identity), and the orders
    # at the broker that an operator adopted as known but not ours (`optionsbot adopt`).
    db["meta"].create({"key": str, "value": str, "updated_at": str}, pk="key")
    db["foreign_orders"].create(
        {
            "perm_id": int,  # IB's permanent id: the one key a foreign order is sure to have
            "order_ref": str,
            "order_id": int,
            "status": str,
            "adopted_at": str,
        },
        pk="perm_id",
    )


@migrations()
def m004_multiplier(db: Database) -> None:
    # The contract multiplier, so that money is premium x the contract's own multiplier (from the
    # chain) rather than an assumed 100. Rows from before stay NULL: storage.rows reads them as
    # the standard 100 that every contract traded then had.
    db["orders"].add_column("multiplier", float)
    db["positions"].add_column("multiplier", float)


def ensure_option_quotes(db: Database) -> None:
    """The option_quotes table, created by the quote recorder (data.record_quotes) the first time
    it starts: an optional table, not a migration, so a database from a service that never
    recorded stays openable by the release before (a migration it does not know makes the older
    release refuse the file, and a rollback would need a backup restored).

    Every option quote the service received: `received_at` is when it reached the service (the
    service clock, UTC), `quote_time` when its bid or ask last changed as the service saw it."""
    if "option_quotes" in db.table_names():
        return
    with write(db):
        db["option_quotes"].create(
            {
                "id": int,
                "received_at": str,
                "symbol": str,
                "expiry": str,  # YYYYMMDD
                "strike": float,
                "right": str,  # C | P
                "con_id": int,
                "local_symbol": str,
                "trading_class": str,
                "multiplier": int,
                "bid": float,
                "ask": float,
                "last": float,  # NULL when IB sent none
                "volume": float,  # NULL when IB sent none
                "quote_time": str,
                "age_known": int,
            },
            pk="id",
            not_null={"received_at", "symbol", "expiry", "strike", "right"},
            if_not_exists=True,
        )
        db.execute(
            "create index if not exists idx_option_quotes_contract"
            " on option_quotes (symbol, expiry, strike, right, received_at)"
        )
        db.execute(
            "create index if not exists idx_option_quotes_received on option_quotes (received_at)"
        )


@functools.cache
def _reference_schema() -> dict[str, list[str]]:
    """Every table's CREATE statement (and its indexes') as the migrations build them. Built
    once a process: it was 5 ms of every open_db, and a 50-symbol start opens the file 50
    times, one strategy after another, while the connection waits for DataActor."""
    ref = Database(memory=True)
    migrations.apply(ref)
    out: dict[str, list[str]] = {}
    for table, sql in ref.execute(
        "select tbl_name, sql from sqlite_master where sql is not null order by type desc"
    ).fetchall():
        out.setdefault(table, []).append(sql)
    ref.close()
    return out


def repair_schema(db: Database) -> list[str]:
    """Recreate tables a migrated database has lost (a dropped `positions`, say); returns their
    names. The migrations are recorded as applied, so they would never run again on their own;
    the rows are gone for good, and storage.identity marks the file as damaged."""
    have = set(db.table_names())
    schema = _reference_schema()
    missing = [t for t in schema if t not in have and not t.startswith("_")]
    if not missing:
        return []
    with write(db):
        for table in missing:
            for sql in schema[table]:
                db.execute(sql)
    return missing


def integrity_check(path: Path | str, seconds: float) -> list[str]:
    """SQLite's own verdict on a file ("ok", or its problems), read-only: never creates or
    migrates it. Raises sqlite3.OperationalError "interrupted" after `seconds`: a large
    database on a Pi's SD card could take minutes, and the doctor gives up rather than hang."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    deadline = time.monotonic() + seconds
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        return [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
    finally:
        conn.close()


@functools.cache
def _known_migrations() -> frozenset[str]:
    return frozenset(m.name for m in migrations.pending(Database(memory=True)))


def _refuse_newer(db: Database, path: Path) -> None:
    """A file migrated by a newer release is not read: rows are read by field name
    (storage.rows), and a column this version does not know would be dropped without a word
    (after a rollback, money computed without a newer column such as a contract's multiplier)."""
    newer = [a.name for a in migrations.applied(db) if a.name not in _known_migrations()]
    if newer:
        db.close()
        raise sqlite3.DatabaseError(
            f"written by a newer optionsbot (migrations {', '.join(newer)} unknown to this "
            f"version): run that version, or move {path.name} aside and restore a backup"
        )


def open_db(path: Path | str) -> Database:
    """Open (creating if needed) the service database in WAL mode, migrated to the latest schema.

    A `Database` belongs to the thread that opened it: each actor that persists opens its own.
    """
    path = Path(path)
    on_disk = str(path) != ":memory:"
    if on_disk:
        private_file(path)  # 0600 before SQLite opens it; its -wal and -shm take its mode
    if on_disk:
        db = Database(sqlite3.connect(str(path), cached_statements=STATEMENT_CACHE))
        db.conn.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
    else:
        db = Database(path)
    db.conn.execute("PRAGMA busy_timeout = 10000")
    if on_disk:
        db.enable_wal()
        tighten(path, Path(f"{path}-wal"), Path(f"{path}-shm"))
    db.conn.execute("PRAGMA synchronous = NORMAL")
    db.conn.execute("PRAGMA foreign_keys = ON")
    _refuse_newer(db, path)
    migrations.apply(db)
    missing = repair_schema(db)
    if missing:
        from storage.identity import mark_damaged

        mark_damaged(db, f"tables recreated empty: {', '.join(missing)}")
    return db

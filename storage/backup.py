"""Online backups of the database with SQLite's backup API, and their restore.

The backup API copies a consistent snapshot while the service goes on writing: in WAL mode a
reader never blocks the writer, and one step (all pages at once) reads one snapshot, where a
copy in several steps would start over each time the service commits. A file copy of a live
database can tear between its pages and its -wal; this cannot.

A restore never runs under a running service (its next write would undo the restore, or
corrupt it): it takes the service's own instance lock, so a service cannot start midway either.
It refuses to replace a database that holds history the backup lacks (order events, fills,
journal rows), or another database altogether, unless forced, and it keeps the replaced file
aside. The history mark beside the database (storage.identity) still knows how far the history
went, so trading after restoring an older backup waits for `optionsbot adopt` in live mode.
"""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage.files import FILE_MODE, private_dirs
from storage.lock import InstanceLock

NAME = re.compile(r"^(?P<stem>.+)-(?P<at>\d{8}T\d{6}Z)\.sqlite$")


class BackupError(Exception):
    """A backup or restore that was refused or failed; the message says why and what to do."""


def _connect_existing(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if not path.is_file():
        raise BackupError(f"no database at {path}")
    mode = "ro" if readonly else "rw"
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode={mode}", uri=True, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def _check(conn: sqlite3.Connection, what: str) -> None:
    try:
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{what} is not a readable SQLite database ({exc})") from None
    if result != "ok":
        raise BackupError(f"{what} is damaged ({result})")
    if "_sqlite_migrations" not in tables or "orders" not in tables:
        raise BackupError(f"{what} is not an optionsbot database (no orders table)")


def backup(database: Path, out_dir: Path, keep: int, now: datetime | None = None) -> Path:
    """Copy `database` into `out_dir` as `<name>-<UTC time>.sqlite` (0600), checked, then keep
    only the newest `keep` of its backups there. Returns the new file."""
    if keep < 1:
        raise BackupError("keep must be at least 1")
    database, out_dir = Path(database), Path(out_dir)
    at = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    private_dirs(out_dir)
    final = out_dir / f"{database.stem}-{at}.sqlite"
    part = final.with_name(final.name + ".part")
    src = _connect_existing(database)
    try:
        fd = os.open(part, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, FILE_MODE)
        os.close(fd)
        dst = sqlite3.connect(part)
        try:
            src.backup(dst)  # pages=-1: one step, one snapshot
            # The copy is its own file: no WAL to carry around or lose.
            dst.execute("PRAGMA journal_mode = DELETE")
            _check(dst, f"the backup {final}")
        finally:
            dst.close()
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    fd = os.open(part, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(part, final)
    prune(out_dir, database.stem, keep)
    return final


def next_run(now: datetime, at: str) -> datetime:
    """The next `at` ("HH:MM", the zone of `now`) strictly after `now` (pure)."""
    hour, minute = (int(x) for x in at.split(":"))
    run = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if run <= now:
        run = (now + timedelta(days=1)).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return run


def backups(out_dir: Path, stem: str) -> list[Path]:
    """This database's backups in `out_dir`, oldest first (other files are not ours)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for p in out_dir.iterdir():
        match = NAME.match(p.name)
        if match and match["stem"] == stem and p.is_file():
            found.append((match["at"], p))
    return [p for _, p in sorted(found)]


def prune(out_dir: Path, stem: str, keep: int) -> list[Path]:
    old = backups(out_dir, stem)[:-keep]
    for p in old:
        p.unlink(missing_ok=True)
    return old


@dataclass(frozen=True)
class History:
    db_id: str
    counts: dict[str, int]  # table -> highest id (append-only tables) or row count


# Append-only: a higher id means history the other file has not seen.
HISTORY_TABLES = ("order_events", "fills", "decisions", "signals")


def history_of(conn: sqlite3.Connection) -> History:
    tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    counts = {}
    for t in HISTORY_TABLES:
        if t not in tables:
            continue
        if t == "fills":
            counts[t] = conn.execute("select count(*) from fills").fetchone()[0]
        else:
            counts[t] = conn.execute(f"select coalesce(max(id), 0) from {t}").fetchone()[0]
    db_id = ""
    if "meta" in tables:
        row = conn.execute("select value from meta where key = 'db_id'").fetchone()
        db_id = row[0] if row else ""
    return History(db_id, counts)


def newer_than(current: History, backup: History) -> str:
    """Why the current database should not be replaced by the backup, or "" (pure)."""
    if current.db_id and backup.db_id and current.db_id != backup.db_id:
        return "it is another database (its id differs from the backup's)"
    ahead = {
        t: current.counts[t] - backup.counts.get(t, 0)
        for t in current.counts
        if current.counts[t] > backup.counts.get(t, 0)
    }
    if not ahead:
        return ""
    what = ", ".join(f"{n} {t.replace('_', ' ')}" for t, n in ahead.items())
    return f"it holds history the backup lacks ({what}); restoring would lose it"


def restore(file: Path, database: Path, force: bool = False) -> Path | None:
    """Put the backup `file` in place of `database`. Returns where the replaced database was
    kept (None when there was none). Raises BackupError naming the refusal."""
    file, database = Path(file), Path(database)
    lock = InstanceLock(database)
    from storage.lock import Locked

    try:
        lock.acquire()
    except Locked as exc:
        raise BackupError(f"{exc}; a restore needs the service stopped") from None
    try:
        src = _connect_existing(file, readonly=True)
        try:
            _check(src, f"the backup {file}")
            theirs = history_of(src)
        finally:
            src.close()
        aside = None
        if database.exists():
            if not force:
                try:
                    cur = _connect_existing(database, readonly=True)
                    try:
                        why = newer_than(history_of(cur), theirs)
                    finally:
                        cur.close()
                except sqlite3.DatabaseError:
                    why = "it is not readable (damaged?); look at it first"
                if why:
                    raise BackupError(
                        f"not restoring over {database}: {why}. Use --force to restore anyway"
                        " (the current file is kept beside it)"
                    )
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            aside = database.with_name(f"{database.name}.before-restore-{stamp}")
        tmp = database.with_name(database.name + ".restoring")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, FILE_MODE)
        try:
            with open(file, "rb") as f:
                while chunk := f.read(1 << 20):
                    os.write(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        if aside is not None:
            # The -wal and -shm go with their file: an old -wal beside the restored file would
            # be replayed into it by SQLite, and corrupt it.
            for suffix in ("", "-wal", "-shm"):
                old = Path(f"{database}{suffix}")
                if old.exists():
                    os.replace(old, Path(f"{aside}{suffix}"))
        else:
            for suffix in ("-wal", "-shm"):
                Path(f"{database}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, database)
        return aside
    finally:
        lock.release()

"""Backups, restores and the one-service-per-database lock, on real SQLite files."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import JournalRepo, open_db
from storage.backup import (
    BackupError,
    History,
    backup,
    backups,
    newer_than,
    next_run,
    restore,
)
from storage.lock import InstanceLock, Locked, holder


def make_db(path: Path, decisions: int = 1) -> Path:
    db = open_db(path)
    journal = JournalRepo(db)
    for i in range(decisions):
        journal.decision(symbol="SPY", stage="signal", outcome="skipped", reason=f"r{i}")
    db.close()
    return path


def count(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return con.execute("select count(*) from decisions").fetchone()[0]
    finally:
        con.close()


def test_backup_keeps_the_newest_and_leaves_other_files_alone(tmp_path):
    db = make_db(tmp_path / "bot.sqlite")
    out = tmp_path / "b"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "other-20200101T000000Z.sqlite").write_text("another database's backup")
    t = datetime(2026, 12, 1, tzinfo=UTC)
    made = [backup(db, out, keep=3, now=t + timedelta(days=i)) for i in range(5)]
    assert backups(out, "bot") == made[-3:]
    assert (out / "notes.txt").exists() and (out / "other-20200101T000000Z.sqlite").exists()
    assert oct(os.stat(made[-1]).st_mode & 0o777) == "0o600"
    assert not list(out.glob("*.part"))
    # A self-contained file: no -wal beside it, and it opens as the database it copies.
    assert not Path(f"{made[-1]}-wal").exists()
    assert count(made[-1]) == 1


def test_backup_of_a_missing_or_foreign_file_is_refused(tmp_path):
    with pytest.raises(BackupError, match="no database at"):
        backup(tmp_path / "nothing.sqlite", tmp_path / "b", keep=1)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("create table t (x)").connection.close()
    with pytest.raises(BackupError, match="not an optionsbot database"):
        backup(other, tmp_path / "b", keep=1)
    assert backups(tmp_path / "b", "other") == []


def test_restore_refuses_a_newer_database_then_keeps_it_aside_when_forced(tmp_path):
    db = make_db(tmp_path / "bot.sqlite", decisions=2)
    old = backup(db, tmp_path / "b", keep=5)
    make_db(db, decisions=3)  # more history after the backup
    with pytest.raises(BackupError, match="history the backup lacks.*3 decisions"):
        restore(old, db)
    assert count(db) == 5
    aside = restore(old, db, force=True)
    assert count(db) == 2 and count(aside) == 5


def test_restore_of_an_older_backup_of_the_same_history_needs_no_force(tmp_path):
    db = make_db(tmp_path / "bot.sqlite", decisions=2)
    copy = backup(db, tmp_path / "b", keep=5)
    assert restore(copy, db) is not None
    assert count(db) == 2


def test_restore_refuses_another_database(tmp_path):
    mine = make_db(tmp_path / "bot.sqlite")
    theirs = make_db(tmp_path / "theirs" / "bot.sqlite")
    for path in (mine, theirs):
        db = open_db(path)
        from storage import identity

        identity.ensure(db, "")
        db.close()
    copy = backup(theirs, tmp_path / "b", keep=1)
    with pytest.raises(BackupError, match="another database"):
        restore(copy, mine)


def test_restore_refuses_a_damaged_backup_and_changes_nothing(tmp_path):
    db = make_db(tmp_path / "bot.sqlite")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    with pytest.raises(BackupError):
        restore(bad, db, force=True)
    assert count(db) == 1
    assert not list(tmp_path.glob("bot.sqlite.before-restore-*"))


def test_restore_into_a_place_with_a_stale_wal_removes_it(tmp_path):
    db = make_db(tmp_path / "bot.sqlite", decisions=2)
    copy = backup(db, tmp_path / "b", keep=1)
    db.unlink()
    Path(f"{db}-wal").write_bytes(os.urandom(100))  # a stray -wal with no file
    restore(copy, db)
    assert not Path(f"{db}-wal").exists()
    assert count(db) == 2


def test_the_lock_is_exclusive_names_its_holder_and_dies_with_it(tmp_path):
    db = tmp_path / "bot.sqlite"
    assert holder(db) is None
    lock = InstanceLock(db).acquire()
    assert holder(db) == os.getpid()
    with pytest.raises(Locked, match=f"pid {os.getpid()}"):
        InstanceLock(db).acquire()
    with pytest.raises(BackupError, match="service stopped"):
        restore(tmp_path / "x.sqlite", db)
    lock.release()
    assert holder(db) is None
    # A process killed while holding it leaves no stale lock behind.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from storage.lock import InstanceLock;"
            f" InstanceLock({str(db)!r}).acquire(); print('held', flush=True); time.sleep(60)",
        ],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "held"
    assert holder(db) == child.pid
    child.kill()
    child.wait()
    assert holder(db) is None


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(0, 23),
    st.integers(0, 59),
)
def test_next_run_is_the_next_occurrence_within_a_day(now, hour, minute):
    run = next_run(now, f"{hour:02d}:{minute:02d}")
    assert now < run <= now + timedelta(days=1)
    assert (run.hour, run.minute, run.second, run.microsecond) == (hour, minute, 0, 0)


@given(
    st.dictionaries(st.sampled_from(["order_events", "fills", "decisions"]), st.integers(0, 9)),
    st.dictionaries(st.sampled_from(["order_events", "fills", "decisions"]), st.integers(0, 9)),
)
def test_newer_than_refuses_exactly_when_the_current_file_is_ahead_somewhere(cur, bak):
    why = newer_than(History("x", cur), History("x", bak))
    ahead = any(n > bak.get(t, 0) for t, n in cur.items())
    assert bool(why) == ahead


@pytest.mark.parametrize(
    ("storage", "needle"),
    [
        ({"backup_at": "25:00"}, "storage.backup_at: '25:00' is not a time of day"),
        ({"backup_at": "3:30"}, "use HH:MM"),
        ({"backup_keep": 0}, "storage.backup_keep"),
        ({"backup_keep": 10_000}, "storage.backup_keep"),
        ({"backup_dir": ""}, "storage.backup_dir: is empty"),
    ],
)
def test_backup_settings_are_refused_with_the_field_and_the_fix(make_settings, storage, needle):
    from configs.settings import ConfigError

    with pytest.raises(ConfigError) as err:
        make_settings(storage=storage)
    assert needle in err.value.render()


def test_a_backup_dir_that_is_a_file_is_refused(make_settings, tmp_path):
    from configs.settings import ConfigError

    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError) as err:
        make_settings(storage={"backup_dir": str(tmp_path / "f")})
    assert "is a file; name a directory" in err.value.render()

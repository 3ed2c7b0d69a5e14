"""storage.db: the doctor's integrity check, read-only and bounded in time."""

import sqlite3

import pytest

from storage import open_db
from storage.db import integrity_check


def test_a_sound_database_is_ok_and_left_unchanged(tmp_path):
    path = tmp_path / "bot.sqlite"
    open_db(path).close()
    before = path.read_bytes()
    assert integrity_check(path, 10.0) == ["ok"]
    assert path.read_bytes() == before


def test_a_missing_file_is_an_error_not_a_new_database(tmp_path):
    path = tmp_path / "none.sqlite"
    with pytest.raises(sqlite3.OperationalError):
        integrity_check(path, 10.0)
    assert not path.exists()


def test_a_check_over_its_time_is_interrupted(tmp_path):
    path = tmp_path / "bot.sqlite"
    db = open_db(path)
    db["kv"].insert_all({"key": f"k{i}", "value": "x" * 200, "updated_at": ""} for i in range(3000))
    db.close()
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        integrity_check(path, 0.0)


def test_a_database_from_a_newer_version_is_refused_not_half_read(tmp_path):
    """Rows are read by field name and a column this version does not know is dropped: after a
    rollback to an older release, a newer migration's column (a contract's multiplier, say) would
    be silently ignored and money computed without it. The service refuses the file instead."""
    from actors.failures import describe

    path = tmp_path / "bot.sqlite"
    db = open_db(path)
    db["_sqlite_migrations"].insert(
        {"migration_set": "optionsbot", "name": "m999_from_the_future", "applied_at": "x"}
    )
    db["orders"].add_column("m999_column", float)
    db.close()
    with pytest.raises(sqlite3.DatabaseError, match="m999_from_the_future") as caught:
        open_db(path)
    line = describe(caught.value, path)
    assert "newer optionsbot" in line and "\n" not in line

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


def test_a_database_that_never_recorded_quotes_has_no_table_a_rollback_would_refuse(tmp_path):
    """option_quotes is created by the quote recorder, not by a migration: a migration the
    release before does not know makes it refuse the file, and rolling back would then need a
    backup restored (losing the orders and fills since)."""
    from storage import QuoteRepo
    from storage.db import _reference_schema

    db = open_db(tmp_path / "bot.sqlite")
    assert "option_quotes" not in db.table_names()
    assert "option_quotes" not in _reference_schema()
    names = [r[0] for r in db.execute("select name from _sqlite_migrations")]
    assert not any("quote" in n for n in names), names
    QuoteRepo(db)  # the recorder's start
    assert "option_quotes" in db.table_names()
    db.close()
    db = open_db(tmp_path / "bot.sqlite")  # and reopening it is no damage
    assert "option_quotes" in db.table_names()
    db.close()

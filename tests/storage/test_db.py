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

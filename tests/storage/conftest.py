"""A migrated database on a real file, for each storage test."""

import pytest

from storage import open_db


@pytest.fixture
def db(tmp_path):
    db = open_db(tmp_path / "bot.sqlite")
    yield db
    db.close()

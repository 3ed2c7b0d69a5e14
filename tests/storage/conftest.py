"""A migrated database on a real file, for each storage test."""

import pytest

from storage import open_db
from storage.db import ensure_option_quotes


@pytest.fixture
def db(tmp_path):
    db = open_db(tmp_path / "bot.sqlite")
    ensure_option_quotes(db)  # the optional table, as the quote recorder creates it
    yield db
    db.close()

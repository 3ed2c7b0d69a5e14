"""An actor that fails says why in one line: at start (pykka only says "stopped before handling
the message") and while running; the traceback goes to the JSON log, not the console."""

from __future__ import annotations

import errno
import io
import json
import logging
import sqlite3
import sys
import threading

import pykka
import pytest

from actors import logs
from actors.base import BaseActor
from actors.failures import describe
from actors.system import StartupError, System


class BrokenAtStart(BaseActor):
    name = "broken"

    def on_start(self) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")


class Poke:
    pass


class BrokenLater(BaseActor):
    name = "later"

    def on_Poke(self, msg: Poke) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "var/bot.sqlite-wal")


@pytest.fixture
def console(tmp_path, monkeypatch):
    root = logging.getLogger()
    saved = list(root.handlers)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)  # the console handler writes here
    logs.setup("INFO", tmp_path / "log.jsonl", ["U7654321"])
    yield err.getvalue, tmp_path / "log.jsonl"
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in saved:
        root.addHandler(h)


def test_an_actor_that_cannot_start_names_the_cause(make_settings, console):
    read, jsonl = console
    system = System(make_settings())
    with pytest.raises(StartupError) as err:
        system._started("broken", BrokenAtStart.start())
    assert "broken could not start" in str(err.value)
    assert "is damaged (database disk image is malformed)" in str(err.value)
    assert "stopped before handling the message" not in str(err.value)
    out = read()
    assert "Traceback" not in out and "Unhandled exception" not in out
    assert "broken could not start: the database is damaged" in out
    assert any("exc" in json.loads(x) for x in jsonl.read_text().splitlines())


def test_an_actor_that_fails_while_running_says_why_in_one_line(console):
    read, jsonl = console
    logged = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "later failed" in record.getMessage():
                logged.set()

    # Pykka marks the actor stopped before it calls on_failure: wait for the line itself.
    seen = Seen()
    logging.getLogger().addHandler(seen)
    ref = BrokenLater.start()
    ref.tell(Poke())
    assert logged.wait(5), "on_failure never logged"
    assert ref.actor_stopped.wait(5), "the actor did not stop"
    out = read()
    assert "Traceback" not in out
    lines = [x for x in out.splitlines() if "later failed" in x]
    assert len(lines) == 1 and "disk full writing var/bot.sqlite-wal" in lines[0], repr(out)
    assert "Traceback" in jsonl.read_text()


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (sqlite3.DatabaseError("file is not a database"), "is damaged"),
        (sqlite3.OperationalError("no such column: state"), "does not have the schema"),
        (sqlite3.OperationalError("database or disk is full"), "disk full"),
        (sqlite3.OperationalError("database is locked"), "another optionsbot"),
        (OSError(errno.EACCES, "Permission denied", "/x"), "cannot write /x"),
        (RuntimeError("Invalid account code U7654321"), "Invalid account code ***"),
    ],
)
def test_describe_names_the_cause(exc, expected):
    wrapped = pykka.ActorDeadError("x stopped before handling the message")
    wrapped.__cause__ = exc
    line = describe(wrapped if not isinstance(exc, RuntimeError) else exc, "db.sqlite")
    assert expected in line and "\n" not in line

"""What went wrong, in one line a user can act on: the cause behind pykka's and SQLite's words."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from configs.redact import redact

# The exception that stopped each actor (by actor_urn): pykka only says "stopped before handling
# the message" to whoever was waiting, so BaseActor records the cause here.
FAILURES: dict[str, BaseException] = {}

_DAMAGED = ("malformed", "not a database", "file is encrypted")
_SCHEMA = ("no such table", "no such column", "has no column named", "no such index")
_FULL = ("database or disk is full",)


def root_cause(exc: BaseException) -> BaseException:
    """The first SQLite or OS error in the chain, else the exception itself."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, sqlite3.Error | OSError):
            return e
        e = e.__cause__ or e.__context__
    return exc


def describe(exc: BaseException, database: Path | str | None = None) -> str:
    """One line: what failed, and what to do about it. Never a traceback, never the account."""
    e = root_cause(exc)
    db = f"database {database}" if database else "the database"
    text = str(e) or type(e).__name__
    low = text.lower()
    if isinstance(e, sqlite3.Error):
        if any(k in low for k in _DAMAGED):
            line = f"{db} is damaged ({text}): restore a backup or move it aside"
        elif any(k in low for k in _SCHEMA):
            line = (
                f"{db} does not have the schema this version expects ({text}): restore a backup"
                " or move it aside"
            )
        elif any(k in low for k in _FULL):
            line = f"disk full writing {db} ({text}): free some space and start again"
        elif "readonly" in low or "unable to open" in low:
            line = f"cannot write {db} ({text}): check the path and its permissions"
        elif "locked" in low:
            line = f"{db} is locked ({text}): is another optionsbot running on it?"
        elif "disk i/o error" in low:
            line = f"disk I/O error on {db} ({text}): check the disk (full? failing?)"
        else:
            line = f"{db}: {text}"
    elif isinstance(e, OSError):
        where = f" {e.filename}" if e.filename else ""
        reason = e.strerror or text
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            line = f"disk full writing{where} ({reason}): free some space and start again"
        elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            line = f"cannot write{where} ({reason}): check the path and its permissions"
        else:
            line = f"{reason}{where}" if where else text
    else:
        line = f"{type(e).__name__}: {text}"
    return redact(" ".join(line.split()))

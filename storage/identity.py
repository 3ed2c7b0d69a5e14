"""Which account and which history a database belongs to, and the operator's adoption request.

The account id is a secret: only a salted hash of it is stored, the salt drawn per database.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from storage.db import write
from storage.rows import AdoptionRequest, ForeignOrder, KeyValue

NEW, SAME, OTHER, UNKNOWN = "new", "same", "other", "unknown"


def _iso() -> str:
    from storage.repos import iso

    return iso()


def meta_entries(db: Database) -> list[KeyValue]:
    if "meta" not in db.table_names():
        return []
    return [KeyValue(**r) for r in db["meta"].rows]


def meta(db: Database) -> dict[str, str]:
    """The facts about this database by key (db_id, salt, account_hash, damaged, ...)."""
    return {e.key: e.value for e in meta_entries(db)}


def _set(db: Database, **values: str) -> None:
    with write(db):
        for key, value in values.items():
            db["meta"].upsert(asdict(KeyValue(key, value, _iso())), pk="key")


def account_hash(salt: str, account: str) -> str:
    return hashlib.sha256(f"{salt}:{account}".encode()).hexdigest()


def ensure(db: Database, account: str) -> str:
    """Give a database its identity on first use; then say whose it is.

    NEW: no identity yet (a brand-new, deleted or emptied file), now bound to `account`;
    SAME: this account's; OTHER: another account's; UNKNOWN: the broker named no account.
    """
    known = meta(db)
    fresh = "db_id" not in known
    if fresh:
        _set(db, db_id=uuid.uuid4().hex, created_at=_iso(), salt=secrets.token_hex(16))
        known = meta(db)
    if not account:
        return NEW if fresh else UNKNOWN
    digest = account_hash(known["salt"], account)
    if "account_hash" not in known:
        _set(db, account_hash=digest)
        return NEW if fresh else SAME
    return SAME if secrets.compare_digest(known["account_hash"], digest) else OTHER


def mark_damaged(db: Database, why: str) -> None:
    _set(db, damaged=why)


def clear_damaged(db: Database) -> None:
    with write(db):
        db.execute("delete from meta where key = 'damaged'")


def request_adoption(db: Database) -> None:
    _set(db, adopt_request=AdoptionRequest(at=_iso()).to_json())
    with write(db):
        db.execute("delete from meta where key = 'adopt_result'")


def pending_adoption(db: Database) -> AdoptionRequest | None:
    row = db.execute("select value from meta where key = 'adopt_request'").fetchone()
    return AdoptionRequest.from_json(row[0]) if row else None


def finish_adoption(db: Database, result: str) -> None:
    with write(db):
        db.execute("delete from meta where key = 'adopt_request'")
        db["meta"].upsert(asdict(KeyValue("adopt_result", result, _iso())), pk="key")


def adoption_result(db: Database) -> str | None:
    row = db.execute("select value from meta where key = 'adopt_result'").fetchone()
    return row[0] if row else None


def foreign_orders(db: Database) -> list[ForeignOrder]:
    return [ForeignOrder(**r) for r in db["foreign_orders"].rows_where(order_by="perm_id")]


def foreign_perm_ids(db: Database) -> set[int]:
    return {o.perm_id for o in foreign_orders(db)}


def record_foreign(db: Database, rows: Iterable[ForeignOrder | Mapping[str, Any]]) -> None:
    """Remember orders as adopted-but-not-ours. Mappings are accepted until actors/adoption.py
    builds `ForeignOrder`s (it passes dicts today)."""
    at = _iso()
    with write(db):
        for row in rows:
            order = row if isinstance(row, ForeignOrder) else ForeignOrder(**row)
            db["foreign_orders"].upsert(asdict(replace(order, adopted_at=at)), pk="perm_id")


# -- the history mark: a sidecar file that outlives a rollback of the database ---------------------
# A database whose -wal was removed after a SIGKILL is older than its history, and every marker
# written inside it is rolled back with the rows it counts. The mark lives beside the file
# instead: the database's id and how far its history went (the last order event's id, the fills).


def mark_path(db_path: Path | str) -> Path:
    return Path(f"{db_path}.history")


def history(db: Database) -> dict[str, Any]:
    (last_event,) = db.execute("select coalesce(max(id), 0) from order_events").fetchone()
    (fills,) = db.execute("select count(*) from fills").fetchone()
    return {"db_id": meta(db).get("db_id", ""), "last_event_id": last_event, "fills": fills}


def write_mark(db_path: Path | str, mark: dict[str, Any]) -> None:
    path = mark_path(db_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(mark, sort_keys=True))
    os.replace(tmp, path)


def read_mark(db_path: Path | str) -> dict[str, Any] | None:
    try:
        return json.loads(mark_path(db_path).read_text())
    except (OSError, ValueError):
        return None


def rolled_back(mark: dict[str, Any] | None, now: dict[str, Any]) -> str:
    """Why this database is older than its own history, or "" (pure)."""
    if not mark or mark.get("db_id") != now["db_id"]:
        return ""
    lost_events = int(mark.get("last_event_id", 0)) - int(now["last_event_id"])
    lost_fills = int(mark.get("fills", 0)) - int(now["fills"])
    if lost_events <= 0 and lost_fills <= 0:
        return ""
    return (
        f"rolled_back: the database lost {max(lost_events, 0)} order events and "
        f"{max(lost_fills, 0)} fills it had recorded (a -wal removed after a crash?); "
        "run `optionsbot adopt`"
    )

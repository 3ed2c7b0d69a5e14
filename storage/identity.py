"""Which account and which history a database belongs to, and the operator's adoption request.

The account id is a secret: only a salted hash of it is stored, the salt drawn per database.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from typing import Any

from sqlite_utils import Database

from storage.db import write

NEW, SAME, OTHER, UNKNOWN = "new", "same", "other", "unknown"


def _iso() -> str:
    from storage.repos import iso

    return iso()


def meta(db: Database) -> dict[str, str]:
    if "meta" not in db.table_names():
        return {}
    return {r["key"]: r["value"] for r in db["meta"].rows}


def _set(db: Database, **values: str) -> None:
    with write(db):
        for key, value in values.items():
            db["meta"].upsert({"key": key, "value": value, "updated_at": _iso()}, pk="key")


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


def request_adoption(db: Database, cancel_foreign: bool = False) -> None:
    _set(db, adopt_request=json.dumps({"at": _iso(), "cancel_foreign": cancel_foreign}))
    with write(db):
        db.execute("delete from meta where key = 'adopt_result'")


def pending_adoption(db: Database) -> dict[str, Any] | None:
    row = db.execute("select value from meta where key = 'adopt_request'").fetchone()
    return json.loads(row[0]) if row else None


def finish_adoption(db: Database, result: str) -> None:
    with write(db):
        db.execute("delete from meta where key = 'adopt_request'")
        db["meta"].upsert({"key": "adopt_result", "value": result, "updated_at": _iso()}, pk="key")


def adoption_result(db: Database) -> str | None:
    row = db.execute("select value from meta where key = 'adopt_result'").fetchone()
    return row[0] if row else None


def foreign_perm_ids(db: Database) -> set[int]:
    return {r["perm_id"] for r in db["foreign_orders"].rows}


def record_foreign(db: Database, rows: list[dict[str, Any]]) -> None:
    with write(db):
        for row in rows:
            db["foreign_orders"].upsert({**row, "adopted_at": _iso()}, pk="perm_id")

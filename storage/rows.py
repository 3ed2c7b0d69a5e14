"""The rows of the non-order tables, one dataclass each: what the repositories take and return.

Each class's fields are its table's columns, in the migrations' order (storage.db); a test
holds the two together (tests/storage/test_rows.py). Values are typed on the way out: dates
and times as `date`/`datetime`, flags as `bool`, JSON columns decoded.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Self


class _ByKey:
    """Transitional: `row["field"]` and `row.get("field")` for code written against the dict
    rows (actors/orders.py, actors/adoption.py and their tests, in another branch this round).
    Remove once those read attributes; nothing in storage/ relies on it."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


def _date(value: str | date) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _datetime(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class TradingDay(_ByKey):
    """Start-of-day equity and realized P&L of one New York trading date."""

    trading_date: date
    start_equity: float
    realized_pnl: float
    guard_tripped: bool
    updated_at: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(
            trading_date=_date(row["trading_date"]),
            start_equity=float(row["start_equity"]),
            realized_pnl=float(row["realized_pnl"] or 0.0),
            guard_tripped=bool(row["guard_tripped"]),
            updated_at=row["updated_at"] or "",
        )


@dataclass(frozen=True, slots=True)
class SignalRow:
    """One journaled signal (HOLD included), with the reasons it gave."""

    id: int | None
    at: str
    bar_time: str
    symbol: str
    strategy: str
    direction: str  # "call" | "put" | "hold"
    confidence: float
    price: float
    reasons: tuple[str, ...]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**{**row, "reasons": tuple(json.loads(row["reasons"] or "[]"))})


@dataclass(frozen=True, slots=True)
class Decision(_ByKey):
    """One decision of the entry flow: a stage, its outcome and the reason."""

    id: int | None
    at: str
    symbol: str
    stage: str  # risk_gate | sizing | option | adoption ...
    outcome: str  # approved | skipped | blocked ...
    reason: str
    detail: str  # JSON, redacted as stored; `facts()` decodes it

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**row)

    def facts(self) -> dict[str, Any]:
        return json.loads(self.detail or "{}")


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A named value: the service's (kv: the last clock) and the database's own facts (meta:
    its id, salt, account hash, damage, adoption), two tables of one shape."""

    key: str
    value: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class WhaleDebounce:
    """When a symbol's whale rule last fired live: its debounce survives a restart."""

    symbol: str
    last_fired: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(symbol=row["symbol"], last_fired=_datetime(row["last_fired"]))


@dataclass(frozen=True, slots=True)
class FillSide:
    """The part of a fill the pattern-day-trader count reads (the fills table is OrderRepo's)."""

    con_id: int | None
    side: str
    at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(con_id=row["con_id"], side=row["side"], at=_datetime(row["at"]))


# -- storage.identity -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdoptionRequest(_ByKey):
    """The operator's `optionsbot adopt`, waiting for the service (meta key adopt_request)."""

    at: str

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


@dataclass(frozen=True, slots=True)
class ForeignOrder(_ByKey):
    """An order at the broker the operator adopted as known but not ours."""

    perm_id: int
    order_ref: str | None = None
    order_id: int | None = None
    status: str | None = None
    adopted_at: str = ""


# Table -> row class, for the schema test: each class's fields are that table's columns.
ROWS: dict[str, type] = {
    "trading_days": TradingDay,
    "signals": SignalRow,
    "decisions": Decision,
    "kv": KeyValue,
    "whale_debounce": WhaleDebounce,
    "meta": KeyValue,
    "foreign_orders": ForeignOrder,
}

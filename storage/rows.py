"""Every table's row, typed, once: what the repositories take and return.

Each class's fields are its table's columns. The tables are created by the migrations
(storage.db), which are history and never rewritten; tests/storage/test_rows.py holds each class
here against the schema the migrations build, column for column, so the two cannot drift apart.
Values are typed on the way out where the order side does not need the stored text: dates and
times as `date`/`datetime`, flags as `bool`, JSON columns decoded.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any, Self

# The standard US equity option multiplier, for rows stored before the multiplier column
# existed (m004): every contract the service traded then was a standard one.
STANDARD_MULTIPLIER = 100.0


_NAMES: dict[type, frozenset[str]] = {}


class Row:
    """Conversion to and from the dicts sqlite-utils speaks, by field name."""

    __slots__ = ()

    @classmethod
    def from_db(cls, row: dict[str, Any]) -> Self:
        names = _NAMES.get(cls)
        if names is None:  # fields() reflects on every call: once per class is enough
            names = _NAMES[cls] = frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]
        return cls(**{k: v for k, v in row.items() if k in names})

    def to_db(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class Order(Row):
    order_ref: str  # our idempotency key, echoed by IB on executions
    bracket_ref: str | None = None
    parent_ref: str | None = None
    role: str | None = None  # entry | take_profit | stop_loss | exit
    symbol: str
    strategy: str | None = None
    con_id: int | None = None
    local_symbol: str | None = None
    expiry: str | None = None
    strike: float | None = None
    right: str | None = None
    action: str  # BUY | SELL
    order_type: str | None = None
    quantity: float
    limit_price: float | None = None
    aux_price: float | None = None
    oca_group: str | None = None
    state: str = "new"
    filled: float | None = 0.0
    avg_fill_price: float | None = None
    order_id: int | None = None
    perm_id: int | None = None
    client_id: int | None = None
    dry_run: int | None = None
    reason: str | None = None
    trading_date: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    multiplier: float | None = None  # the contract's; None: stored before m004

    @property
    def remaining(self) -> float:
        return self.quantity - (self.filled or 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderEvent(Row):
    id: int | None = None
    order_ref: str | None = None
    at: str | None = None
    event: str | None = None
    source: str | None = None
    dest: str | None = None
    detail: str | None = None  # JSON


@dataclass(frozen=True, slots=True, kw_only=True)
class Fill(Row):
    exec_id: str  # IB's execution id: a duplicate is the same fill
    order_ref: str | None = None
    at: str | None = None
    side: str | None = None  # BOT | SLD
    quantity: float | None = None
    price: float | None = None
    commission: float | None = 0.0
    con_id: int | None = None
    symbol: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Position(Row):
    con_id: int
    symbol: str | None = None
    local_symbol: str | None = None
    expiry: str | None = None
    strike: float | None = None
    right: str | None = None
    quantity: float = 0.0
    avg_cost: float = 0.0  # per contract: premium x multiplier
    realized_pnl: float | None = 0.0
    bracket_ref: str | None = None
    strategy: str | None = None
    updated_at: str | None = None
    multiplier: float | None = None  # the contract's; None: stored before m004


def multiplier(row: Order | Position) -> float:
    """The contract multiplier of an order's or a position's contract."""
    return row.multiplier or STANDARD_MULTIPLIER


def _date(value: str | date) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _datetime(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class TradingDay:
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
class Decision:
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


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionQuoteRow(Row):
    """One option quote as the service received it (data.record_quotes): a backtest's input."""

    id: int | None = None
    received_at: str  # UTC ISO-8601, the service clock: when the quote reached the service
    symbol: str
    expiry: str  # YYYYMMDD
    strike: float
    right: str  # C | P
    con_id: int | None = None
    local_symbol: str | None = None
    trading_class: str | None = None
    multiplier: int | None = None
    bid: float | None = None
    ask: float | None = None
    last: float | None = None  # None when IB sent none (NaN is not stored)
    volume: float | None = None
    quote_time: str | None = None  # when its bid or ask last changed, as the service saw it
    age_known: int | None = None  # 0: never seen to change, its age unknown


# -- storage.identity -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdoptionRequest:
    """The operator's `optionsbot adopt`, waiting for the service (meta key adopt_request)."""

    at: str

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


@dataclass(frozen=True, slots=True)
class ForeignOrder:
    """An order at the broker the operator adopted as known but not ours."""

    perm_id: int
    order_ref: str | None = None
    order_id: int | None = None
    status: str | None = None
    adopted_at: str = ""


# Table -> row class, for the schema test: each class's fields are that table's columns.
ROWS: dict[str, type] = {
    "orders": Order,
    "order_events": OrderEvent,
    "fills": Fill,
    "positions": Position,
    "trading_days": TradingDay,
    "signals": SignalRow,
    "decisions": Decision,
    "kv": KeyValue,
    "whale_debounce": WhaleDebounce,
    "meta": KeyValue,
    "foreign_orders": ForeignOrder,
    "option_quotes": OptionQuoteRow,
}

"""The order side's rows, typed: what OrderRepo and PositionRepo take and return.

One definition of each row. The tables are created by the migrations (storage.db), which are
history and never rewritten; tests/storage/test_rows.py holds each class here against the schema
the migrations build, column for column and type for type, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Self

# The standard US equity option multiplier, for rows stored before the multiplier column
# existed (m004): every contract the service traded then was a standard one.
STANDARD_MULTIPLIER = 100.0


class Row:
    """Conversion to and from the dicts sqlite-utils speaks, by field name."""

    __slots__ = ()

    @classmethod
    def from_db(cls, row: dict[str, Any]) -> Self:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
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

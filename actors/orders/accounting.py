"""Money from fills and rows, with no I/O: holdings, realized and unrealized P&L, exposure, equity.

Every amount is premium x the contract's own multiplier (the chain's, stored on each order and
position; storage.rows.multiplier), never an assumed 100.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from storage.rows import Fill, Order, Position, multiplier

EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Holding:
    quantity: float = 0.0
    avg_cost: float = 0.0  # per contract: premium x multiplier
    realized: float = 0.0  # after commissions


def is_buy(side: str) -> bool:
    return side in ("BOT", "BUY")


def apply_fill(
    h: Holding, side: str, quantity: float, price: float, commission: float, mult: float
) -> tuple[Holding, float]:
    """The holding after one fill, and the realized P&L the fill itself made (commission included)."""
    realized = -commission
    if is_buy(side):
        qty = h.quantity + quantity
        avg = (h.avg_cost * h.quantity + price * mult * quantity) / qty if qty else 0.0
        return Holding(qty, avg, h.realized + realized), realized
    realized += (price * mult - h.avg_cost) * quantity
    qty = h.quantity - quantity
    return Holding(qty, h.avg_cost if qty else 0.0, h.realized + realized), realized


def fold(fills: Iterable[tuple[str, float, float, float]], mult: float) -> Holding:
    """A holding rebuilt from (side, quantity, price, commission) fills in time order."""
    h = Holding()
    for side, quantity, price, commission in fills:
        h, _ = apply_fill(h, side, quantity, price, commission, mult)
    return h


def new_position(order: Order) -> Position:
    """The empty position an order's first fill opens."""
    return Position(
        con_id=order.con_id or 0,
        symbol=order.symbol,
        local_symbol=order.local_symbol,
        expiry=order.expiry,
        strike=order.strike,
        right=order.right,
        bracket_ref=order.bracket_ref,
        strategy=order.strategy,
        multiplier=order.multiplier,
    )


def position_after_fill(
    pos: Position | None, order: Order, side: str, quantity: float, price: float, commission: float
) -> tuple[Position, float]:
    """The position after one fill of `order`, and the P&L that fill realized. A buy names the
    bracket that now protects the position."""
    pos = pos or new_position(order)
    held = Holding(pos.quantity, pos.avg_cost, pos.realized_pnl or 0.0)
    held, realized = apply_fill(held, side, quantity, price, commission, multiplier(pos))
    return (
        dataclasses.replace(
            pos,
            quantity=held.quantity,
            avg_cost=held.avg_cost,
            realized_pnl=(pos.realized_pnl or 0.0) + realized,
            bracket_ref=order.bracket_ref if is_buy(side) else pos.bracket_ref,
        ),
        realized,
    )


def rebuilt_position(pos: Position, fills: Iterable[Fill]) -> Position:
    """A position rebuilt from all its contract's fills (after IB corrected one)."""
    held = fold(
        ((f.side or "", f.quantity or 0.0, f.price or 0.0, f.commission or 0.0) for f in fills),
        multiplier(pos),
    )
    return dataclasses.replace(
        pos, quantity=held.quantity, avg_cost=held.avg_cost, realized_pnl=held.realized
    )


def order_fill_totals(order: Order, quantity: float, price: float) -> tuple[float, float]:
    """An order's filled quantity and average fill price after one more fill."""
    before = order.filled or 0.0
    filled = before + quantity
    return filled, ((order.avg_fill_price or 0.0) * before + price * quantity) / filled


def fill_totals(fills: Iterable[Fill]) -> tuple[float, float]:
    """Filled quantity and average price of an order, from its fills."""
    fills = list(fills)
    filled = sum(f.quantity or 0.0 for f in fills)
    avg = sum((f.quantity or 0.0) * (f.price or 0.0) for f in fills) / filled if filled else 0.0
    return filled, avg


def unrealized(open_positions: Iterable[Position], last_mid: Mapping[int, float]) -> float:
    """Open positions at the last good mid, less what they cost; those never quoted count 0."""
    total = 0.0
    for p in open_positions:
        mid = last_mid.get(p.con_id)
        if mid is not None:
            total += mid * multiplier(p) * p.quantity - p.avg_cost * p.quantity
    return total


def equity(start: float, positions: Iterable[Position], unrealized_pnl: float) -> float:
    """The paper account: its starting equity, all realized P&L so far, and the open P&L."""
    return equity_of(start, sum(p.realized_pnl or 0.0 for p in positions), unrealized_pnl)


def equity_of(start: float, realized_total: float, unrealized_pnl: float) -> float:
    """`equity` from the realized total (PositionRepo.realized_total sums it in SQL)."""
    return start + realized_total + unrealized_pnl


def exposure(
    open_positions: Iterable[Position], working_entries: Iterable[Order]
) -> dict[str, float]:
    """Premium committed per symbol: positions at cost, and working entries' unfilled part at
    their limit (their premium is committed, and a symbol with an entry working is busy)."""
    out: dict[str, float] = {}
    for p in open_positions:
        out[p.symbol or ""] = out.get(p.symbol or "", 0.0) + p.avg_cost * p.quantity
    for o in working_entries:
        out[o.symbol] = (
            out.get(o.symbol, 0.0) + (o.limit_price or 0.0) * multiplier(o) * o.remaining
        )
    return out


def premium(pos: Position) -> float:
    """The average premium paid per share of the contract (avg_cost is per contract)."""
    return (pos.avg_cost or 0.0) / multiplier(pos)

"""Dry-run fills: which working paper orders a quote fills, as IB would, with no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class PaperOrder:
    order_ref: str
    con_id: int
    action: str  # BUY | SELL
    order_type: str  # LMT | STP | MKT
    quantity: float
    limit_price: float = 0.0
    aux_price: float = 0.0
    parent_ref: str = ""
    oca_group: str = ""
    active: bool = True  # children wait for the parent's fill
    # As at the broker: a DAY order dies at the session's close, a GTC one stays. Paper exits
    # that outlived their day would flatter the paper results and hide unprotected positions.
    tif: str = "DAY"


@dataclass(frozen=True, slots=True)
class PaperFill:
    order_ref: str
    price: float
    quantity: float


def fill_price(order: PaperOrder, bid: float, ask: float, slippage: float = 0.0) -> float | None:
    """The price a quote fills `order` at, or None.

    A buy limit fills when the ask reaches it, a sell limit when the bid reaches it, both at
    the limit: a resting order is hit at its own price, and paper results must never look
    better than a real account's. A sell stop triggers when the bid trades at or through it
    and fills at the bid less slippage (a stop is a market order once triggered).
    """
    # No quote (NaN, IB's -1, zero) or a crossed one (bid above ask): nothing to fill against.
    if not (math.isfinite(bid) and math.isfinite(ask)) or bid <= 0 or ask <= 0 or bid > ask:
        return None
    if order.order_type == "MKT":
        return ask + slippage if order.action == "BUY" else max(0.01, bid - slippage)
    if order.order_type == "LMT":
        if order.action == "BUY" and ask <= order.limit_price:
            return order.limit_price
        if order.action == "SELL" and bid >= order.limit_price:
            return order.limit_price
        return None
    if order.order_type == "STP":
        if order.action == "SELL" and bid <= order.aux_price:
            return max(0.01, bid - slippage)
        if order.action == "BUY" and ask >= order.aux_price:
            return ask + slippage
    return None


@dataclass
class PaperBook:
    """Working paper orders by contract; `on_quote` returns the fills, parents before children."""

    orders: dict[str, PaperOrder] = field(default_factory=dict)

    def add(self, order: PaperOrder) -> None:
        self.orders[order.order_ref] = order

    def remove(self, order_ref: str) -> PaperOrder | None:
        return self.orders.pop(order_ref, None)

    def on_quote(
        self, con_id: int, bid: float, ask: float, slippage: float = 0.0
    ) -> list[PaperFill]:
        fills: list[PaperFill] = []
        for order in sorted(self.orders.values(), key=lambda o: bool(o.parent_ref)):
            if order.con_id != con_id or not order.active or order.order_ref not in self.orders:
                continue
            price = fill_price(order, bid, ask, slippage)
            if price is None:
                continue
            fills.append(PaperFill(order.order_ref, round(price, 4), order.quantity))
            self.orders.pop(order.order_ref)
            # A filled parent releases its children; a filled OCA member cancels the others
            # (the caller sees them disappear through `cancelled_by`).
            for child in self.orders.values():
                if child.parent_ref == order.order_ref:
                    child.active = True
            # Children become active only on the next quote, as at IB (they are sent on the fill).
            break
        return fills

    def expire_day_orders(self, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """The session closed: DAY orders expire (but those in `keep`), and so do children still
        waiting on a parent that expired (IB takes a bracket's children down with their parent).
        GTC orders stay."""
        gone = {
            ref for ref, o in self.orders.items() if o.tif in ("", "DAY", "IOC") and ref not in keep
        }
        gone |= {ref for ref, o in self.orders.items() if o.parent_ref in gone and not o.active}
        for ref in gone:
            self.orders.pop(ref)
        return sorted(gone)

    def oca_siblings(self, order_ref: str, oca_group: str) -> list[str]:
        if not oca_group:
            return []
        return [
            o.order_ref
            for o in self.orders.values()
            if o.oca_group == oca_group and o.order_ref != order_ref
        ]

    def children(self, parent_ref: str) -> list[str]:
        return [o.order_ref for o in self.orders.values() if o.parent_ref == parent_ref]

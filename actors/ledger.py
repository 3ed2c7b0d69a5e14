"""Position accounting from fills: one pure step, used live and to rebuild after a correction."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MULTIPLIER = 100.0


@dataclass(frozen=True, slots=True)
class Holding:
    quantity: float = 0.0
    avg_cost: float = 0.0  # per contract: premium x multiplier
    realized: float = 0.0  # after commissions


def apply_fill(
    h: Holding, side: str, quantity: float, price: float, commission: float
) -> tuple[Holding, float]:
    """The holding after one fill, and the realized P&L the fill itself made (commission included)."""
    realized = -commission
    if side in ("BOT", "BUY"):
        qty = h.quantity + quantity
        avg = (h.avg_cost * h.quantity + price * MULTIPLIER * quantity) / qty if qty else 0.0
        return Holding(qty, avg, h.realized + realized), realized
    realized += (price * MULTIPLIER - h.avg_cost) * quantity
    qty = h.quantity - quantity
    return Holding(qty, h.avg_cost if qty else 0.0, h.realized + realized), realized


def fold(fills: Iterable[tuple[str, float, float, float]]) -> Holding:
    """A holding rebuilt from (side, quantity, price, commission) fills in time order."""
    h = Holding()
    for side, quantity, price, commission in fills:
        h, _ = apply_fill(h, side, quantity, price, commission)
    return h

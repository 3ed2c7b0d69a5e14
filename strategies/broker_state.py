"""Can the database vouch for what the broker holds? Pure functions, no I/O.

A lost, emptied or rolled-back database does not know the positions and orders the broker
still holds: trading on it would stack new entries on positions already held and start the
daily loss guard from an equity that is already down. These decide when that is so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

# IB statuses of an order still able to trade (https://interactivebrokers.github.io/tws-api/order_submission.html).
WORKING = frozenset({"ApiPending", "PendingSubmit", "PreSubmitted", "Submitted", "PendingCancel"})
_EPS = 1e-9


@dataclass(frozen=True)
class Unknown:
    """What the broker holds that the database does not account for."""

    positions: tuple[tuple[int, float, float], ...] = ()  # (conId, broker's, ours)
    orders: tuple[str, ...] = ()  # orderRef, or "permId <n>" for an order without one

    def __bool__(self) -> bool:
        return bool(self.positions or self.orders)

    def reason(self) -> str:
        def n(k: int, word: str) -> str:
            return f"{k} {word}{'' if k == 1 else 's'}"

        parts = []
        if self.positions:
            parts.append(n(len(self.positions), "position"))
        if self.orders:
            parts.append(n(len(self.orders), "working order"))
        return (
            f"unknown_broker_state: the broker holds {' and '.join(parts)} this database does "
            "not know; run `optionsbot adopt`"
        )


def unknown_broker_state(
    ours: Mapping[int, float],
    broker_positions: Iterable[tuple[int, float]],
    working: Iterable[tuple[str, int, str]],
    known_ref: Callable[[str], bool],
    foreign_perm_ids: set[int],
) -> Unknown:
    """Positions the broker holds in a quantity the database does not, and working orders
    (orderRef, permId, status) it neither placed nor adopted.

    A database that holds more than the broker is a different fault (an exit filled while the
    service was down is settled by reconciliation); it is not what trading blind looks like.
    """
    positions = tuple(
        (con_id, qty, ours.get(con_id, 0.0))
        for con_id, qty in sorted(broker_positions)
        if abs(qty) > _EPS and abs(qty - ours.get(con_id, 0.0)) > _EPS
    )
    orders = tuple(
        ref or f"permId {perm}"
        for ref, perm, status in working
        if status in WORKING and not (ref and known_ref(ref)) and perm not in foreign_perm_ids
    )
    return Unknown(positions, orders)


def sane(x: float | None) -> bool:
    # IB sends Double.MAX_VALUE for "unset"; ib_async leaves NaN until the first answer.
    return x is not None and math.isfinite(x) and abs(x) < 1e14


def broker_start_equity(net_liquidation: float, daily_pnl: float | None) -> float | None:
    """The day's start-of-day equity as the broker sees it: equity now minus today's P&L."""
    if not (sane(net_liquidation) and net_liquidation > 0 and sane(daily_pnl)):
        return None
    return net_liquidation - float(daily_pnl)  # type: ignore[arg-type]


def seeded_start_equity(stored: float | None, from_broker: float | None) -> float | None:
    """The higher of the two: the guard measures the day's loss from the higher start, so a
    database that began the day late (or afresh, after a loss) cannot hide a loss already made."""
    if from_broker is None:
        return stored
    if stored is None or not math.isfinite(stored):
        return from_broker
    return max(stored, from_broker)

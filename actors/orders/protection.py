"""The actor side of the protection invariant (strategies.protection is the pure rule): which
orders are exits, what the check found and what to do, and the mixin that carries it out.

Every open position (ours or adopted: anything in the positions table) must be covered by
working exits for its full quantity, checked after every execution, every reconciliation and on
every Tick. Not before reconciliation: until the broker's word is in, an order the service
thinks lost may be working, and protection on top of it could sell more than is held.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from actors.orders.accounting import premium
from actors.orders.entry import exit_legs
from machines.order import OrderState
from storage.rows import Order, Position
from strategies.protection import Coverage, ExitOrder, Intent, coverage, intents
from strategies.ticks import bracket_prices

log = logging.getLogger("optionsbot.orders")

EPS = 1e-9

# Real seconds before the same gap on the same contract is covered again: a protection the broker
# rejects must not be resent on every Tick.
PROTECT_RETRY_S = 30.0

# Checks on which an excess of exits is judged. Between an exit's fill and its OCA siblings'
# cancel, the siblings outnumber what is held for a moment: not an incident.
EXCESS_CHECKS = frozenset({"periodic", "reconciliation"})


def exit_orders(open_orders: Iterable[Order]) -> list[ExitOrder]:
    """The working SELL orders, as the protection rule sees them."""
    rows = list(open_orders)
    working_entries = {r.order_ref for r in rows if r.role == "entry"}
    return [
        ExitOrder(
            order_ref=r.order_ref,
            con_id=r.con_id or 0,
            role=r.role or "",
            remaining=r.remaining,
            state=r.state,
            oca_group=r.oca_group or "",
            pending_parent=bool(r.parent_ref) and r.parent_ref in working_entries,
        )
        for r in rows
        if r.action == "SELL"
    ]


def protection_group(pos: Position, ref: str, exits: Iterable[ExitOrder]) -> str:
    """Into the bracket's group when nothing else covers the contract (the usual case: exits
    expired, cancelled with a partly filled entry, or by someone else), so a later flatten
    cancels it. If some exits still work, a group of its own: one OCA group closes at most
    its largest member, and joining would leave the gap as bare as before."""
    partly = any(e.con_id == pos.con_id and e.role in ("stop_loss", "exit") for e in exits)
    return f"OCA-{ref}" if partly else f"OCA-{pos.bracket_ref}"


@dataclass(frozen=True, slots=True)
class Review:
    """One check of the invariant: what to do, and what changed since the last check."""

    todo: list[Intent]
    cover: dict[int, Coverage]
    gaps: dict[int, float]  # con_id -> contracts held without a working stop
    excess: dict[int, float]  # con_id -> exits beyond what is held
    new_gaps: list[int]  # incidents to log (a gap that is new or changed)
    closed_gaps: list[int]  # protected again
    new_excess: list[int]


def review(
    held: Mapping[int, float],
    exits: list[ExitOrder],
    action: str,
    reason: str,
    uncovered: Mapping[int, float],
    excess_before: Mapping[int, float],
) -> Review:
    cover = coverage(held, exits)
    gaps = {c: v.gap for c, v in cover.items() if v.gap > EPS}
    excess = {c: v.excess for c, v in cover.items() if v.excess > EPS}
    if reason not in EXCESS_CHECKS:
        excess = dict(excess_before)
    return Review(
        todo=intents(held, exits, action),
        cover=cover,
        gaps=gaps,
        excess=excess,
        new_gaps=[c for c, g in gaps.items() if uncovered.get(c) != g],
        closed_gaps=[c for c in set(uncovered) - set(gaps)],
        new_excess=[c for c, o in excess.items() if excess_before.get(c) != o],
    )


class Protection:
    """Mixed into OrderActor; uses its repos, settings, metrics and exit placement."""

    def _exit_orders(self: Any) -> list[ExitOrder]:
        return exit_orders(self.orders.open_orders())

    def _refused_lately(self: Any, con_id: int, now: float) -> bool:
        """The last protection for this contract was refused by the broker (rejected, inactive)
        less than PROTECT_RETRY_S ago: wait rather than resend on every Tick. Protection that was
        working and then went away (cancelled, expired) is a new incident and is replaced at once."""
        last = self.protect_tried.get(con_id)
        if last is None or now - last[0] >= PROTECT_RETRY_S:
            return False
        for ref in last[1]:
            row = self.orders.get(ref)
            if row is not None and row.state in (OrderState.REJECTED, OrderState.INACTIVE):
                return True
        return False

    def _enforce_protection(self: Any, reason: str) -> list[Intent]:
        """Place what is missing (or flatten the gap, as `orders.unprotected_action` says), log
        each incident once, export the gauges."""
        if not self.reconciled or self.stopping:
            return []
        held = {p.con_id: p for p in self.positions.open()}
        qty = {c: min(p.quantity, self.broker_cap.get(c, p.quantity)) for c, p in held.items()}
        exits = self._exit_orders()
        r = review(
            qty, exits, self.settings.orders.unprotected_action, reason, self.uncovered, self.excess
        )
        for con_id in r.new_gaps:
            pos = held[con_id]
            log.error(
                "%s %s: %g of %g contracts held without a working stop (%s)",
                pos.symbol,
                pos.local_symbol or con_id,
                r.gaps[con_id],
                pos.quantity,
                reason,
            )
        for con_id in r.closed_gaps:
            log.info("contract %d: protected again", con_id)
        for con_id in r.new_excess:
            self.metrics.reconciliation_mismatches.inc()
            log.error(
                "contract %d: exits for %g more contracts than held (%g): a stop would sell "
                "short; check the broker's orders",
                con_id,
                r.excess[con_id],
                r.cover[con_id].held,
            )
        self.uncovered, self.excess = r.gaps, r.excess
        self.metrics.overprotected_positions.set(len(r.excess))
        now = time.monotonic()
        for intent in r.todo:
            if intent.kind == "excess":
                continue
            if self._refused_lately(intent.con_id, now):
                continue
            pos = held[intent.con_id]
            if intent.kind == "flatten":
                oca = protection_group(
                    pos, f"{pos.bracket_ref}-F{secrets.token_hex(2)}", self._exit_orders()
                )
                refs = self._place_exit(pos, f"unprotected: {reason}", intent.quantity, oca)
            else:
                refs = self._place_protection(pos, int(intent.quantity), reason)
            self.protect_tried[intent.con_id] = (now, refs)
            self.metrics.protection_placed.labels(reason, intent.kind).inc()
        # The gauge counts what is uncovered now, after what was just placed (working at once in
        # the machines; the broker's answer follows).
        after = coverage(qty, self._exit_orders()) if r.todo else r.cover
        self.metrics.unprotected_positions.set(sum(1 for v in after.values() if v.gap >= 1 - EPS))
        return r.todo

    def _place_protection(self: Any, pos: Position, quantity: int, reason: str) -> list[str]:
        """A take-profit and a stop (GTC) for `quantity` contracts of `pos`, priced from its
        average cost with the bracket's percentages. They join the bracket's OCA group, as every
        exit does: a flatten's market exit then cancels them too, so nothing can double-sell."""
        paid = premium(pos)
        o = self.settings.orders
        try:
            take_profit, stop = bracket_prices(
                pos.symbol or "", paid, o.take_profit_pct, o.stop_loss_pct
            )
        except ValueError as exc:
            log.error(
                "%s %s: no protection price from average cost %.4f (%s); flattening instead",
                pos.symbol,
                pos.local_symbol,
                paid,
                exc,
            )
            return self._place_exit(pos, f"unprotected, no price: {reason}", quantity)
        ref = f"{pos.bracket_ref}-P{secrets.token_hex(2)}"
        oca = protection_group(pos, ref, self._exit_orders())
        legs = exit_legs(ref, quantity, take_profit, stop, oca)
        self._send_exits(pos, legs, ("take_profit", "stop_loss"), f"protection: {reason}")
        log.warning(
            "%s %s: protection placed for %d contracts: take-profit %.2f, stop %.2f (GTC, %s)",
            pos.symbol,
            pos.local_symbol or pos.con_id,
            quantity,
            take_profit,
            stop,
            reason,
        )
        return [leg.order_ref for leg in legs]

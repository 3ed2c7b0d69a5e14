"""Reconciliation as pure functions: what the broker's word (BrokerState) means for the orders
left unknown by a crash, for cancels that may never have reached it, and for positions.

A difference in positions is flagged for a person, never "fixed" by trading: a guess there is
how money gets lost. OrderActor carries out the triggers and cancels these return.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from actors import messages as m
from machines.order import (
    STATUS_TRIGGER,
    STILL_WORKING,
    WORKING,
    OrderState,
    settle_trigger,
    status_trigger,
)

EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Step:
    """One trigger to fire on an order, with its reason and the fields to persist with it."""

    trigger: str
    reason: str
    fields: Mapping[str, Any] = field(default_factory=dict)


def reduced_total(status: m.BrokerOrderStatus, quantity: float) -> float | None:
    """The broker's smaller total for an order still working, or None: an exit's OCA group
    (ocaType 2) shrinks the stop when its take-profit fills in part. Only a working status with
    something left says so; a status before the first acknowledgement carries no quantities."""
    if status.status not in ("PreSubmitted", "Submitted") or status.remaining <= EPS:
        return None
    total = status.filled + status.remaining
    return total if total < quantity - EPS else None


def settle(
    status: m.BrokerOrderStatus | None, recorded: float, quantity: float
) -> tuple[list[Step], str]:
    """Settle one order left unknown by a crash, from the broker's status for it (None: not at
    the broker) and the fills recorded for it. Returns the steps and a warning ("" if none)."""
    complete = recorded >= quantity - EPS
    if status is None:
        # Never seen by the broker (or gone from today's lists): never resent.
        trigger = "fill" if complete else "not_found"
        return [Step(trigger, "reconciled: not at the broker", {"filled": recorded})], ""
    s = status.status
    if s == "Filled" or complete:
        warning = (
            ""
            if complete
            else f"the broker says filled but {recorded:g} of {quantity:g} executions are known"
        )
        return [Step("fill", f"reconciled: {s}", {"filled": max(recorded, status.filled)})], warning
    trigger = settle_trigger(s, status.reason)
    steps = [Step(trigger, f"reconciled: {s}")]
    if trigger == "accept" and recorded > 0:
        # At the broker and working: PreSubmitted, Submitted, PendingCancel, PendingSubmit.
        steps.append(Step("partial_fill", "reconciled: fills recorded", {"filled": recorded}))
    return steps, ""


def chase_cancels(
    states: Mapping[str, str], statuses: Mapping[str, m.BrokerOrderStatus]
) -> tuple[list[tuple[str, str]], list[str]]:
    """A cancel sent before a disconnect may never have reached the broker. For each order
    pending a cancel: (ref, reason) to mark cancelled from the broker's word, or its ref to
    cancel again while it still works there."""
    done: list[tuple[str, str]] = []
    again: list[str] = []
    for ref, state in states.items():
        status = statuses.get(ref)
        if state != OrderState.PENDING_CANCEL or status is None:
            continue
        if STATUS_TRIGGER.get(status.status) == "cancelled":
            done.append((ref, f"reconciled: {status.status}"))
        elif status.status in STILL_WORKING:
            again.append(ref)
    return done, again


def ended_meanwhile(
    states: Mapping[str, str],
    statuses: Mapping[str, m.BrokerOrderStatus],
    asked_after: Collection[str],
) -> list[tuple[str, Step]]:
    """Orders the book holds as working whose end no live status told: it came while the socket
    was closed (ib_async's sync after a reconnect emits no status for a completed order), or the
    order never reached the broker: (ref, step) in order.

    `asked_after`: the orders the book held when the broker's lists were asked. One of them in
    none of the lists is not at the broker: never sent (the send gate drops what it still queued
    when the socket closes), or ended before today's completed orders begin. It is settled as a
    restart settles an unknown order the broker does not know (lose_track, not_found: never
    resent); protection then covers no more than the broker holds (broker_cap). An order placed
    after the ask is missing from the lists while it works: left alone. A refused cancel
    (ib_async reports it as Cancelled) is no end either. An order pending a cancel is settled
    here only when absent; the broker's word on it is chase_cancels'."""
    out: list[tuple[str, Step]] = []
    for ref, state in states.items():
        if state not in WORKING and state != OrderState.PENDING_CANCEL:
            continue
        status = statuses.get(ref)
        if status is None:
            if ref in asked_after:
                why = "reconciled: not at the broker"
                out += [(ref, Step("lose_track", why)), (ref, Step("not_found", why))]
            continue
        if state == OrderState.PENDING_CANCEL:
            continue
        trigger = status_trigger(status.status, status.reason)
        if trigger == "reject" and state == OrderState.PARTIALLY_FILLED:
            trigger = "cancelled"  # it traded: ended, not refused
        if trigger in ("cancelled", "deactivate", "reject"):
            out.append((ref, Step(trigger, f"reconciled: {status.status}")))
    return out


def broker_cap(ours: Mapping[int, float], theirs: Mapping[int, float]) -> dict[int, float]:
    """Contracts the broker holds fewer of than SQLite says -> what it holds. Protection covers
    no more than that: a SELL stop for contracts that are not there (a fill the service never
    saw) would open a short when it fires."""
    return {
        c: max(0.0, theirs.get(c, 0.0)) for c, q in ours.items() if theirs.get(c, 0.0) < q - EPS
    }


def position_mismatches(
    ours: Mapping[int, float], theirs: Mapping[int, float]
) -> list[tuple[int, float, float]]:
    """(con_id, ours, the broker's) for every contract the two disagree on, in con_id order."""
    return [
        (c, ours.get(c, 0.0), theirs.get(c, 0.0))
        for c in sorted(set(ours) | set(theirs))
        if abs(ours.get(c, 0.0) - theirs.get(c, 0.0)) > EPS
    ]


def strangers(
    statuses: Iterable[m.BrokerOrderStatus], ours: set[str], known: Callable[[str], bool]
) -> list[str]:
    """Orders at the broker that this service did not place (by orderRef, or order id)."""
    return [
        s.order_ref or str(s.order_id)
        for s in statuses
        if s.order_ref not in ours and not known(s.order_ref or "")
    ]

"""The order lifecycle state machine, with the real-world edges IB produces, as a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from transitions import EventData, Machine

from actors.ibcodes import CANCEL_REFUSED, ORDER_REJECTED, error_code
from machines.base import Row, build


class OrderState(StrEnum):
    NEW = "new"
    PENDING_SUBMIT = "pending_submit"
    SUBMITTED = "submitted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    INACTIVE = "inactive"
    UNKNOWN = "unknown"


S = OrderState
TERMINAL = frozenset({S.FILLED, S.CANCELLED, S.REJECTED, S.INACTIVE})
WORKING = [S.PENDING_SUBMIT, S.SUBMITTED, S.PARTIALLY_FILLED]

TABLE: list[Row] = [
    # Written to SQLite in NEW, moved to PENDING_SUBMIT and persisted, then sent.
    ("submit", S.NEW, S.PENDING_SUBMIT),
    # A NEW order found at start-up was never sent: drop it rather than send it late.
    ("abandon", S.NEW, S.CANCELLED),
    # IB repeats statuses (PreSubmitted then Submitted, Submitted after a partial fill,
    # a late Submitted after a cancel request): those keep the state.
    ("accept", [S.PENDING_SUBMIT, S.UNKNOWN, S.SUBMITTED], S.SUBMITTED),
    ("accept", S.PARTIALLY_FILLED, S.PARTIALLY_FILLED),
    ("accept", S.PENDING_CANCEL, S.PENDING_CANCEL),
    (
        "partial_fill",
        [S.PENDING_SUBMIT, S.SUBMITTED, S.PARTIALLY_FILLED, S.UNKNOWN],
        S.PARTIALLY_FILLED,
    ),
    # Fills can still arrive after a cancel was sent.
    ("partial_fill", S.PENDING_CANCEL, S.PENDING_CANCEL),
    ("fill", [*WORKING, S.PENDING_CANCEL, S.UNKNOWN], S.FILLED),
    ("cancel", WORKING, S.PENDING_CANCEL),
    ("cancelled", [*WORKING, S.PENDING_CANCEL, S.UNKNOWN], S.CANCELLED),
    # A cancel that fails (10148: already filled, or not cancellable) returns to where it was.
    ("cancel_failed", S.PENDING_CANCEL, S.PARTIALLY_FILLED, "has_fills"),
    ("cancel_failed", S.PENDING_CANCEL, S.SUBMITTED),
    # A reject can come after the acknowledgement.
    ("reject", [S.PENDING_SUBMIT, S.SUBMITTED, S.UNKNOWN], S.REJECTED),
    ("deactivate", [*WORKING, S.UNKNOWN], S.INACTIVE),
    # After a crash every order that may be at the broker is unknown until reconciled.
    ("lose_track", [*WORKING, S.PENDING_CANCEL], S.UNKNOWN),
    # Reconciliation found no trace of it at the broker: it never went live. Never resend.
    ("not_found", S.UNKNOWN, S.CANCELLED),
    # A fill that crossed the cancel on the wire: the broker had executed it before the cancel
    # took. The contracts are held all the same, so it is recorded as an event (not a silent
    # update) and the position it makes is protected like any other.
    ("late_fill", S.CANCELLED, S.FILLED, "is_complete"),
    ("late_fill", S.CANCELLED, S.CANCELLED),
]


@dataclass(eq=False)  # identity: a shared machine finds and removes its models by `==`
class OrderModel:
    """One order's machine model. The owning actor persists `state` after each trigger."""

    order_ref: str
    quantity: float = 0.0
    filled: float = 0.0
    last_reason: str = ""
    history: list[tuple[str, str, str]] = field(default_factory=list)
    state: str = OrderState.NEW.value

    def has_fills(self, event: EventData) -> bool:
        return self.filled > 0

    def is_complete(self, event: EventData) -> bool:
        return self.filled >= self.quantity - 1e-9

    def prepare_event(self, event: EventData) -> None:
        self.last_reason = str(event.kwargs.get("reason", ""))

    def after_state_change(self, event: EventData) -> None:
        self.history.append((event.transition.source, event.event.name, event.transition.dest))

    @property
    def order_state(self) -> OrderState:
        return OrderState(self.state)

    @property
    def is_terminal(self) -> bool:
        return self.order_state in TERMINAL


class OrderMachines:
    """One machine for every order of one owner: models join it (`add_model`) when an order is
    written or restored and leave it when it becomes terminal, so a long-running service holds
    only its working orders. Not thread-safe (transitions' plain Machine; LockedMachine is the
    threaded one): its owner, OrderActor, uses it from its own thread only."""

    def __init__(self) -> None:
        self.machine = build(
            None,
            OrderState,
            TABLE,
            OrderState.NEW,
            name="order",
            prepare_event="prepare_event",
            after_state_change="after_state_change",
        )

    def add(self, model: OrderModel, state: OrderState | str = OrderState.NEW) -> OrderModel:
        self.machine.add_model(model, initial=OrderState(state).value)
        return model

    def remove(self, model: OrderModel) -> None:
        if model in self.machine.models:
            self.machine.remove_model(model)

    def __len__(self) -> int:
        return len(self.machine.models)


# IB order status -> trigger (None: nothing to do). Checked against IB's TWS API docs (Order
# Management, "Possible Order States") and ib_async's OrderStatus: ApiCancelled and Cancelled both
# end an order; PendingSubmit, ApiPending and PendingCancel say nothing the machine needs.
STATUS_TRIGGER: dict[str, str | None] = {
    "PendingSubmit": None,
    "ApiPending": None,
    "PreSubmitted": "accept",
    "Submitted": "accept",
    "PendingCancel": None,
    "ApiCancelled": "cancelled",
    "Cancelled": "cancelled",
    "Inactive": "deactivate",
    "Filled": "fill",
}
# Statuses of an order still working at the broker, whose cancel can be sent again.
STILL_WORKING = frozenset({"PreSubmitted", "Submitted", "PendingSubmit"})


def status_trigger(status: str, reason: str = "") -> str | None:
    """The trigger for a live order status from the broker (None: nothing to do).

    ib_async reports any order error as Cancelled: a 201 is a reject, and a refused cancel
    (161, 10148) leaves the order working (or already filled) at the broker."""
    trigger = STATUS_TRIGGER.get(status)
    if trigger == "cancelled":
        code = error_code(reason)
        if code == ORDER_REJECTED:
            return "reject"
        if code in CANCEL_REFUSED:
            return "cancel_failed"
    return trigger


def settle_trigger(status: str, reason: str = "") -> str:
    """The trigger that settles an order left unknown (a crash) from the broker's status for it.

    An unknown order has no cancel in flight, so a refused cancel means nothing here: any end is
    cancelled (or rejected, on a 201); a status that does not end the order means it is working."""
    trigger = STATUS_TRIGGER.get(status)
    if trigger == "cancelled":
        return "reject" if error_code(reason) == ORDER_REJECTED else "cancelled"
    if trigger in ("fill", "deactivate"):
        return trigger
    return "accept"


def order_machine(
    model: OrderModel,
    initial: OrderState = OrderState.NEW,
    **kwargs: Any,
) -> Machine:
    return build(
        model,
        OrderState,
        TABLE,
        initial,
        name="order",
        prepare_event="prepare_event",
        after_state_change="after_state_change",
        **kwargs,
    )

"""The order lifecycle state machine, with the real-world edges IB produces, as a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from transitions import EventData, Machine

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


@dataclass
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

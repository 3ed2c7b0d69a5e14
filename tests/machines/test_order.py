"""Every (state, trigger) pair of the order machine, plus its real-world edges."""

import pytest
from transitions import MachineError

from machines.base import allowed_pairs, destinations, triggers
from machines.order import (
    STATUS_TRIGGER,
    TABLE,
    TERMINAL,
    OrderMachines,
    OrderModel,
    OrderState,
    settle_trigger,
    status_trigger,
)

PAIRS = allowed_pairs(TABLE)
S = OrderState
# Every model of these tests on one machine, as OrderActor keeps its orders.
SHARED = OrderMachines()


def at(state: OrderState, **kw) -> OrderModel:
    return SHARED.add(OrderModel(order_ref="t-1", **kw), state)


@pytest.mark.parametrize("state", list(S), ids=lambda s: s.value)
@pytest.mark.parametrize("trigger", triggers(TABLE))
def test_every_pair_is_allowed_or_raises(state, trigger):
    model = at(state)
    if (state.value, trigger) in PAIRS:
        getattr(model, trigger)()
        assert model.state in destinations(TABLE, state.value, trigger)
    else:
        with pytest.raises(MachineError):
            getattr(model, trigger)()
        assert model.state == state.value


@pytest.mark.parametrize("state", sorted(TERMINAL, key=lambda s: s.value), ids=lambda s: s.value)
def test_terminal_states_accept_nothing_but_a_late_fill(state):
    allowed = {t for (s, t) in PAIRS if s == state.value}
    assert allowed == ({"late_fill"} if state is S.CANCELLED else set())


def test_a_fill_after_the_cancel_is_a_real_transition():
    # Complete: the order is filled after all, and the event history says how it got there.
    model = at(S.CANCELLED, quantity=4, filled=4)
    model.late_fill()
    assert model.state == S.FILLED.value
    assert model.history == [("cancelled", "late_fill", "filled")]
    # In part: still cancelled (the rest will not fill), but the fill is an event, not silence.
    model = at(S.CANCELLED, quantity=4, filled=1)
    model.late_fill()
    assert model.state == S.CANCELLED.value
    assert model.history == [("cancelled", "late_fill", "cancelled")]


def test_happy_path_with_partial_fills():
    model = at(S.NEW, quantity=3)
    model.submit()
    model.accept()
    model.accept()  # PreSubmitted then Submitted
    model.partial_fill()
    model.partial_fill()
    model.fill()
    assert model.state == S.FILLED.value and model.is_terminal
    assert [h[1] for h in model.history] == [
        "submit",
        "accept",
        "accept",
        "partial_fill",
        "partial_fill",
        "fill",
    ]


def test_fill_after_cancel_was_sent():
    model = at(S.SUBMITTED)
    model.cancel()
    model.fill()
    assert model.state == S.FILLED.value


def test_failed_cancel_returns_to_the_previous_state():
    unfilled = at(S.PENDING_CANCEL)
    unfilled.cancel_failed(reason="10148")
    assert unfilled.state == S.SUBMITTED.value
    part = at(S.PENDING_CANCEL, filled=1)
    part.cancel_failed(reason="10148")
    assert part.state == S.PARTIALLY_FILLED.value
    assert part.last_reason == "10148"


def test_reject_after_acknowledgement():
    model = at(S.SUBMITTED)
    model.reject(reason="201 margin")
    assert model.state == S.REJECTED.value and model.last_reason == "201 margin"


def test_crash_recovery_edges():
    model = at(S.PENDING_SUBMIT)
    model.lose_track()
    assert model.state == S.UNKNOWN.value
    model.not_found()
    assert model.state == S.CANCELLED.value
    never_sent = at(S.NEW)
    never_sent.abandon()
    assert never_sent.state == S.CANCELLED.value


def test_one_machine_carries_many_orders_each_in_its_own_state():
    machines = OrderMachines()
    a = machines.add(OrderModel(order_ref="a", quantity=2), S.NEW)
    # Same fields, another order: a shared machine tells its models apart by identity.
    twin = machines.add(OrderModel(order_ref="a", quantity=2), S.NEW)
    b = machines.add(OrderModel(order_ref="b", quantity=1), S.SUBMITTED)
    assert len(machines) == 3
    a.submit()
    b.partial_fill()
    assert (a.state, twin.state, b.state) == (S.PENDING_SUBMIT, S.NEW, S.PARTIALLY_FILLED)
    # Conditions are the model's own: a has no fills, b has.
    a.cancel()
    a.cancel_failed()
    b.filled = 0.5
    b.cancel()
    b.cancel_failed()
    assert (a.state, b.state) == (S.SUBMITTED, S.PARTIALLY_FILLED)
    assert [h[1] for h in a.history] == ["submit", "cancel", "cancel_failed"]


def test_a_removed_order_leaves_the_machine_and_the_machine_does_not_grow():
    machines = OrderMachines()
    for i in range(500):
        model = machines.add(OrderModel(order_ref=f"o-{i}", quantity=1), S.SUBMITTED)
        model.fill()
        assert model.is_terminal
        machines.remove(model)
        machines.remove(model)  # twice is harmless
    assert len(machines) == 0
    assert machines.machine.models == []


# Live statuses, as ib_async reports them (reasons carry IB's error code at their head).
@pytest.mark.parametrize(
    ("status", "reason", "trigger"),
    [
        ("PendingSubmit", "", None),
        ("ApiPending", "", None),
        ("PendingCancel", "", None),
        ("PreSubmitted", "", "accept"),
        ("Submitted", "", "accept"),
        ("Filled", "", "fill"),
        ("Inactive", "", "deactivate"),
        ("Cancelled", "", "cancelled"),
        ("ApiCancelled", "", "cancelled"),
        ("Cancelled", "201 Order rejected - reason: margin", "reject"),
        (
            "Cancelled",
            "161 Cancel attempted when order is not in a cancellable state",
            "cancel_failed",
        ),
        (
            "Cancelled",
            "10148 OrderId 7 that needs to be cancelled cannot be cancelled",
            "cancel_failed",
        ),
        ("Cancelled", "202 Order cancelled", "cancelled"),
        ("Submitted", "201 stale", "accept"),
        ("NoSuchStatus", "", None),
    ],
)
def test_live_status_to_trigger(status, reason, trigger):
    assert status_trigger(status, reason) == trigger


@pytest.mark.parametrize("status", [*STATUS_TRIGGER, "NoSuchStatus"])
@pytest.mark.parametrize("reason", ["", "201 rejected", "161 not cancellable", "10148 no"])
def test_settling_an_unknown_order_only_uses_edges_out_of_unknown(status, reason):
    trigger = settle_trigger(status, reason)
    assert (S.UNKNOWN.value, trigger) in PAIRS
    # A refused cancel means nothing for an order with no cancel in flight.
    assert trigger != "cancel_failed"

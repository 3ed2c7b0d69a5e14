"""Every (state, trigger) pair of the order machine, plus its real-world edges."""

import pytest
from transitions import MachineError

from machines.base import allowed_pairs, destinations, triggers
from machines.order import TABLE, TERMINAL, OrderModel, OrderState, order_machine

PAIRS = allowed_pairs(TABLE)
S = OrderState


def at(state: OrderState, **kw) -> OrderModel:
    model = OrderModel(order_ref="t-1", **kw)
    order_machine(model, state)
    return model


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

"""Reconciliation's pure steps: settling unknown orders, chasing cancels, positions vs the broker."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import messages as m
from actors.orders.reconcile import (
    broker_cap,
    chase_cancels,
    ended_meanwhile,
    position_mismatches,
    reduced_total,
    settle,
    strangers,
)
from machines.base import allowed_pairs, destinations
from machines.order import STATUS_TRIGGER, TABLE, OrderState

PAIRS = allowed_pairs(TABLE)


def status(ref="SPY-1-E", s="Submitted", filled=0.0, reason="", order_id=7) -> m.BrokerOrderStatus:
    return m.BrokerOrderStatus(ref, s, filled, 0.0, 0.0, order_id, 70, reason)


def triggers(steps):
    return [step.trigger for step in steps]


@pytest.mark.parametrize(
    ("st_", "reason", "recorded", "want"),
    [
        (None, "", 0.0, ["not_found"]),  # never at the broker: never resent
        (None, "", 4.0, ["fill"]),  # every execution known: filled after all
        ("Filled", "", 4.0, ["fill"]),
        ("Submitted", "", 4.0, ["fill"]),  # complete by its fills whatever the status says
        ("Cancelled", "", 0.0, ["cancelled"]),
        ("ApiCancelled", "", 0.0, ["cancelled"]),
        ("Cancelled", "201 Order rejected", 0.0, ["reject"]),
        ("Cancelled", "161 not cancellable", 0.0, ["cancelled"]),
        ("Inactive", "", 0.0, ["deactivate"]),
        ("Submitted", "", 0.0, ["accept"]),
        ("PreSubmitted", "", 1.0, ["accept", "partial_fill"]),
        ("PendingCancel", "", 0.0, ["accept"]),
        ("PendingSubmit", "", 0.0, ["accept"]),
    ],
)
def test_settle(st_, reason, recorded, want):
    steps, warning = settle(None if st_ is None else status(s=st_, reason=reason), recorded, 4.0)
    assert triggers(steps) == want and warning == ""


def test_a_fill_the_service_did_not_see_is_said_not_invented():
    steps, warning = settle(status(s="Filled", filled=4.0), 1.0, 4.0)
    assert triggers(steps) == ["fill"] and steps[0].fields == {"filled": 4.0}
    assert warning == "the broker says filled but 1 of 4 executions are known"


@given(
    s=st.none() | st.sampled_from([*STATUS_TRIGGER, "Unknown"]),
    reason=st.sampled_from(["", "201 x", "161 x", "10148 x", "202 x"]),
    recorded=st.integers(0, 6).map(float),
    quantity=st.integers(1, 5).map(float),
)
def test_every_settle_step_is_an_edge_of_the_order_machine(s, reason, recorded, quantity):
    """No status, however odd, makes reconciliation fire a trigger the machine refuses: an
    unknown order always ends somewhere, and the step after is allowed where the first led."""
    steps, _ = settle(None if s is None else status(s=s, reason=reason), recorded, quantity)
    state = "unknown"
    for step in steps:
        assert (state, step.trigger) in PAIRS
        [state] = destinations(TABLE, state, step.trigger)


def test_chase_cancels():
    states = {"a": "pending_cancel", "b": "pending_cancel", "c": "pending_cancel", "d": "submitted"}
    statuses = {
        "a": status("a", "Cancelled"),
        "b": status("b", "Submitted"),
        "d": status("d", "Cancelled"),
    }
    done, again = chase_cancels(states, statuses)
    assert done == [("a", "reconciled: Cancelled")] and again == ["b"]


def test_broker_cap_only_where_the_broker_holds_less():
    assert broker_cap({1: 4.0, 2: 2.0, 3: 1.0}, {1: 1.0, 2: 2.0, 4: 5.0}) == {1: 1.0, 3: 0.0}
    assert broker_cap({1: 2.0}, {1: -1.0}) == {1: 0.0}


def test_position_mismatches_both_ways():
    assert position_mismatches({1: 4.0, 2: 2.0}, {2: 2.0, 3: 1.0}) == [(1, 4.0, 0.0), (3, 0.0, 1.0)]


def test_strangers_are_orders_neither_open_nor_known():
    sts = [status("ours"), status("old"), status("", order_id=99), status("new")]
    assert strangers(sts, {"ours"}, lambda ref: ref == "old") == ["99", "new"]


@given(
    s=st.sampled_from([*STATUS_TRIGGER, "Unknown"]),
    quantity=st.integers(1, 20),
    filled=st.integers(0, 20),
    remaining=st.integers(0, 20),
)
def test_only_a_working_order_the_broker_shrank_gets_a_new_total(s, quantity, filled, remaining):
    got = reduced_total(m.BrokerOrderStatus("SPY-1-SL", s, filled, remaining, 0, 7, 70), quantity)
    working = s in ("PreSubmitted", "Submitted") and remaining > 0
    if working and filled + remaining < quantity:
        assert got == filled + remaining  # an OCA group re-balanced it: the smaller total counts
    else:
        assert got is None  # never grown, never from a status without quantities


STATES = [s.value for s in OrderState]
IB_STATUSES = [*STATUS_TRIGGER, "ValidationError"]


@given(
    books=st.dictionaries(st.sampled_from(["A", "B", "C", "D"]), st.sampled_from(STATES)),
    words=st.dictionaries(
        st.sampled_from(["A", "B", "C", "D"]),
        st.tuples(st.sampled_from(IB_STATUSES), st.sampled_from(["", "10148 cannot cancel"])),
    ),
    asked=st.sets(st.sampled_from(["A", "B", "C", "D"])),
)
def test_only_a_broker_end_or_an_absence_at_the_ask_ends_a_working_order(books, words, asked):
    statuses = {ref: status(ref, s, reason=r) for ref, (s, r) in words.items()}
    steps = ended_meanwhile(books, statuses, asked)
    for ref, step in steps:
        assert books[ref] in ("pending_submit", "submitted", "partially_filled", "pending_cancel")
        word = statuses.get(ref)
        assert books[ref] != "pending_cancel" or word is None
        if word is None:
            assert ref in asked and step.trigger in ("lose_track", "not_found")
        else:
            assert word.status in ("Cancelled", "ApiCancelled", "Inactive")
            # ib_async's Cancelled for a refused cancel: the order still works.
            assert word.status == "Inactive" or not word.reason.startswith("10148")
    # Each step is one the machine accepts from where the order is then.
    where = dict(books)
    for ref, step in steps:
        assert (where[ref], step.trigger) in PAIRS
        where[ref] = destinations(TABLE, where[ref], step.trigger).pop()

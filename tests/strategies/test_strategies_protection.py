"""The protection invariant as a pure function: every held contract covered, never over-sold."""

from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.protection import COVERING_STATES, ExitOrder, coverage, intents

STATES = sorted(COVERING_STATES | {"pending_cancel", "cancelled", "filled", "rejected"})


@st.composite
def books(draw):
    """Positions and the exits around them: several brackets per contract, partial fills,
    exits pending cancel or gone, children of entries still working, and positions that grew
    after their exits were placed (a late fill)."""
    con_ids = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4, unique=True))
    positions = {c: float(draw(st.integers(0, 12))) for c in con_ids}
    exits = []
    for c in con_ids:
        for g in range(draw(st.integers(0, 3))):
            qty = draw(st.integers(1, 10))
            tp_filled = draw(st.integers(0, qty))
            state = draw(st.sampled_from(STATES))
            pending = draw(st.booleans())
            exits.append(
                ExitOrder(f"{c}-{g}-SL", c, "stop_loss", qty, state, f"OCA-{c}-{g}", pending)
            )
            exits.append(
                ExitOrder(
                    f"{c}-{g}-TP", c, "take_profit", qty - tp_filled, state, f"OCA-{c}-{g}", pending
                )
            )
    return positions, exits


def apply(positions, exits, todo):
    """What the actor does with the intents: a new OCA group of TP + SL per protect intent."""
    added = []
    for i, intent in enumerate(todo):
        if intent.kind == "protect":
            oca = f"OCA-new-{i}"
            added.append(
                ExitOrder(
                    f"n{i}-SL", intent.con_id, "stop_loss", intent.quantity, "pending_submit", oca
                )
            )
            added.append(
                ExitOrder(
                    f"n{i}-TP", intent.con_id, "take_profit", intent.quantity, "pending_submit", oca
                )
            )
    return exits + added


@settings(max_examples=400, deadline=None)
@given(books())
def test_after_the_intents_every_held_contract_is_covered(book):
    positions, exits = book
    after = apply(positions, exits, intents(positions, exits))
    for c in coverage(positions, after).values():
        assert c.gap < 1, c
    # A second check finds nothing more to do: protection is never placed twice.
    assert [i for i in intents(positions, after) if i.kind == "protect"] == []


@settings(max_examples=400, deadline=None)
@given(books())
def test_protection_never_adds_exits_beyond_what_is_held(book):
    positions, exits = book
    before = coverage(positions, exits)
    todo = intents(positions, exits)
    for i in todo:
        if i.kind == "protect":
            c = before[i.con_id]
            assert i.quantity == int(c.held - c.stop_covered)
            assert c.stop_covered + i.quantity <= c.held
    after = coverage(positions, apply(positions, exits, todo))
    for con_id, c in after.items():
        # Whatever excess there is was there before: protection never creates any.
        assert c.excess <= before[con_id].excess + 1e-9


def test_exits_pending_cancel_or_gone_protect_nothing():
    for state in ("pending_cancel", "cancelled", "filled", "rejected", "inactive"):
        exits = [ExitOrder("a", 1, "stop_loss", 4, state, "O")]
        assert [(i.kind, i.quantity) for i in intents({1: 4}, exits)] == [("protect", 4)]


def test_a_take_profit_alone_is_not_protection():
    exits = [ExitOrder("tp", 1, "take_profit", 4, "submitted", "O")]
    assert [(i.kind, i.quantity) for i in intents({1: 4}, exits)] == [("protect", 4)]


def test_a_partly_filled_entry_cancelled_leaves_a_gap_for_what_was_bought():
    # Entry 4, filled 2, then cancelled: IB took the children down with it.
    exits = [
        ExitOrder("tp", 1, "take_profit", 4, "cancelled", "O"),
        ExitOrder("sl", 1, "stop_loss", 4, "cancelled", "O"),
    ]
    assert [(i.kind, i.quantity) for i in intents({1: 2}, exits)] == [("protect", 2)]
    assert [(i.kind, i.quantity) for i in intents({1: 2}, exits, "flatten")] == [("flatten", 2)]


def test_children_of_a_working_entry_cover_without_being_excess():
    exits = [
        ExitOrder("tp", 1, "take_profit", 4, "submitted", "O", pending_parent=True),
        ExitOrder("sl", 1, "stop_loss", 4, "submitted", "O", pending_parent=True),
    ]
    assert intents({1: 2}, exits) == []


def test_an_oca_group_covers_its_largest_member_once():
    # The bracket's stop and a flatten's market exit in one group: covered once, not twice.
    exits = [
        ExitOrder("sl", 1, "stop_loss", 4, "submitted", "O"),
        ExitOrder("x", 1, "exit", 4, "pending_submit", "O"),
    ]
    assert intents({1: 4}, exits) == []
    # Two stops of 2 in one group: the first to fill cancels the other, so only 2 are covered.
    exits = [
        ExitOrder("a", 1, "stop_loss", 2, "submitted", "O"),
        ExitOrder("b", 1, "stop_loss", 2, "submitted", "O"),
    ]
    assert [(i.kind, i.quantity) for i in intents({1: 4}, exits)] == [("protect", 2)]


def test_exits_for_more_than_is_held_are_flagged():
    # A take-profit filled 2 of 4: the stop still sells 4 of the 2 held.
    exits = [
        ExitOrder("tp", 1, "take_profit", 2, "partially_filled", "O"),
        ExitOrder("sl", 1, "stop_loss", 4, "submitted", "O"),
    ]
    assert [(i.kind, i.quantity) for i in intents({1: 2}, exits)] == [("excess", 2)]

"""Detection of a broker state the database cannot vouch for, as pure functions."""

import math

from hypothesis import given
from hypothesis import strategies as st

from strategies.broker_state import (
    broker_start_equity,
    seeded_start_equity,
    unknown_broker_state,
)

con_ids = st.integers(1, 50)
qty = st.integers(-5, 5).map(float)
book = st.dictionaries(con_ids, qty)


def test_an_empty_database_knows_nothing_the_broker_holds():
    found = unknown_broker_state(
        {},
        [(11, 2.0), (12, 0.0)],
        [("SPY-1-TP", 5, "Submitted"), ("SPY-1-SL", 6, "PreSubmitted"), ("old", 7, "Filled")],
        lambda ref: False,
        set(),
    )
    assert found.positions == ((11, 2.0, 0.0),)
    assert found.orders == ("SPY-1-TP", "SPY-1-SL")
    assert found.reason() == (
        "unknown_broker_state: the broker holds 1 position and 2 working orders this database "
        "does not know; run `optionsbot adopt`"
    )


def test_known_and_adopted_orders_do_not_block():
    found = unknown_broker_state(
        {11: 2.0},
        [(11, 2.0)],
        [("ours-TP", 5, "Submitted"), ("", 9, "Submitted"), ("", 10, "Submitted")],
        lambda ref: ref == "ours-TP",
        {9},
    )
    assert found.positions == () and found.orders == ("permId 10",)


@given(book, book)
def test_blocks_exactly_on_what_the_broker_holds_beyond_the_database(ours, broker):
    found = unknown_broker_state(ours, broker.items(), [], lambda ref: True, set())
    flagged = {c for c, _, _ in found.positions}
    assert flagged == {c for c, q in broker.items() if q != 0 and q != ours.get(c, 0.0)}
    assert bool(found) == bool(flagged)
    # A database that knows everything the broker holds is never blocked.
    assert not unknown_broker_state(broker, broker.items(), [], lambda ref: True, set())


@given(
    st.floats(1_000, 1e7),
    st.floats(-1e5, 1e5),
    st.one_of(st.none(), st.floats(1_000, 1e7)),
)
def test_the_guard_starts_from_the_higher_of_stored_and_broker_start(net_liq, daily, stored):
    from_broker = broker_start_equity(net_liq, daily)
    assert from_broker == net_liq - daily
    start = seeded_start_equity(stored, from_broker)
    assert start >= from_broker and (stored is None or start >= stored)


def test_unset_broker_figures_are_ignored():
    # IB's "unset" is Double.MAX_VALUE; ib_async leaves NaN before the first answer.
    for bad in (math.nan, 1.7976931348623157e308, None):
        assert broker_start_equity(100_000.0, bad) is None
    assert broker_start_equity(math.nan, -10.0) is None
    assert seeded_start_equity(95_000.0, None) == 95_000.0
    # The database started the day after a $3,000 loss: the broker's start wins.
    assert seeded_start_equity(97_000.0, broker_start_equity(97_000.0, -3_000.0)) == 100_000.0

"""sim/server/faults.py: how partial_fill and fill_after_cancel size a fill."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sim.server.faults import fill_quantity

fractions = st.floats(0.0, 1.0, allow_nan=False)


@given(remaining=st.integers(1, 10_000), fraction=fractions, allow_all=st.booleans())
def test_a_fill_is_whole_at_least_one_and_at_most_what_remains(
    remaining: int, fraction: float, allow_all: bool
) -> None:
    q = fill_quantity(float(remaining), fraction, allow_all)
    assert q.is_integer()
    assert 1 <= q <= remaining


@given(remaining=st.integers(2, 10_000), fraction=fractions)
def test_a_partial_fill_leaves_something(remaining: int, fraction: float) -> None:
    assert fill_quantity(float(remaining), fraction, allow_all=False) < remaining


@given(remaining=st.integers(1, 10_000))
def test_a_racing_fill_of_everything_fills_everything(remaining: int) -> None:
    assert fill_quantity(float(remaining), 1.0, allow_all=True) == remaining

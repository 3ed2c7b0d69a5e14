"""sim/server/faults.py: how partial_fill and fill_after_cancel size a fill; what a Gateway
restart forgets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from serverkit import Client

from sim.server import SimServer
from sim.server.faults import fill_quantity
from sim.server.gates import HeldRequest

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


def test_a_gateway_restart_forgets_everything_and_refuses_for_a_while(server: SimServer) -> None:
    """A fresh Gateway knows no client, no held request, no farm or connectivity trouble."""
    clients = [Client(server), Client(server)]
    for i, c in enumerate(clients):
        c.start_api(i + 1)
    server._held.append(HeldRequest(clients[0].session, 9, ["20"], "stall"))
    server._outages.append(object())  # type: ignore[arg-type]
    server._broken_farms[2105] = object()  # type: ignore[assignment]
    server._last_closed[7] = 1.0
    now = server.monotonic()
    server._restart(30.0)
    assert all(c.session.closed and c.session.restart_dropped for c in clients)
    assert server._held == [] and server._outages == [] and server._broken_farms == {}
    assert server._last_closed == {}
    assert now < server._refuse_until <= server.monotonic() + 30.0
    # A session the restart dropped is not remembered as a client closing its own.
    server._drop_session(clients[0].session)
    assert 1 not in server._last_closed
    for c in clients:
        c.close()

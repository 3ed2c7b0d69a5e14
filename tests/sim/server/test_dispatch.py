"""sim/server/dispatch.py: the handler tables and the one path every request takes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from serverkit import Client, errors, new_server

from sim import protocol as P
from sim.protocol import In
from sim.server import SimServer

# Where each request's handler lives: the module named for its concern (the README's
# "where things live" table). A handler added to the wrong room fails here.
HANDLER_HOME = {
    In.START_API: "gateway",
    In.REQ_CURRENT_TIME: "gateway",
    In.REQ_CONTRACT_DATA: "contracts",
    In.REQ_SEC_DEF_OPT_PARAMS: "contracts",
    In.REQ_MARKET_RULE: "contracts",
    In.REQ_MKT_DATA: "market_data",
    In.CANCEL_MKT_DATA: "market_data",
    In.REQ_MARKET_DATA_TYPE: "market_data",
    In.REQ_HISTORICAL_DATA: "history",
    In.CANCEL_HISTORICAL_DATA: "history",
    In.REQ_REAL_TIME_BARS: "history",
    In.CANCEL_REAL_TIME_BARS: "history",
    In.REQ_IDS: "orders",
    In.PLACE_ORDER: "orders",
    In.CANCEL_ORDER: "orders",
    In.REQ_GLOBAL_CANCEL: "orders",
    In.REQ_OPEN_ORDERS: "orders",
    In.REQ_ALL_OPEN_ORDERS: "orders",
    In.REQ_AUTO_OPEN_ORDERS: "orders",
    In.REQ_COMPLETED_ORDERS: "orders",
    In.REQ_EXECUTIONS: "orders",
    In.REQ_MANAGED_ACCTS: "account",
    In.REQ_ACCT_DATA: "account",
    In.REQ_ACCOUNT_UPDATES_MULTI: "account",
    In.CANCEL_ACCOUNT_UPDATES_MULTI: "account",
    In.REQ_ACCOUNT_SUMMARY: "account",
    In.CANCEL_ACCOUNT_SUMMARY: "account",
    In.REQ_POSITIONS: "account",
    In.CANCEL_POSITIONS: "account",
    In.REQ_POSITIONS_MULTI: "account",
    In.CANCEL_POSITIONS_MULTI: "account",
    In.REQ_PNL: "account",
    In.CANCEL_PNL: "account",
}


def test_each_handler_lives_in_the_module_of_its_concern(server: SimServer) -> None:
    homes = {msg: h.__func__.__module__ for msg, h in server._handlers.items()}
    assert homes == {msg: f"sim.server.{mod}" for msg, mod in HANDLER_HOME.items()}


def test_every_gate_is_in_gates_and_guards_a_handled_request(server: SimServer) -> None:
    assert set(server._gates) <= set(server._handlers)
    assert {g.__func__.__module__ for g in server._gates.values()} == {"sim.server.gates"}


def test_a_request_before_start_api_is_ignored(client: Client) -> None:
    assert client.send([In.REQ_CURRENT_TIME, 1]) == []
    assert not client.session.closed
    assert client.start_api(3)[0][0] == str(int(P.Out.MANAGED_ACCTS))
    assert client.server.by_client[3] is client.session
    assert client.send([In.REQ_CURRENT_TIME, 1])[0][0] == str(int(P.Out.CURRENT_TIME))


def test_an_unknown_message_id_is_counted_and_ignored(client: Client) -> None:
    client.start_api()
    assert client.send([9999, 1, 2]) == []
    assert client.server.stats["unknown_requests"] == 1
    assert not client.session.closed


def test_a_non_numeric_message_id_closes_the_session(client: Client) -> None:
    client.start_api()
    assert client.send(["abc", 1]) == []
    assert client.session.closed
    assert client.server.stats["malformed"] == 1


def test_an_unreadable_request_costs_that_request_only(client: Client) -> None:
    client.start_api()
    replies = client.send([In.REQ_MKT_DATA, 11, "not-a-number"])
    assert [code for code, _ in errors(replies)] == [320]
    assert errors(replies)[0][1].startswith("Error reading request: message id 1:")
    assert client.send([In.REQ_CURRENT_TIME, 1])[0][0] == str(int(P.Out.CURRENT_TIME))


def test_a_handler_that_crashes_costs_that_request_only(client: Client) -> None:
    client.start_api()

    def broken(s, fields):
        raise RuntimeError("simulator bug")

    client.server._handlers[In.REQ_IDS] = broken
    replies = client.send([In.REQ_IDS, 1, 1])
    assert errors(replies) == [(320, "Error processing request: message id 8: simulator bug")]
    assert not client.session.closed
    assert client.send([In.REQ_CURRENT_TIME, 1])[0][0] == str(int(P.Out.CURRENT_TIME))


field_text = st.one_of(
    st.integers(-3, 2**31).map(str),
    st.sampled_from(["", "SPY", "STK", "OPT", "SMART", "USD", "C", "P", "1 min", "1 D", "TRADES"]),
    st.text(max_size=8),
)


@settings(max_examples=150, deadline=None)
@given(msg=st.sampled_from(sorted(HANDLER_HOME)), fields=st.lists(field_text, max_size=14))
def test_any_fields_for_any_request_never_cost_the_session(msg: int, fields: list[str]) -> None:
    """A careless client: whatever it sends after startApi, the session survives and every
    answer is a well-formed message (a second startApi is ignored, as the Gateway does)."""
    client = Client(new_server())
    try:
        client.start_api()
        replies = client.send([msg, *fields])
        assert not client.session.closed
        assert all(r and r[0].lstrip("-").isdigit() for r in replies)
    finally:
        client.close()

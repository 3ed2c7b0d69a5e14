"""IB's official Python client (ibapi, EClient/EWrapper) over a real socket against the simulator.

The simulator must be right for clients nobody here wrote: ibapi decodes field by field per
server version and calls the EWrapper, so anything the simulator sends out of place shows here
as a decode error (caught by the kit) or a callback that never comes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from ibapi.account_summary_tags import AccountSummaryTags
from ibapi.execution import ExecutionFilter
from ibapi_kit import IbApiClient, limit_order, option, stock, stop_order
from wirekit import START, isin_valid

from sim.config import SimOptions
from sim.runner import EmbeddedSim

# tws-api message_codes.html; texts as captured from real Gateways (see sim/server/history.py).
CANCELLED_162 = "Historical Market Data Service error message:API historical data query cancelled: "
NOT_FOUND_366 = "No historical data query found for ticker id:"


@pytest.fixture
def ibapi(sim: EmbeddedSim) -> Iterator[Callable[..., IbApiClient]]:
    clients: list[IbApiClient] = []

    def _connect(client_id: int = 31, target: EmbeddedSim | None = None) -> IbApiClient:
        c = IbApiClient()
        clients.append(c)
        return c.start((target or sim).port, client_id)

    yield _connect
    for c in clients:
        c.stop()
    failures = [f for c in clients for f in c.failures]
    assert not failures, "ibapi could not handle simulator output:\n" + "\n".join(failures)


def _wait_server(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll the simulator's own state (it has no event a test thread can wait on), bounded."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def _details(c: IbApiClient, contract) -> list:
    rid = c.req_id()
    c.reqContractDetails(rid, contract)
    c.wait_for(
        lambda: ("contractDetails", rid) in c.ended or any(e[0] == rid for e in c.errors),
        what="contract details",
    )
    return c.details[rid]


def _isins(details) -> list[tuple[str, str]]:
    return [(t.tag, t.value) for t in (details.secIdList or [])]


def _atm_call(c: IbApiClient):
    [spy] = _details(c, stock("SPY"))
    rid = c.req_id()
    c.reqSecDefOptParams(rid, "SPY", "", "STK", spy.contract.conId)
    c.wait_for(lambda: ("secDefOptParams", rid) in c.ended, what="option parameters")
    chain = next(r for r in c.chains[rid] if r["exchange"] == "SMART")
    tick = c.req_id()
    c.reqMktData(tick, spy.contract, "", True, False, [])
    c.wait_for(lambda: 4 in c.ticks[tick] or 9 in c.ticks[tick], what="a SPY price")
    last = c.ticks[tick].get(4) or c.ticks[tick][9]
    strike = min(chain["strikes"], key=lambda k: abs(k - last))
    [opt] = _details(c, option("SPY", chain["expirations"][2], strike, "C", chain["tradingClass"]))
    return opt.contract, chain


def _quote(c: IbApiClient, contract) -> tuple[float, float]:
    tick = c.req_id()
    c.reqMktData(tick, contract, "", True, False, [])
    c.wait_for(lambda: 1 in c.ticks[tick] and 2 in c.ticks[tick], what="a bid and an ask")
    return c.ticks[tick][1], c.ticks[tick][2]


def test_handshake_accounts_and_farms(ibapi) -> None:
    c = ibapi(31)
    assert c.serverVersion() == 176
    assert c.accounts == ["DU123456"]
    assert c.next_id is not None and c.next_id > 0
    c.wait_for(lambda: len(c.errors) >= 3, what="the farm messages")
    assert {code for _, code, _ in c.errors} == {2104, 2106, 2158}
    assert all(rid == -1 for rid, _, _ in c.errors)


def test_duplicate_client_id_is_refused_with_326(ibapi) -> None:
    first = ibapi(32)
    second = ibapi(32)
    second.wait_for(lambda: second.closed, what="the refused session to close")
    assert [code for _, code, _ in second.errors] == [326]
    assert second.next_id is None
    assert first.isConnected()
    assert _details(first, stock("SPY"))[0].contract.conId == 756733


def test_stock_details_carry_the_real_isin_and_options_none(ibapi) -> None:
    c = ibapi()
    [spy] = _details(c, stock("SPY"))
    assert _isins(spy) == [("ISIN", "US78462F1030")]
    assert spy.contract.conId == 756733 and spy.stockType == "ETF"
    [qqq] = _details(c, stock("QQQ"))
    assert _isins(qqq) == [("ISIN", "US46090E1038")]
    opt, _ = _atm_call(c)
    [details] = _details(c, opt)
    # A real Gateway's OPT details carry no security ids (an NVDA option captured live).
    assert _isins(details) == []
    assert details.underConId == 756733


def test_isin_of_a_known_name_and_a_valid_synthetic_one(make_sim) -> None:
    s = make_sim(SimOptions(seed=7, symbols=("AAPL", "ZZXQ")))
    c = IbApiClient().start(s.port, 33)
    try:
        [aapl] = _details(c, stock("AAPL"))
        assert _isins(aapl) == [("ISIN", "US0378331005")]
        [(tag, isin)] = _isins(_details(c, stock("ZZXQ"))[0])
        assert tag == "ISIN" and isin.startswith("US") and len(isin) == 12
        assert isin_valid(isin)
        [(_, again)] = _isins(_details(c, stock("ZZXQ"))[0])
        assert again == isin  # stable: a client may key instruments on it
    finally:
        c.stop()
    assert not c.failures


def test_option_parameters_and_option_details(ibapi) -> None:
    c = ibapi()
    opt, chain = _atm_call(c)
    assert chain["tradingClass"] == "SPY" and chain["multiplier"] == "100"
    assert chain["underlyingConId"] == 756733
    assert chain["expirations"][0] == "20261120"
    assert opt.conId > 0 and opt.multiplier == "100"
    assert opt.localSymbol.startswith("SPY   ")


def test_history_keep_up_to_date_then_cancel_answers_162_and_366(sim: EmbeddedSim, ibapi) -> None:
    c = ibapi()
    [spy] = _details(c, stock("SPY"))
    rid = c.req_id()
    c.reqHistoricalData(rid, spy.contract, "", "1800 S", "1 min", "TRADES", 1, 2, True, [])
    c.wait_for(lambda: ("historicalData", rid) in c.ended, what="the initial bars")
    assert len(c.bars[rid]) == 30
    sim.clock.advance(timedelta(minutes=2))
    c.wait_for(lambda: len(c.bar_updates[rid]) >= 2, what="bar updates")
    c.cancelHistoricalData(rid)
    c.wait_for(lambda: c.errors_of(162), what="error 162")
    assert c.errors_of(162) == [(rid, 162, f"{CANCELLED_162}{rid}")]
    count = len(c.bar_updates[rid])
    sim.clock.advance(timedelta(minutes=2))
    c.cancelHistoricalData(rid)  # nothing open under that id any more
    c.wait_for(lambda: c.errors_of(366), what="error 366")
    assert c.errors_of(366) == [(rid, 366, f"{NOT_FOUND_366}{rid}")]
    assert len(c.bar_updates[rid]) == count
    once = c.req_id()
    c.reqHistoricalData(once, spy.contract, "", "600 S", "1 min", "TRADES", 1, 2, False, [])
    c.wait_for(lambda: ("historicalData", once) in c.ended, what="one-shot bars")
    c.cancelHistoricalData(once)  # answered in full already: IB says 366, as in its sample run
    c.cancelHistoricalData(9999)  # never asked
    c.wait_for(lambda: len(c.errors_of(366)) == 3, what="two more 366")
    assert [rid for rid, _, _ in c.errors_of(366)][1:] == [once, 9999]
    assert len(c.errors_of(162)) == 1


def test_streaming_quotes_and_option_greeks(sim: EmbeddedSim, ibapi) -> None:
    c = ibapi()
    opt, _ = _atm_call(c)
    [spy] = _details(c, stock("SPY"))
    s_id, o_id = c.req_id(), c.req_id()
    c.reqMktData(s_id, spy.contract, "", False, False, [])
    c.reqMktData(o_id, opt, "", False, False, [])
    c.wait_for(
        lambda: {1, 2, 0, 3} <= set(c.ticks[s_id]) and 13 in c.greeks[o_id], what="first ticks"
    )
    assert c.ticks[s_id][1] < c.ticks[s_id][2]
    iv, delta, _, gamma, _, _, und = c.greeks[o_id][13]
    assert iv > 0 and 0 < delta < 1 and gamma > 0 and und > 0
    before = dict(c.ticks[s_id])
    sim.clock.advance(timedelta(minutes=2))
    c.wait_for(lambda: c.ticks[s_id] != before, what="a streamed change")
    c.cancelMktData(s_id)
    c.cancelMktData(o_id)


def _summary_now(c: IbApiClient, rid: int) -> dict[str, tuple[str, str]]:
    with c.cond:
        return {tag: (value, cur) for _, tag, value, cur in c.summary[rid]}


def test_account_summary_all_tags_then_an_update_after_a_fill(sim: EmbeddedSim, ibapi) -> None:
    c = ibapi()
    rid = c.req_id()
    c.reqAccountSummary(rid, "All", AccountSummaryTags.AllTags)
    c.wait_for(lambda: ("accountSummary", rid) in c.ended, what="the account summary")
    first = _summary_now(c, rid)
    asked = set(AccountSummaryTags.AllTags.split(","))
    assert len(asked) == 29
    # IB answers Leverage as Leverage-S and has no ReqTEquity/ReqTMargin (ibapi's misspelling
    # of RegTEquity/RegTMargin, ib_insync #589): every other tag comes back.
    expected = (asked - {"ReqTEquity", "ReqTMargin", "Leverage"}) | {"Leverage-S"}
    assert set(first) == expected
    assert first["NetLiquidation"] == ("100000.00", "USD")
    assert first["AccountType"] == ("INDIVIDUAL", "")
    for tag in ("FullAvailableFunds", "FullInitMarginReq", "FullMaintMarginReq"):
        assert first[tag][1] == "USD"
    assert float(first["Cushion"][0]) == pytest.approx(1.0)
    assert first["DayTradesRemaining"] == ("-1", "")
    assert int(first["LookAheadNextChange"][0]) > START.timestamp()
    assert all(row[0] == "DU123456" for row in c.summary[rid])

    opt, _ = _atm_call(c)
    bid, ask = _quote(c, opt)
    oid = c.next_id
    c.placeOrder(oid, opt, limit_order("BUY", 2, ask, orderRef="summary-fill"))
    c.wait_for(lambda: "Filled" in c.orders[oid].statuses, what="the fill")
    cash = 100_000.0 - 2 * ask * 100 - 1.30
    c.wait_for(
        lambda: (
            len(c.summary_batches[rid]) >= 2
            and abs(float(_summary_now(c, rid)["TotalCashValue"][0]) - cash) < 0.01
        ),
        what="the summary update after the fill",
    )
    update = c.summary_batches[rid][1]
    changed = {tag for _, tag, _, _ in update}
    assert {"TotalCashValue", "GrossPositionValue", "NetLiquidation"} <= changed
    assert "AccountType" not in changed  # only what changed is sent again
    now = _summary_now(c, rid)
    assert float(now["GrossPositionValue"][0]) > 0
    assert float(now["Leverage-S"][0]) == pytest.approx(
        float(now["GrossPositionValue"][0]) / float(now["NetLiquidation"][0]), abs=0.01
    )
    c.cancelAccountSummary(rid)
    batches = len(c.summary_batches[rid])
    c.placeOrder(oid + 1, opt, limit_order("SELL", 2, bid, orderRef="after-cancel"))
    c.wait_for(lambda: "Filled" in c.orders[oid + 1].statuses, what="the closing fill")
    c.settle(0.3)
    assert len(c.summary_batches[rid]) == batches


def test_bracket_fills_with_executions_commissions_positions_and_orders(
    sim: EmbeddedSim, ibapi
) -> None:
    c = ibapi(34)
    opt, _ = _atm_call(c)
    bid, ask = _quote(c, opt)
    parent = c.next_id
    ref = "ibapi-bracket"
    legs = [
        limit_order("BUY", 2, ask, orderRef=ref, transmit=False),
        limit_order("SELL", 2, round(ask + 0.08, 2), orderRef=ref, parentId=parent, transmit=False),
        stop_order("SELL", 2, round(bid - 0.08, 2), orderRef=ref, parentId=parent, transmit=True),
    ]
    for i, order in enumerate(legs):
        c.placeOrder(parent + i, opt, order)
    c.wait_for(lambda: "Filled" in c.orders[parent].statuses, what="the parent fill")
    c.wait_for(lambda: len(c.executions[-1]) >= 1 and c.commissions, what="execDetails and fees")
    contract, execution = c.executions[-1][0]
    assert contract.conId == opt.conId
    assert execution.side == "BOT" and execution.shares == Decimal(2) and execution.price == ask
    assert execution.orderRef == ref and execution.orderId == parent
    [fee] = c.commissions
    assert fee.execId == execution.execId and fee.commissionAndFees == pytest.approx(1.30)
    assert c.orders[parent].avg_fill_price == ask and c.orders[parent].perm_id > 0
    c.wait_for(
        lambda: all("Submitted" in c.orders[parent + i].statuses for i in (1, 2)),
        what="live children",
    )
    assert c.orders[parent + 1].parent_id == parent

    c.reqPositions()
    c.wait_for(lambda: c.position_ends >= 1, what="positionEnd")
    account, qty, avg_cost = c.positions[opt.conId]
    assert account == "DU123456" and qty == Decimal(2)
    assert avg_cost == pytest.approx(ask * 100 + 0.65)

    c.reqOpenOrders()
    c.wait_for(lambda: c.open_order_ends >= 1, what="openOrderEnd")
    assert c.orders[parent + 1].open_order is not None
    assert c.orders[parent + 1].open_order.orderRef == ref

    for _ in range(120):
        if any(s in ("Filled", "Cancelled") for i in (1, 2) for s in c.orders[parent + i].statuses):
            break
        sim.clock.advance(timedelta(seconds=30))
        target = sim.stats["steps"] + 2
        _wait_server(lambda t=target: sim.stats["steps"] >= t, "two simulation steps")
    c.wait_for(
        lambda: (
            sorted(c.orders[parent + i].statuses[-1] for i in (1, 2)) == ["Cancelled", "Filled"]
        ),
        timeout=10,
        what="one child filled, the other cancelled by OCA",
    )
    c.wait_for(lambda: len(c.commissions) == 2, what="the closing fee")
    c.wait_for(lambda: c.positions[opt.conId][1] == 0, what="the flat position")

    rid = c.req_id()
    c.reqExecutions(rid, ExecutionFilter())
    c.wait_for(lambda: ("execDetails", rid) in c.ended, what="execDetailsEnd")
    assert [e.side for _, e in c.executions[rid]] == ["BOT", "SLD"]
    c.reqCompletedOrders(True)
    c.wait_for(lambda: c.completed_ends >= 1, what="completedOrdersEnd")
    states = sorted(state.status for _, _, state in c.completed)
    assert states == ["Cancelled", "Filled", "Filled"]
    assert {order.orderRef for _, order, _ in c.completed} == {ref}


def test_cancel_answers_202(ibapi) -> None:
    c = ibapi(35)
    opt, _ = _atm_call(c)
    bid, _ = _quote(c, opt)
    oid = c.next_id
    c.placeOrder(oid, opt, limit_order("BUY", 1, round(max(0.01, bid / 2), 2), orderRef="rest"))
    c.wait_for(lambda: "Submitted" in c.orders[oid].statuses, what="Submitted")
    from ibapi.order_cancel import OrderCancel

    c.cancelOrder(oid, OrderCancel())
    c.wait_for(lambda: "Cancelled" in c.orders[oid].statuses, what="Cancelled")
    c.wait_for(lambda: c.errors_of(202), what="error 202")
    assert c.errors_of(202)[0][0] == oid


def test_a_restarted_client_sees_its_fills_again(sim: EmbeddedSim, ibapi) -> None:
    c = ibapi(36)
    opt, _ = _atm_call(c)
    _, ask = _quote(c, opt)
    oid = c.next_id
    c.placeOrder(oid, opt, limit_order("BUY", 1, ask, orderRef="before-restart"))
    c.wait_for(lambda: "Filled" in c.orders[oid].statuses, what="the fill")
    c.stop()
    _wait_server(lambda: sim.stats["active_clients"] == 0, "the server to see the close")
    again = ibapi(36)
    assert again.next_id > oid
    rid = again.req_id()
    again.reqExecutions(rid, ExecutionFilter())
    again.wait_for(lambda: ("execDetails", rid) in again.ended, what="execDetailsEnd")
    assert [e.orderRef for _, e in again.executions[rid]] == ["before-restart"]
    again.wait_for(lambda: len(again.commissions) == 1, what="the fee report again")


def test_isin_at_an_older_server_version(make_sim) -> None:
    s = make_sim(SimOptions(seed=7, server_version=163), real_time=True)
    c = IbApiClient().start(s.port, 37)
    try:
        assert c.serverVersion() == 163
        [spy] = _details(c, stock("SPY"))
        assert _isins(spy) == [("ISIN", "US78462F1030")]
    finally:
        c.stop()
    assert not c.failures


def test_clock_is_the_simulated_one(sim: EmbeddedSim, ibapi) -> None:
    c = ibapi()
    seen: list[int] = []
    c.currentTime = lambda t: c._note(lambda: seen.append(t))  # type: ignore[method-assign]
    c.reqCurrentTime()
    c.wait_for(lambda: bool(seen), what="currentTime")
    assert seen == [int(START.timestamp())]

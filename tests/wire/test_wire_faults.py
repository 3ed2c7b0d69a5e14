"""Every fault the simulator injects, as a plain ib_async client sees it."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ib_async import IB, LimitOrder, MarketOrder, Option, Stock, util
from wirekit import START, Errors, FakeMonotonic, settle, wait_dropped, wait_steps, wait_until

from sim.config import SimOptions
from sim.faults import Scenario
from sim.protocol import EASTERN
from sim.runner import EmbeddedSim

SCENARIOS = Path(__file__).resolve().parents[2] / "sim" / "scenarios"
CONNECT_FAILED = (TimeoutError, asyncio.TimeoutError, ConnectionError, OSError)


def _spy(ib: IB) -> Stock:
    spy = Stock("SPY", "SMART", "USD")
    assert ib.qualifyContracts(spy) == [spy]
    return spy


def _bars(
    ib: IB, symbol: str = "SPY", duration: str = "1 D", timeout: float = 5, bar_size: str = "1 min"
) -> list:
    return list(
        ib.reqHistoricalData(
            Stock(symbol, "SMART", "USD"),
            "",
            duration,
            bar_size,
            "TRADES",
            True,
            timeout=timeout,
        )
    )


def _atm_call(ib: IB) -> Option:
    spy = _spy(ib)
    chain = next(
        c for c in ib.reqSecDefOptParams("SPY", "", "STK", spy.conId) if c.exchange == "SMART"
    )
    [ticker] = ib.reqTickers(spy)
    strike = min(chain.strikes, key=lambda k: abs(k - ticker.last))
    opt = Option("SPY", chain.expirations[2], strike, "C", "SMART", tradingClass=chain.tradingClass)
    assert ib.qualifyContracts(opt) == [opt]
    return opt


def _history_task(ib: IB, symbol: str = "SPY", timeout: float = 5) -> asyncio.Task:
    return util.getLoop().create_task(
        ib.reqHistoricalDataAsync(
            Stock(symbol, "SMART", "USD"), "", "1 D", "1 min", "TRADES", True, timeout=timeout
        )
    )


def _raw_connect_closes(port: int) -> bool:
    """True when the server accepts a TCP connection and closes it without a word."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"API\0\0\0\0\tv157..178")
        try:
            return sock.recv(1) == b""
        except ConnectionResetError:
            return True


# ---------------------------------------------------------------------- historical data


def test_history_stall_after_n_requests_never_answers(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("history_stall", after=3)
    ib = connect(1, target=sim)
    errors = Errors(ib)
    assert all(_bars(ib, "SPY", f"{d} D") for d in (1, 2, 3))
    # The predecessor's log: "reqHistoricalData: Timeout for Stock(symbol='SPY', ...)".
    assert _bars(ib, "SPY", "4 D", timeout=0.5) == []
    assert _bars(ib, "QQQ", timeout=0.5) == []
    # ib_async cancels a request it gave up on; the Gateway acknowledges the still-open query
    # with error 162 (ib_insync issue #268: "Timeout" then "API historical data query cancelled").
    wait_until(ib, lambda: len(errors.of(162)) == 2, what="both cancels acknowledged")
    assert errors.codes() == [162, 162]
    assert all("API historical data query cancelled" in text for _, _, text in errors.seen)
    assert ib.reqCurrentTime() == START  # the connection itself is fine
    assert sim.stats["faults"]["history_stall"] == 2


def test_history_stall_at_a_simulated_time_for_one_symbol(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("history_stall", at="+4m", symbol="SPY")
    ib = connect(1, target=sim)
    assert _bars(ib, "SPY")
    sim.clock.advance(timedelta(minutes=4))
    assert _bars(ib, "SPY", "2 D", timeout=0.5) == []
    assert _bars(ib, "QQQ")


def test_history_delay_answers_after_real_seconds(make_sim, connect, mono: FakeMonotonic) -> None:
    sim = make_sim()
    sim.faults.add("history_delay", delay_seconds=30)
    ib = connect(1, target=sim)
    task = _history_task(ib)
    settle(ib, 0.3)
    assert not task.done()
    mono.advance(30)
    wait_until(ib, task.done, what="the delayed answer")
    assert len(task.result()) > 0


# ---------------------------------------------------------------------- connections


def test_disconnect_at_a_time_drops_the_socket(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("disconnect", at="+1m", client_id=2)
    one, two = connect(1, target=sim), connect(2, target=sim)
    dropped = []
    two.disconnectedEvent += lambda: dropped.append(2)
    sim.clock.advance(timedelta(minutes=1))
    wait_dropped(two)
    assert dropped == [2]
    assert one.isConnected() and one.reqCurrentTime() == START + timedelta(minutes=1)


def test_disconnect_after_n_requests(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("disconnect", after=2, request="historical")
    ib = connect(1, target=sim)
    dropped = []
    ib.disconnectedEvent += lambda: dropped.append(True)
    assert _bars(ib, "SPY")
    assert not dropped
    assert _bars(ib, "QQQ")  # the second is answered, then the socket drops
    wait_dropped(ib)
    assert dropped == [True]


def test_gateway_restart_refuses_then_accepts_with_state_intact(
    make_sim, connect, mono: FakeMonotonic
) -> None:
    sim = make_sim()
    ib = connect(1, target=sim)
    opt = _atm_call(ib)
    [quote] = ib.reqTickers(opt)
    resting = ib.placeOrder(opt, LimitOrder("BUY", 1, round(quote.bid / 2, 2), orderRef="rest"))
    filled = ib.placeOrder(opt, MarketOrder("BUY", 2, orderRef="mkt"))
    wait_until(ib, lambda: filled.isDone() and resting.orderStatus.status == "Submitted")
    other = connect(2, target=sim)
    sim.faults.add("gateway_restart", down_seconds=60)
    wait_dropped(ib)
    wait_dropped(other)
    # Starting up: TCP connects, then the socket closes without a handshake answer.
    assert _raw_connect_closes(sim.port)
    refused = IB()
    with pytest.raises(CONNECT_FAILED):
        refused.connect("127.0.0.1", sim.port, clientId=1, timeout=1)
    assert sim.stats["refused_restarting"] == 2
    mono.advance(60)
    again = connect(1, target=sim)
    assert [t.order.orderRef for t in again.openTrades()] == ["rest"]
    assert [f.execution.orderRef for f in again.fills()] == ["mkt"]
    assert [p.position for p in again.positions()] == [2]
    assert sim.stats["faults"]["gateway_restart"] == 1


def test_connectivity_lost_then_restored_with_data_kept(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("connectivity_lost", at="+1m", duration="5m", restore="data_kept")
    ib = connect(1, target=sim)
    errors = Errors(ib)
    ticker = ib.reqMktData(_spy(ib))
    wait_until(ib, lambda: not math.isnan(ticker.bid), what="first quote")
    sim.clock.advance(timedelta(minutes=1))
    wait_until(ib, lambda: 1100 in errors.codes(), what="1100")
    before = ticker.bid, ticker.ask, ticker.volume
    sim.clock.advance(timedelta(minutes=2))
    wait_steps(ib, sim, 3)
    settle(ib, 0.1)
    assert (ticker.bid, ticker.ask, ticker.volume) == before, "ticks during the outage"
    sim.clock.advance(timedelta(minutes=3))
    wait_until(ib, lambda: 1102 in errors.codes(), what="1102")
    wait_until(ib, lambda: (ticker.bid, ticker.ask, ticker.volume) != before, what="ticks again")
    assert errors.codes() == [1100, 1102]


def test_connectivity_lost_then_restored_with_data_lost(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("connectivity_lost", duration="2m", restore="data_lost")
    ib = connect(1, target=sim)
    errors = Errors(ib)
    ticker = ib.reqMktData(_spy(ib))
    settle(ib, 0.2)
    assert math.isnan(ticker.bid)  # no data during the outage
    sim.clock.advance(timedelta(minutes=2))
    wait_until(ib, lambda: 1101 in errors.codes(), what="1101")
    sim.clock.advance(timedelta(minutes=5))
    wait_steps(ib, sim, 3)
    settle(ib, 0.1)
    assert math.isnan(ticker.bid), "a lost subscription must stay silent until renewed"
    ib.cancelMktData(ticker.contract)
    renewed = ib.reqMktData(ticker.contract)
    wait_until(ib, lambda: not math.isnan(renewed.bid), what="the renewed subscription")


def test_outage_at_connect_is_reported_with_1100(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("connectivity_lost")
    ib = IB()
    errors = Errors(ib)
    ib.connect("127.0.0.1", sim.port, clientId=3, timeout=5)
    try:
        wait_until(ib, lambda: 1100 in errors.codes(), what="1100")
    finally:
        ib.disconnect()


@pytest.mark.parametrize("code", [2103, 2104, 2105, 2106, 2107, 2108, 2157, 2158])
def test_farm_messages_reach_the_client(make_sim, connect, code: int) -> None:
    sim = make_sim()
    ib = connect(1, target=sim)
    errors = Errors(ib)
    sim.faults.add("farm", code=code)
    wait_until(ib, lambda: code in errors.codes(), what=f"farm message {code}")
    [(req_id, _, text)] = errors.of(code)
    assert req_id == -1 and "farm connection" in text


def test_broken_hmds_farm_holds_history_until_it_is_ok(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("farm", code=2105, at="+1m", duration="2m")
    ib = connect(1, target=sim)
    errors = Errors(ib)
    sim.clock.advance(timedelta(minutes=1))
    wait_until(ib, lambda: 2105 in errors.codes(), what="2105")
    task = _history_task(ib)
    settle(ib, 0.3)
    assert not task.done()
    sim.clock.advance(timedelta(minutes=2))
    wait_until(ib, lambda: 2106 in errors.codes(), what="2106")
    wait_until(ib, task.done, what="the held answer")
    assert len(task.result()) > 0


def test_broken_market_data_farm_at_connect(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("farm", code=2103)
    ib = IB()
    errors = Errors(ib)
    ib.connect("127.0.0.1", sim.port, clientId=4, timeout=5)
    try:
        ticker = ib.reqMktData(_spy(ib))
        settle(ib, 0.3)
        assert 2103 in errors.codes() and 2104 not in errors.codes()
        assert math.isnan(ticker.bid)
    finally:
        ib.disconnect()


# ---------------------------------------------------------------------- client ids


def test_client_id_always_in_use(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("client_id_in_use", mode="always", client_id=9)
    refused = IB()
    errors = Errors(refused)
    with pytest.raises(CONNECT_FAILED):
        refused.connect("127.0.0.1", sim.port, clientId=9, timeout=1.5)
    assert errors.codes() == [326] and not refused.isConnected()
    assert connect(10, target=sim).isConnected()


def test_quick_reconnect_with_the_same_client_id_gets_326(
    make_sim, connect, mono: FakeMonotonic
) -> None:
    sim = make_sim()
    sim.faults.add("client_id_in_use", within_seconds=60)
    first = connect(5, target=sim)
    first.disconnect()
    wait_until(first, lambda: 5 not in sim.server.by_client, what="the closed session")
    mono.advance(5)
    quick = IB()
    errors = Errors(quick)
    with pytest.raises(CONNECT_FAILED):
        quick.connect("127.0.0.1", sim.port, clientId=5, timeout=1.5)
    assert errors.codes() == [326]
    assert connect(6, target=sim).isConnected()  # another id is fine
    mono.advance(56)
    assert connect(5, target=sim).isConnected()


# ---------------------------------------------------------------------- market data


@pytest.mark.parametrize("code", [10089, 354])
def test_no_entitlement_quotes_stay_nan_and_delayed_data_works(
    make_sim, connect, code: int
) -> None:
    sim = make_sim()
    sim.faults.add("no_entitlement", code=code)
    ib = connect(1, target=sim)
    errors = Errors(ib)
    spy = _spy(ib)
    live = ib.reqMktData(spy)
    wait_until(ib, lambda: code in errors.codes(), what=f"error {code}")
    sim.clock.advance(timedelta(minutes=1))
    wait_steps(ib, sim, 3)
    settle(ib, 0.1)
    assert math.isnan(live.bid) and math.isnan(live.ask) and math.isnan(live.last)
    [snapshot] = ib.reqTickers(spy)
    assert math.isnan(snapshot.bid)
    ib.cancelMktData(spy)
    ib.reqMarketDataType(3)
    delayed = ib.reqMktData(spy)
    wait_until(ib, lambda: not math.isnan(delayed.bid), what="delayed quotes")
    assert 10167 in errors.codes()
    assert delayed.marketDataType == 3
    assert delayed.bid < delayed.ask and not math.isnan(delayed.last)
    # Delayed data is 15 minutes old: it matches a live quote from then.
    live_then = sim.call(lambda: sim.market.quote("SPY", sim.clock.now() - timedelta(minutes=15)))
    assert delayed.bid == pytest.approx(live_then.bid)


def test_no_entitlement_for_one_symbol_only(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("no_entitlement", symbol="QQQ", code=354)
    ib = connect(1, target=sim)
    errors = Errors(ib)
    spy, qqq = Stock("SPY", "SMART", "USD"), Stock("QQQ", "SMART", "USD")
    ib.qualifyContracts(spy, qqq)
    a, b = ib.reqMktData(spy), ib.reqMktData(qqq)
    wait_until(ib, lambda: not math.isnan(a.bid) and 354 in errors.codes())
    assert math.isnan(b.bid)


def test_delayed_data_not_enabled(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("no_entitlement", delayed=False)
    ib = connect(1, target=sim)
    errors = Errors(ib)
    ib.reqMarketDataType(3)
    ticker = ib.reqMktData(_spy(ib))
    wait_until(ib, lambda: 10168 in errors.codes(), what="10168")
    assert math.isnan(ticker.bid)


def test_delayed_option_quotes_and_greeks(make_sim, connect) -> None:
    sim = make_sim()
    ib = connect(1, target=sim)
    opt = _atm_call(ib)
    sim.faults.add("no_entitlement")
    ib.reqMarketDataType(4)
    ticker = ib.reqMktData(opt)
    wait_until(
        ib,
        lambda: not math.isnan(ticker.bid) and ticker.modelGreeks is not None,
        what="delayed option data",
    )
    assert ticker.bid < ticker.ask and ticker.modelGreeks.delta > 0


def test_empty_option_chain(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("empty_chain", symbol="SPY")
    ib = connect(1, target=sim)
    spy = _spy(ib)
    assert ib.reqSecDefOptParams("SPY", "", "STK", spy.conId) == []
    assert ib.reqSecDefOptParams("QQQ", "", "STK", 320227571) != []


def test_contract_not_found(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("contract_not_found", symbol="QQQ")
    ib = connect(1, target=sim)
    errors = Errors(ib)
    assert ib.qualifyContracts(Stock("QQQ", "SMART", "USD")) == [None]
    assert errors.codes() == [200]
    assert _bars(ib, "QQQ") == [] and errors.codes() == [200, 200]
    assert _spy(ib).conId > 0


# ---------------------------------------------------------------------- orders


def test_order_rejected_with_reason(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("order_reject", reason="Insufficient buying power")
    ib = connect(1, target=sim)
    errors = Errors(ib)
    trade = ib.placeOrder(_spy(ib), MarketOrder("BUY", 10))
    wait_until(ib, trade.isDone, what="the rejection")
    assert trade.orderStatus.status == "Cancelled"
    [(req_id, code, text)] = errors.seen
    assert (req_id, code) == (trade.order.orderId, 201)
    assert text == "Order rejected - reason:Insufficient buying power"
    assert sim.call(lambda: sim.book.live_orders()) == [] and ib.positions() == []


def test_order_rejected_after_n_orders_for_one_symbol(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("order_reject", after=1, symbol="SPY")
    ib = connect(1, target=sim)
    spy = _spy(ib)
    first = ib.placeOrder(spy, MarketOrder("BUY", 1))
    wait_until(ib, first.isDone)
    second = ib.placeOrder(spy, MarketOrder("BUY", 1))
    wait_until(ib, second.isDone)
    assert [first.orderStatus.status, second.orderStatus.status] == ["Filled", "Cancelled"]


def test_exchange_cancels_a_live_order(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("exchange_cancel", at="+10m", reason="Order was canceled by the exchange")
    ib = connect(1, target=sim)
    errors = Errors(ib)
    spy = _spy(ib)
    [quote] = ib.reqTickers(spy)
    trade = ib.placeOrder(spy, LimitOrder("BUY", 10, round(quote.bid * 0.9, 2)))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    sim.clock.advance(timedelta(minutes=10))
    wait_until(ib, trade.isDone, what="the exchange cancel")
    assert trade.orderStatus.status == "Cancelled"
    # The status and the 202 are two messages: the trade may be done before the error is read.
    wait_until(ib, lambda: errors.seen, what="error 202")
    [(_, code, text)] = errors.seen
    assert code == 202 and text == "Order Canceled - reason:Order was canceled by the exchange"


def test_partial_fills_arrive_step_by_step(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("partial_fill", fraction=0.5)
    ib = connect(1, target=sim)
    trade = ib.placeOrder(_spy(ib), MarketOrder("BUY", 100, orderRef="parts"))
    wait_until(ib, trade.isDone, what="the last part")
    wait_until(
        ib, lambda: len(trade.fills) >= 2 and sum(f.execution.shares for f in trade.fills) == 100
    )
    shares = [f.execution.shares for f in trade.fills]
    assert shares[:3] == [50, 25, 12]
    assert [f.execution.cumQty for f in trade.fills][-1] == 100
    statuses = [e.status for e in trade.log]
    assert "Submitted" in statuses and statuses[-1] == "Filled"
    assert all(f.commissionReport.execId for f in trade.fills)
    # The position message follows the last execution: it may still be on its way.
    wait_until(ib, lambda: [p.position for p in ib.positions()] == [100], what="the position")


def test_partial_fill_fractions_are_seeded(make_sim, connect) -> None:
    def run() -> list[float]:
        sim = make_sim()
        sim.faults.add("partial_fill", fraction=[0.1, 0.9])
        ib = connect(1, target=sim)
        trade = ib.placeOrder(_spy(ib), MarketOrder("BUY", 200))
        wait_until(ib, trade.isDone)
        wait_until(ib, lambda: sum(f.execution.shares for f in trade.fills) == 200)
        ib.disconnect()
        return [f.execution.shares for f in trade.fills]

    first, second = run(), run()
    assert first == second and len(first) >= 2


def test_fills_at_a_worse_price(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("slippage", ticks=3)
    ib = connect(1, target=sim)
    spy = _spy(ib)
    [quote] = ib.reqTickers(spy)
    trade = ib.placeOrder(spy, MarketOrder("BUY", 10))
    wait_until(ib, lambda: trade.isDone() and bool(trade.fills))
    assert trade.fills[0].execution.price == pytest.approx(quote.ask + 0.03)
    # A limit order never fills through its limit.
    capped = ib.placeOrder(spy, LimitOrder("BUY", 10, quote.ask + 0.01))
    wait_until(ib, lambda: capped.isDone() and bool(capped.fills))
    assert capped.fills[0].execution.price == pytest.approx(quote.ask + 0.01)


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_fill_arrives_after_the_cancel_was_sent(make_sim, connect, fraction: float) -> None:
    sim = make_sim()
    sim.faults.add("fill_after_cancel", fraction=fraction)
    ib = connect(1, target=sim)
    errors = Errors(ib)
    spy = _spy(ib)
    [quote] = ib.reqTickers(spy)
    limit = round(quote.bid - 0.50, 2)
    trade = ib.placeOrder(spy, LimitOrder("BUY", 10, limit, orderRef="race"))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    ib.cancelOrder(trade.order)
    wait_until(ib, trade.isDone, what="the final status")
    wait_until(ib, lambda: bool(trade.fills) and trade.fills[0].commissionReport.execId)
    statuses = [e.status for e in trade.log]
    assert "PendingCancel" in statuses
    assert trade.fills[0].execution.price == limit
    if fraction == 1.0:
        assert trade.orderStatus.status == "Filled" and trade.orderStatus.filled == 10
        assert 202 not in errors.codes()
    else:
        assert trade.orderStatus.status == "Cancelled" and trade.orderStatus.filled == 5
        assert trade.fills[0].execution.shares == 5
        wait_until(ib, lambda: 202 in errors.codes())
    wait_until(ib, lambda: bool(ib.positions()))
    assert ib.positions()[0].position == 10 * fraction


def test_plain_cancel_goes_through_pending_cancel(make_sim, connect) -> None:
    sim = make_sim()
    ib = connect(1, target=sim)
    spy = _spy(ib)
    [quote] = ib.reqTickers(spy)
    trade = ib.placeOrder(spy, LimitOrder("BUY", 1, round(quote.bid * 0.9, 2)))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    seen: list[str] = []
    trade.statusEvent += lambda t: seen.append(t.orderStatus.status)
    ib.cancelOrder(trade.order)
    wait_until(ib, trade.isDone)
    assert seen[-1] == "Cancelled" and "PendingCancel" in seen


def test_read_only_api_refuses_every_order(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("read_only")
    ib = connect(1, target=sim)
    errors = Errors(ib)
    spy = _spy(ib)
    trades = [ib.placeOrder(spy, MarketOrder("BUY", 1)) for _ in range(2)]
    wait_until(ib, lambda: errors.codes() == [321, 321], what="two 321s")
    assert all("Read-Only" in text for _, _, text in errors.seen)
    # ib_async treats 321 as a warning: the trade is not marked done, though it never went live.
    assert {t.orderStatus.status for t in trades} == {"ValidationError"}
    assert sim.call(lambda: sim.book.live_orders()) == [] and ib.positions() == []


# ---------------------------------------------------------------------- clock


def test_clock_jumps_forward_and_back(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("clock_jump", at="+1m", by="2h")
    sim.faults.add("clock_jump", at="+2h2m", by="-30s")
    ib = connect(1, target=sim)
    sim.clock.advance(timedelta(minutes=1))
    wait_until(ib, lambda: sim.stats["faults"]["clock_jump"] == 1, what="the jump")
    assert ib.reqCurrentTime() == START + timedelta(hours=2, minutes=1)
    sim.clock.advance(timedelta(minutes=1))
    wait_until(ib, lambda: sim.stats["faults"]["clock_jump"] == 2, what="the jump back")
    assert ib.reqCurrentTime() == START + timedelta(hours=2, minutes=2) - timedelta(seconds=30)


# ---------------------------------------------------------------------- scenario files


def _scenario_sim(make_sim, name: str, **overrides) -> EmbeddedSim:
    options = Scenario.load(SCENARIOS / name).apply(SimOptions(), start=START, **overrides)
    return make_sim(options)


def test_scenario_history_stall(make_sim, connect) -> None:
    sim = _scenario_sim(make_sim, "history_stall.yaml")
    ib = connect(1, target=sim)
    for minute in range(0, 4):
        assert _bars(ib, "SPY", f"{minute + 1} D"), minute
        sim.clock.advance(timedelta(minutes=1))
    sim.clock.advance(timedelta(seconds=5))
    assert _bars(ib, "SPY", "9 D", timeout=0.5) == []
    assert _bars(ib, "QQQ", timeout=0.5) == []


def test_scenario_entitlement_nan(make_sim, connect) -> None:
    sim = _scenario_sim(make_sim, "entitlement_nan.yaml")
    ib = connect(1, target=sim)
    errors = Errors(ib)
    spy = _spy(ib)
    assert _bars(ib, "SPY")  # historical bars work, as the predecessor saw
    [ticker] = ib.reqTickers(spy)
    assert math.isnan(ticker.bid) and 10089 in errors.codes()
    ib.reqMarketDataType(3)
    delayed = ib.reqMktData(spy)
    wait_until(ib, lambda: not math.isnan(delayed.bid), what="delayed quotes")


def test_scenario_client_id_in_use(make_sim, connect, mono: FakeMonotonic) -> None:
    sim = _scenario_sim(make_sim, "client_id_in_use.yaml")
    first = connect(254, target=sim)
    first.disconnect()
    wait_until(first, lambda: 254 not in sim.server.by_client)
    mono.advance(10)
    quick = IB()
    errors = Errors(quick)
    with pytest.raises(CONNECT_FAILED):
        quick.connect("127.0.0.1", sim.port, clientId=254, timeout=1.5)
    assert errors.codes() == [326]
    mono.advance(120)
    assert connect(254, target=sim).isConnected()


def test_scenario_gateway_restart(make_sim, connect, mono: FakeMonotonic) -> None:
    sim = _scenario_sim(make_sim, "gateway_restart.yaml")
    ib = connect(1, target=sim)
    restart = next(f for f in sim.faults.faults if f.kind == "gateway_restart")
    sim.clock.advance(sim.faults.resolve(restart.at) - START)
    wait_dropped(ib)
    assert _raw_connect_closes(sim.port)
    mono.advance(restart["down_seconds"])
    assert connect(1, target=sim).isConnected()


def test_ib_insync_sees_faults_too(make_sim) -> None:
    import ib_insync

    sim = make_sim()
    sim.faults.add("no_entitlement")
    ib = ib_insync.IB()
    codes: list[int] = []
    ib.errorEvent += lambda req_id, code, msg, contract: codes.append(code)
    ib.connect("127.0.0.1", sim.port, clientId=11, timeout=10)
    try:
        spy = ib_insync.Stock("SPY", "SMART", "USD")
        ib.qualifyContracts(spy)
        ib.reqMarketDataType(3)
        ticker = ib.reqMktData(spy)
        deadline = 50
        while math.isnan(ticker.bid) and deadline:
            ib.sleep(0.1)
            deadline -= 1
        assert not math.isnan(ticker.bid) and 10167 in codes
    finally:
        ib.disconnect()


def test_same_scenario_same_seed_same_fills(make_sim, connect) -> None:
    def run() -> list[tuple[float, float]]:
        sim = make_sim()
        sim.faults.add("slippage", ticks=[1, 5])
        sim.faults.add("partial_fill", fraction=[0.2, 0.8])
        ib = connect(1, target=sim)
        trade = ib.placeOrder(_spy(ib), MarketOrder("BUY", 300))
        wait_until(ib, trade.isDone)
        wait_until(ib, lambda: sum(f.execution.shares for f in trade.fills) == 300)
        ib.disconnect()
        return [(f.execution.shares, f.execution.price) for f in trade.fills]

    assert run() == run()


# ---------------------------------------------------------------------- calendar


def test_half_day_closes_at_one_and_quotes_freeze(make_sim, connect) -> None:
    # Friday 2026-11-27, the day after Thanksgiving: XNYS closes at 13:00 US/Eastern.
    sim = make_sim(SimOptions(seed=7, skip_closed=False))
    sim.clock.set(datetime(2026, 11, 27, 17, 55, tzinfo=UTC))  # 12:55 ET
    ib = connect(1, target=sim)
    spy = _spy(ib)
    [details] = ib.reqContractDetails(spy)
    assert "20261127:0930-20261127:1300" in details.liquidHours
    ticker = ib.reqMktData(spy)
    wait_until(ib, lambda: not math.isnan(ticker.bid), what="quotes before the close")
    sim.clock.advance(timedelta(minutes=10))  # 13:05: closed
    wait_steps(ib, sim, 3)
    settle(ib, 0.1)
    frozen = ticker.bid, ticker.ask, ticker.last
    sim.clock.advance(timedelta(hours=1))
    wait_steps(ib, sim, 3)
    settle(ib, 0.1)
    assert (ticker.bid, ticker.ask, ticker.last) == frozen
    bars = _bars(ib, "SPY")
    assert bars[-1].date.astimezone(EASTERN).strftime("%H:%M") == "12:59"


# ---------------------------------------------------------------------- command line


ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def _sim_cli(*args: str) -> Iterator[tuple[subprocess.Popen, int, list[str]]]:
    """`optionsbot sim ARGS` in a subprocess: the process, its port and its first output lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.runner", "--port", "0", "--log-level", "WARNING", *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line + proc.stderr.read()
        port = int(line.split("127.0.0.1:")[1].split()[0])
        lines = [line]
        while not lines[-1].startswith("pacing "):
            lines.append(proc.stdout.readline())
        yield proc, port, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return out


def test_optionsbot_sim_with_a_scenario_prints_violations_and_faults() -> None:
    scenario = str(SCENARIOS / "history_stall.yaml")
    start = ("--start", "2026-11-20T10:00", "--time-scale", "1")
    with _sim_cli("--scenario", scenario, *start) as (proc, port, lines):
        assert "scenario history_stall: 1 faults (hmds stops answering)" in lines[1]
        assert lines[2].strip() == "pacing on"
        ib = IB()
        ib.connect("127.0.0.1", port, clientId=1, timeout=10)
        errors = Errors(ib)
        assert _bars(ib, "SPY", bar_size="30 secs")
        assert _bars(ib, "SPY", bar_size="30 secs") == []  # identical within 15 s
        assert errors.codes() == [162]
        ib.disconnect()
        out = _stop(proc)
    assert 'pacing violations: {"historical_identical": 1}' in out
    assert "faults applied: {}" in out


def test_optionsbot_sim_without_pacing() -> None:
    with _sim_cli("--no-pacing", "--start", "2026-11-20T10:00") as (proc, port, lines):
        assert lines[1].strip() == "pacing off"
        ib = IB()
        ib.connect("127.0.0.1", port, clientId=1, timeout=10)
        errors = Errors(ib)
        assert _bars(ib, "SPY", bar_size="30 secs") and _bars(ib, "SPY", bar_size="30 secs")
        assert errors.codes() == []
        ib.disconnect()
        out = _stop(proc)
    assert "pacing violations: {}" in out


def test_optionsbot_sim_refuses_a_bad_scenario(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("faults:\n  - kind: farm\n    code: 2110\n")
    run = subprocess.run(
        [sys.executable, "-m", "sim.runner", "--port", "0", "--scenario", str(bad)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert run.returncode == 2
    assert "faults[0].code: expected one of" in run.stderr and "Traceback" not in run.stderr


# ---------------------------------------------------------------------- bad quotes and bars


@pytest.mark.parametrize(
    ("kind", "bid", "ask"),
    [("quote_zero", 0.0, 0.0), ("quote_negative", -1.0, -1.0)],
)
def test_zero_and_negative_quotes_reach_the_client_as_sent(make_sim, connect, kind, bid, ask):
    sim = make_sim()
    sim.faults.add(kind)
    ib = connect(1, target=sim)
    opt = _atm_call(ib)
    [quote] = ib.reqTickers(opt)
    # Not NaN: ib_async reads -1 as "empty" only with a zero size.
    assert (quote.bid, quote.ask) == (bid, ask)
    [stock] = ib.reqTickers(_spy(ib))
    assert stock.bid > 0 and stock.ask > stock.bid  # `what: option` leaves the stock alone


def test_crossed_quote_has_the_bid_above_the_ask(make_sim, connect):
    sim = make_sim()
    sim.faults.add("quote_crossed", by=0.10, what="both")
    ib = connect(1, target=sim)
    for contract in (_atm_call(ib), _spy(ib)):
        [quote] = ib.reqTickers(contract)
        assert quote.bid == pytest.approx(quote.ask + 0.10)


def test_frozen_quote_keeps_its_values_while_the_market_moves(make_sim, connect):
    sim = make_sim()
    ib = connect(1, target=sim)
    opt = _atm_call(ib)
    sim.faults.add("quote_frozen", what="both")
    wait_steps(ib, sim)
    [before] = ib.reqTickers(opt)
    line = ib.reqMktData(opt)
    wait_until(ib, lambda: line.bid == line.bid and line.bid > 0, what="the line's first values")
    first = (line.bid, line.ask)
    sim.clock.advance(timedelta(minutes=30))
    wait_steps(ib, sim, 3)
    [after] = ib.reqTickers(opt)
    assert (after.bid, after.ask) == (before.bid, before.ask) == first
    assert (line.bid, line.ask) == first
    sim.faults.clear()
    wait_steps(ib, sim, 3)
    [thawed] = ib.reqTickers(opt)
    assert (thawed.bid, thawed.ask) != first  # 30 minutes on, the true market has moved


def test_bar_spike_in_the_stream_and_in_history(make_sim, connect):
    sim = make_sim()
    ib = connect(1, target=sim)
    clean = _bars(ib)
    sim.faults.add("bar_spike", factor=10.0, every=5)
    stream = ib.reqHistoricalData(
        Stock("SPY", "SMART", "USD"), "", "1800 S", "1 min", "TRADES", True, keepUpToDate=True
    )
    sim.clock.advance(timedelta(minutes=12))
    wait_steps(ib, sim, 3)
    new = [b for b in stream if b.date >= START]
    spiked = [b for b in new if b.close > 5 * clean[-1].close]
    assert spiked and all(b.date.minute % 5 == 0 for b in spiked)
    assert len(spiked) < len(new)
    assert all(b.close < 2 * clean[-1].close for b in stream if b.date < START)


def test_bar_duplicate_and_out_of_order_in_history(make_sim, connect):
    sim = make_sim()
    ib = connect(1, target=sim)
    clean = _bars(ib)
    dup = sim.faults.add("bar_duplicate", every=10)
    times = [b.date for b in _bars(ib)]
    assert sorted(set(times)) == [b.date for b in clean]
    assert len(times) == len(clean) + math.ceil(len(clean) / 10)
    sim.faults.remove(dup)
    sim.faults.add("bar_out_of_order", every=10)
    swapped = [b.date for b in _bars(ib)]
    assert sorted(swapped) == [b.date for b in clean]
    assert swapped != sorted(swapped)

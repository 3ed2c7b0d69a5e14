"""The real ib_async client over a real socket against the embedded simulator."""

from __future__ import annotations

import asyncio
import math
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from ib_async import IB, LimitOrder, MarketOrder, Option, Stock
from wirekit import SESSION_OPEN, START, wait_steps, wait_until

from sim.clock import ManualClock, ScaledClock
from sim.config import SimOptions
from sim.protocol import EASTERN
from sim.runner import EmbeddedSim

EXEC_ID = re.compile(r"^[0-9a-f]{8}\.[0-9a-f]{8}\.01\.01$")


def _spy(ib: IB) -> Stock:
    spy = Stock("SPY", "SMART", "USD")
    assert ib.qualifyContracts(spy) == [spy]
    return spy


def _atm_call(ib: IB, expiry_index: int = 2) -> Option:
    spy = _spy(ib)
    chain = next(
        c for c in ib.reqSecDefOptParams("SPY", "", "STK", spy.conId) if c.exchange == "SMART"
    )
    [ticker] = ib.reqTickers(spy)
    strike = min(chain.strikes, key=lambda k: abs(k - ticker.last))
    opt = Option(
        "SPY",
        chain.expirations[expiry_index],
        strike,
        "C",
        "SMART",
        tradingClass=chain.tradingClass,
    )
    assert ib.qualifyContracts(opt) == [opt]
    return opt


def test_connect_and_startup_sync(sim: EmbeddedSim, connect) -> None:
    ib = connect(1)
    assert ib.isConnected()
    assert ib.client.serverVersion() == 176
    assert ib.managedAccounts() == ["DU123456"]
    assert ib.positions() == []
    assert ib.openTrades() == []
    assert ib.fills() == []
    values = {(v.tag, v.currency): v.value for v in ib.accountValues()}
    assert float(values[("NetLiquidation", "USD")]) == pytest.approx(100_000.0)
    assert float(values[("TotalCashValue", "USD")]) == pytest.approx(100_000.0)
    assert values[("AccountCode", "")] == "DU123456"
    for tag in (
        "BuyingPower",
        "AvailableFunds",
        "EquityWithLoanValue",
        "GrossPositionValue",
        "UnrealizedPnL",
        "RealizedPnL",
    ):
        assert (tag, "USD") in values
    summary = {v.tag: v.value for v in ib.accountSummary()}
    assert float(summary["NetLiquidation"]) == pytest.approx(100_000.0)
    assert sim.stats["errors"][2104] == 1 and sim.stats["errors"][2158] == 1


def test_client_id_in_use_is_refused(sim: EmbeddedSim, connect) -> None:
    first = connect(5)
    second = IB()
    codes: list[int] = []
    second.errorEvent += lambda req_id, code, msg, contract: codes.append(code)
    with pytest.raises((TimeoutError, asyncio.TimeoutError, ConnectionError)):
        second.connect("127.0.0.1", sim.port, clientId=5, timeout=1.5)
    assert codes == [326]
    assert not second.isConnected()
    assert first.isConnected()
    assert first.reqCurrentTime() == START
    assert sim.stats["errors"][326] == 1


def test_qualify_stock_details_and_market_rule(connect) -> None:
    ib = connect(1)
    spy = _spy(ib)
    assert spy.conId == 756733
    assert spy.primaryExchange == "ARCA"
    [details] = ib.reqContractDetails(Stock("SPY", "SMART", "USD"))
    assert details.timeZoneId == "US/Eastern"
    assert details.minTick == 0.01
    assert details.longName == "SPDR S&P 500 ETF TRUST"
    assert "20261120:0930-20261120:1600" in details.liquidHours
    assert "20261121:CLOSED" in details.liquidHours
    assert "20261126:CLOSED" in details.liquidHours  # Thanksgiving
    rule = int(details.marketRuleIds.split(",")[0])
    increments = ib.reqMarketRule(rule)
    assert [(i.lowEdge, i.increment) for i in increments] == [(0.0, 0.01)]
    by_id = ib.reqContractDetails(Stock(conId=756733))
    assert by_id[0].contract.symbol == "SPY"


def test_sec_def_opt_params_and_option_qualify(connect) -> None:
    ib = connect(1)
    spy = _spy(ib)
    chains = ib.reqSecDefOptParams("SPY", "", "STK", spy.conId)
    assert {c.exchange for c in chains} == {"SMART", "CBOE"}
    chain = next(c for c in chains if c.exchange == "SMART")
    assert chain.tradingClass == "SPY" and chain.multiplier == "100"
    assert int(chain.underlyingConId) == spy.conId  # ib_async keeps it as the raw text
    assert list(chain.expirations) == sorted(chain.expirations)
    assert chain.expirations[0] == "20261120"
    assert list(chain.strikes) == sorted(chain.strikes)
    opt = _atm_call(ib)
    assert opt.conId > 0 and opt.conId != spy.conId
    assert opt.multiplier == "100"
    assert (
        opt.localSymbol
        == f"SPY   {opt.lastTradeDateOrContractMonth[2:]}C{int(opt.strike * 1000):08d}"
    )
    again = Option("SPY", opt.lastTradeDateOrContractMonth, opt.strike, "CALL", "SMART")
    ib.qualifyContracts(again)
    assert again.conId == opt.conId
    [details] = ib.reqContractDetails(opt)
    assert details.underConId == spy.conId
    [inc] = ib.reqMarketRule(int(details.marketRuleIds.split(",")[0]))
    assert inc.increment == 0.01  # SPY options trade in pennies at every price
    by_id = ib.reqContractDetails(Option(conId=opt.conId))
    assert by_id[0].contract.localSymbol == opt.localSymbol
    all_calls = ib.reqContractDetails(
        Option("SPY", opt.lastTradeDateOrContractMonth, 0, "C", "SMART")
    )
    # One expiry lists its own strikes, a subset of reqSecDefOptParams' union over every expiry.
    listed = {d.contract.strike for d in all_calls}
    assert opt.strike in listed and listed < set(chain.strikes)
    both = ib.reqContractDetails(
        Option("SPY", opt.lastTradeDateOrContractMonth, opt.strike, "", "SMART")
    )
    assert sorted(d.contract.right for d in both) == ["C", "P"]


def test_unknown_contract_reports_error_200(connect) -> None:
    ib = connect(1)
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code, msg))
    assert ib.qualifyContracts(Stock("NOSUCH", "SMART", "USD")) == [None]
    assert ib.qualifyContracts(Option("SPY", "20261120", 1.5, "C", "SMART")) == [None]
    codes = [code for _, code, _ in errors]
    assert codes == [200, 200]
    assert errors[0][2] == "No security definition has been found for the request"


def test_historical_bars(connect) -> None:
    ib = connect(1)
    spy = _spy(ib)
    bars = ib.reqHistoricalData(spy, "", "1 D", "1 min", "TRADES", useRTH=True, formatDate=2)
    assert len(bars) == 30  # 09:30 to 09:59 ET; the bar starting at 10:00 has no trades yet
    assert bars[0].date == SESSION_OPEN
    for prev, bar in zip(bars, bars[1:], strict=False):
        assert bar.date - prev.date == timedelta(minutes=1)
    for bar in bars:
        assert bar.date.tzinfo is not None and bar.date.utcoffset() == timedelta(0)
        et = bar.date.astimezone(EASTERN)
        assert (9, 30) <= (et.hour, et.minute) < (16, 0)
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.volume > 0 and bar.low <= bar.average <= bar.high
    text = ib.reqHistoricalData(spy, "", "1 D", "1 min", "TRADES", useRTH=True, formatDate=1)
    assert [b.date for b in text] == [b.date for b in bars]
    assert [b.close for b in text] == [b.close for b in bars]
    two_days = ib.reqHistoricalData(spy, "", "2 D", "5 mins", "TRADES", useRTH=True, formatDate=2)
    days = {b.date.astimezone(EASTERN).date() for b in two_days}
    assert days == {date(2026, 11, 19), date(2026, 11, 20)}
    daily = ib.reqHistoricalData(spy, "", "20 D", "1 day", "TRADES", useRTH=True)
    assert len(daily) == 20
    assert all(isinstance(b.date, date) and not isinstance(b.date, datetime) for b in daily)
    assert daily[-1].date == date(2026, 11, 20)
    hour = ib.reqHistoricalData(spy, "", "3600 S", "1 min", "MIDPOINT", useRTH=True, formatDate=2)
    assert hour and hour[0].date == SESSION_OPEN and hour[0].volume == -1
    ended = ib.reqHistoricalData(
        spy, START - timedelta(minutes=10), "600 S", "1 min", "TRADES", True, formatDate=2
    )
    assert ended[-1].date < START - timedelta(minutes=10)
    assert [b.close for b in ended] == [b.close for b in bars if b.date in {e.date for e in ended}]


def test_keep_up_to_date_streams_new_bars_without_gaps() -> None:
    clock = ScaledClock(START, scale=600.0)
    with EmbeddedSim(SimOptions(seed=7), clock=clock) as fast:
        ib = IB()
        try:
            ib.connect("127.0.0.1", fast.port, clientId=3, timeout=10)
            spy = _spy(ib)
            bars = ib.reqHistoricalData(
                spy, "", "1800 S", "1 min", "TRADES", True, formatDate=2, keepUpToDate=True
            )
            initial = len(bars)
            first_last = bars[-1].date
            seen_new: list[bool] = []
            bars.updateEvent += lambda b, has_new: seen_new.append(has_new)
            wait_until(
                ib, lambda: len(bars) >= initial + 3, timeout=5, what="three new 1-minute bars"
            )
            assert any(seen_new) and not all(seen_new)  # open-bar refreshes and new bars
            assert bars[-1].date > first_last
            dates = [b.date for b in bars]
            assert all(
                b - a == timedelta(minutes=1) for a, b in zip(dates, dates[1:], strict=False)
            )
            ib.cancelHistoricalData(bars)
            fresh = ib.reqHistoricalData(spy, "", "1800 S", "1 min", "TRADES", True, formatDate=2)
            final = {b.date: (b.open, b.high, b.low, b.close, b.volume) for b in fresh}
            closed = [b for b in bars[:-1] if b.date in final]
            assert closed and all(
                final[b.date] == (b.open, b.high, b.low, b.close, b.volume) for b in closed
            )
            count = len(bars)
            ib.sleep(0.3)
            assert len(bars) == count
        finally:
            ib.disconnect()


def test_market_data_streaming_and_snapshot(sim: EmbeddedSim, connect) -> None:
    ib = connect(1)
    spy = _spy(ib)
    opt = _atm_call(ib)
    stock = ib.reqMktData(spy)
    option = ib.reqMktData(opt)
    wait_until(
        ib, lambda: not math.isnan(stock.bid) and option.modelGreeks is not None, what="first ticks"
    )
    assert stock.bid < stock.ask and stock.bidSize > 0 and stock.volume > 0
    assert not math.isnan(stock.close)
    assert option.bid < option.ask
    greeks = option.modelGreeks
    assert (
        0 < greeks.delta < 1 and greeks.impliedVol > 0 and greeks.undPrice > 0 and greeks.gamma > 0
    )
    assert option.marketDataType == 1
    before = (stock.bid, stock.ask, stock.last, stock.volume)
    sim.clock.advance(timedelta(minutes=2))
    wait_until(
        ib,
        lambda: (stock.bid, stock.ask, stock.last, stock.volume) != before,
        what="a streamed change",
    )
    assert stock.volume > before[3]
    ib.cancelMktData(spy)
    ib.cancelMktData(opt)
    snap_stock, snap_opt = ib.reqTickers(spy, opt)
    assert snap_stock.bid < snap_stock.ask and not math.isnan(snap_stock.last)
    assert snap_opt.bid < snap_opt.ask and snap_opt.modelGreeks is not None
    ib.reqMarketDataType(3)
    delayed = ib.reqMktData(spy)
    # The same Ticker object comes back, so wait for the type, not for prices.
    wait_until(ib, lambda: delayed.marketDataType == 3, what="marketDataType 3")


def test_bracket_order_fills_then_oca_cancels_the_other_child(sim: EmbeddedSim, connect) -> None:
    ib = connect(1)
    opt = _atm_call(ib)
    [quote] = ib.reqTickers(opt)
    ref = "bracket-test-1"
    bracket = ib.bracketOrder(
        "BUY",
        2,
        limitPrice=quote.ask,
        takeProfitPrice=round(quote.ask + 0.08, 2),
        stopLossPrice=round(quote.bid - 0.08, 2),
        orderRef=ref,
    )
    trades = [ib.placeOrder(opt, o) for o in bracket]
    parent, take_profit, stop_loss = trades
    wait_until(ib, lambda: parent.orderStatus.status == "Filled", what="the parent fill")
    wait_until(
        ib,
        lambda: len(parent.fills) == 1 and parent.fills[0].commissionReport.execId,
        what="the fill report",
    )
    fill = parent.fills[0]
    assert fill.execution.orderRef == ref
    assert fill.execution.side == "BOT" and fill.execution.shares == 2
    assert fill.execution.price == quote.ask
    assert EXEC_ID.match(fill.execution.execId)
    assert fill.commissionReport.commission == pytest.approx(1.30)
    assert parent.orderStatus.avgFillPrice == quote.ask and parent.orderStatus.remaining == 0
    assert parent.orderStatus.permId > 0
    wait_until(
        ib,
        lambda: take_profit.orderStatus.status == stop_loss.orderStatus.status == "Submitted",
        what="live children",
    )
    assert take_profit.orderStatus.parentId == parent.order.orderId
    wait_until(
        ib, lambda: any(p.contract.conId == opt.conId for p in ib.positions()), what="the position"
    )
    [pos] = [p for p in ib.positions() if p.contract.conId == opt.conId]
    assert pos.position == 2
    assert pos.avgCost == pytest.approx(quote.ask * 100 + 0.65)
    cash = 100_000.0 - 2 * quote.ask * 100 - 1.30
    wait_until(
        ib,
        lambda: any(
            v.tag == "TotalCashValue"
            and v.currency == "USD"
            and float(v.value) == pytest.approx(cash, abs=0.01)
            for v in ib.accountValues()
        ),
        what="the cash update",
    )
    assert any(item.contract.conId == opt.conId and item.position == 2 for item in ib.portfolio())

    for _ in range(120):
        if take_profit.isDone() or stop_loss.isDone():
            break
        sim.clock.advance(timedelta(seconds=30))
        wait_steps(ib, sim)
    wait_until(ib, lambda: take_profit.isDone() and stop_loss.isDone(), what="both children done")
    statuses = sorted([take_profit.orderStatus.status, stop_loss.orderStatus.status])
    assert statuses == ["Cancelled", "Filled"]
    winner = take_profit if take_profit.orderStatus.status == "Filled" else stop_loss
    wait_until(
        ib,
        lambda: bool(winner.fills) and winner.fills[0].commissionReport.execId,
        what="the closing fill",
    )
    closing = winner.fills[0]
    assert closing.execution.side == "SLD" and closing.execution.orderRef == ref
    assert closing.commissionReport.realizedPNL != 0
    wait_until(
        ib,
        lambda: not any(p.contract.conId == opt.conId for p in ib.positions()),
        what="the flat position",
    )
    executions = ib.reqExecutions()
    assert len(executions) == 2


def test_cancel_and_duplicate_order_id(sim: EmbeddedSim, connect) -> None:
    ib = connect(2)
    opt = _atm_call(ib)
    [quote] = ib.reqTickers(opt)
    errors: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code))
    low = round(max(0.01, quote.bid / 2), 2)
    trade = ib.placeOrder(opt, LimitOrder("BUY", 1, low, orderRef="resting"))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted", what="Submitted")
    ib.cancelOrder(trade.order)
    wait_until(ib, lambda: trade.orderStatus.status == "Cancelled", what="Cancelled")
    wait_until(ib, lambda: (trade.order.orderId, 202) in errors, what="error 202")
    ib.client.cancelOrder(trade.order.orderId)
    wait_until(ib, lambda: (trade.order.orderId, 10148) in errors, what="error 10148")
    ib.client.placeOrder(trade.order.orderId, opt, LimitOrder("BUY", 1, low))
    wait_until(ib, lambda: (trade.order.orderId, 103) in errors, what="error 103")
    off_grid = ib.placeOrder(opt, LimitOrder("BUY", 1, low + 0.005))
    wait_until(ib, lambda: (off_grid.order.orderId, 110) in errors, what="error 110")
    modified = ib.placeOrder(opt, LimitOrder("BUY", 1, low, orderRef="to-modify"))
    wait_until(ib, lambda: modified.orderStatus.status == "Submitted", what="Submitted")
    modified.order.lmtPrice = round(low + 0.01, 2)
    ib.placeOrder(opt, modified.order)
    # Same id while live is a modification: the server acknowledges it with the usual status.
    wait_until(
        ib, lambda: any(e.message == "Modified" for e in modified.log), what="the modification"
    )
    book_price = sim.call(lambda: sim.book.get(2, modified.order.orderId).lmt_price)
    assert book_price == pytest.approx(low + 0.01)
    ib.reqGlobalCancel()
    wait_until(ib, lambda: modified.orderStatus.status == "Cancelled", what="global cancel")


def test_reconnect_sees_open_orders_completed_orders_and_executions(
    sim: EmbeddedSim, connect
) -> None:
    ib = connect(7)
    opt = _atm_call(ib)
    [quote] = ib.reqTickers(opt)
    resting = ib.placeOrder(opt, LimitOrder("BUY", 1, round(quote.bid / 2, 2), orderRef="rest-1"))
    filled = ib.placeOrder(opt, MarketOrder("BUY", 3, orderRef="mkt-1"))
    wait_until(
        ib,
        lambda: filled.orderStatus.status == "Filled" and resting.orderStatus.status == "Submitted",
        what="orders",
    )
    ib.disconnect()

    again = connect(7)
    open_trades = again.openTrades()
    assert [t.order.orderRef for t in open_trades] == ["rest-1"]
    assert open_trades[0].order.permId == resting.order.permId
    assert open_trades[0].orderStatus.status == "Submitted"
    fills = again.fills()
    assert [f.execution.orderRef for f in fills] == ["mkt-1"]
    assert fills[0].execution.shares == 3 and fills[0].commissionReport.commission == pytest.approx(
        1.95
    )
    done = [t for t in again.trades() if t.orderStatus.status == "Filled"]
    assert [t.order.orderRef for t in done] == ["mkt-1"]
    assert again.client._reqIdSeq > filled.order.orderId
    [pos] = again.positions()
    assert pos.position == 3 and pos.contract.conId == opt.conId

    master = connect(0)
    assert [t.order.orderRef for t in master.openTrades()] == ["rest-1"]
    assert [t.order.orderRef for t in master.reqAllOpenOrders()] == ["rest-1"]
    other = connect(8)
    assert other.openTrades() == []


def test_current_time_is_the_simulated_clock(sim: EmbeddedSim, connect) -> None:
    ib = connect(1)
    assert ib.reqCurrentTime() == START
    sim.clock.advance(timedelta(hours=1, seconds=17))
    assert ib.reqCurrentTime() == START + timedelta(hours=1, seconds=17)
    scaled = ScaledClock(START, scale=60.0)
    with EmbeddedSim(SimOptions(), clock=scaled) as s2:
        ib2 = connect(1, target=s2)
        now = ib2.reqCurrentTime()
        assert abs((now - scaled.now()).total_seconds()) <= 1.0


def test_closed_market_skips_to_next_open(connect) -> None:
    friday_close = datetime(2026, 11, 20, 21, 0, 30, tzinfo=UTC)
    clock = ManualClock(friday_close)
    with EmbeddedSim(SimOptions(), clock=clock) as s:
        ib = connect(1, target=s)
        wait_steps(ib, s)
        assert clock.now() == datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
        assert ib.reqCurrentTime() == clock.now()


@pytest.mark.parametrize("version", [157, 163, 166, 170, 177, 178])
def test_other_server_versions(version: int, connect) -> None:
    with EmbeddedSim(SimOptions(server_version=version), clock=ManualClock(START)) as s:
        ib = connect(11, target=s)
        assert ib.client.serverVersion() == version
        opt = _atm_call(ib)
        [details] = ib.reqContractDetails(opt)
        assert details.contract.conId == opt.conId and details.minSize in (1.0, 0.0)
        trade = ib.placeOrder(opt, MarketOrder("BUY", 1, orderRef=f"v{version}"))
        resting = ib.placeOrder(opt, LimitOrder("SELL", 1, 99.0, orderRef="rest"))
        wait_until(
            ib,
            lambda: (
                trade.orderStatus.status == "Filled" and resting.orderStatus.status == "Submitted"
            ),
            what="fill",
        )
        errors: list[int] = []
        ib.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
        ib.cancelOrder(resting.order)
        wait_until(ib, lambda: 202 in errors, what="error 202")
        ib.disconnect()
        again = connect(11, target=s)
        assert [f.execution.orderRef for f in again.fills()] == [f"v{version}"]
        refs = sorted(t.order.orderRef for t in again.trades())
        assert refs == ["rest", f"v{version}"]


def test_ib_insync_connects(sim: EmbeddedSim) -> None:
    # `make test` installs ib_insync 0.9.86 (without deps); a missing one is a failure, not a skip.
    import ib_insync

    ib = ib_insync.IB()
    try:
        ib.connect("127.0.0.1", sim.port, clientId=21, timeout=10)
        assert ib.client.serverVersion() == 176
        assert ib.managedAccounts() == ["DU123456"]
        spy = ib_insync.Stock("SPY", "SMART", "USD")
        ib.qualifyContracts(spy)
        assert spy.conId == 756733
        bars = ib.reqHistoricalData(spy, "", "1800 S", "5 mins", "TRADES", True, formatDate=2)
        assert len(bars) == 6 and bars[0].date == SESSION_OPEN.astimezone(UTC)
        trade = ib.placeOrder(spy, ib_insync.MarketOrder("BUY", 10, orderRef="insync"))
        deadline = 50
        while trade.orderStatus.status != "Filled" and deadline:
            ib.waitOnUpdate(timeout=0.1)
            deadline -= 1
        assert trade.orderStatus.status == "Filled"
        assert [f.execution.orderRef for f in ib.fills()] == ["insync"]
    finally:
        ib.disconnect()


def test_real_time_bars(sim: EmbeddedSim, connect) -> None:
    ib = connect(1)
    spy = _spy(ib)
    bars = ib.reqRealTimeBars(spy, 5, "TRADES", True)
    ib.reqCurrentTime()  # a round trip: the server has taken the subscription before time moves
    sim.clock.advance(timedelta(seconds=31))
    wait_until(ib, lambda: len(bars) >= 6, what="six 5-second bars")
    assert bars[0].time == START
    assert all(
        b.time - a.time == timedelta(seconds=5) for a, b in zip(bars, bars[1:], strict=False)
    )
    assert all(b.low <= b.open_ <= b.high and b.volume >= 0 for b in bars)
    ib.cancelRealTimeBars(bars)


def test_what_if_order_reports_margin_and_commission(sim: EmbeddedSim, connect) -> None:
    ib = connect(1)
    opt = _atm_call(ib)
    [quote] = ib.reqTickers(opt)
    state = ib.whatIfOrder(opt, LimitOrder("SELL", 2, quote.ask))
    assert float(state.initMarginChange) == pytest.approx(2 * quote.ask * 100)
    assert state.commission == pytest.approx(1.30)
    assert ib.openTrades() == [] and sim.book.live_orders() == []

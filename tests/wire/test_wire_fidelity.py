"""What ib_async and ib_insync see of the wire-fidelity gaps of issue 13: security ids in contract
details, every account summary tag and its updates, and the answers to a historical cancel.
(IB's official client checks the same in test_wire_ibapi.py.)"""

from __future__ import annotations

import pytest
from ib_async import IB, LimitOrder, Option, Stock, TagValue
from wirekit import Errors, isin_valid, settle, wait_until

from sim.runner import EmbeddedSim

CANCELLED_162 = "Historical Market Data Service error message:API historical data query cancelled: "
NOT_FOUND_366 = "No historical data query found for ticker id:"


def _spy(ib: IB) -> Stock:
    spy = Stock("SPY", "SMART", "USD")
    assert ib.qualifyContracts(spy) == [spy]
    return spy


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


# ---------------------------------------------------------------------- security ids


def test_ib_async_sees_the_isin_of_a_stock_and_none_for_an_option(connect) -> None:
    ib = connect(1)
    [spy] = ib.reqContractDetails(Stock("SPY", "SMART", "USD"))
    assert spy.secIdList == [TagValue("ISIN", "US78462F1030")]
    [qqq] = ib.reqContractDetails(Stock("QQQ", "SMART", "USD"))
    assert qqq.secIdList == [TagValue("ISIN", "US46090E1038")]
    [iwm] = ib.reqContractDetails(Stock("IWM", "SMART", "USD"))
    [(tag, isin)] = [(t.tag, t.value) for t in iwm.secIdList]
    assert tag == "ISIN" and isin == "US4642876555"
    [details] = ib.reqContractDetails(_atm_call(ib))
    assert details.secIdList == []


def test_ib_insync_sees_the_isin_too(sim: EmbeddedSim) -> None:
    import ib_insync

    ib = ib_insync.IB()
    try:
        ib.connect("127.0.0.1", sim.port, clientId=22, timeout=10)
        [spy] = ib.reqContractDetails(ib_insync.Stock("SPY", "SMART", "USD"))
        assert [(t.tag, t.value) for t in spy.secIdList] == [("ISIN", "US78462F1030")]
    finally:
        ib.disconnect()


@pytest.mark.parametrize("symbol", ["ABC", "ZZXQ", "BRK", "X"])
def test_unknown_stocks_get_a_stable_valid_isin(make_sim, connect, symbol: str) -> None:
    from sim.config import SimOptions

    s = make_sim(SimOptions(seed=7, symbols=(symbol, "AAPL")))
    ib = connect(1, target=s)
    [details] = ib.reqContractDetails(Stock(symbol, "SMART", "USD"))
    [(tag, isin)] = [(t.tag, t.value) for t in details.secIdList]
    assert tag == "ISIN" and len(isin) == 12 and isin[:2] == "US"
    assert isin_valid(isin)
    [aapl] = ib.reqContractDetails(Stock("AAPL", "SMART", "USD"))
    assert aapl.secIdList == [TagValue("ISIN", "US0378331005")]
    assert isin != "US0378331005"


# ---------------------------------------------------------------------- account summary


def _summary(ib: IB) -> dict[tuple[str, str], str]:
    return {(v.tag, v.currency): v.value for v in ib.wrapper.acctSummary.values()}


def test_ib_async_account_summary_has_every_tag_and_follows_a_fill(connect) -> None:
    ib = connect(1)
    first = {(v.tag, v.currency): v.value for v in ib.accountSummary()}
    # ib_async asks for the real tag names (RegTEquity, PreviousDayEquityWithLoanValue, the
    # day-trade counts) and $LEDGER:ALL.
    for tag in (
        "NetLiquidation",
        "FullAvailableFunds",
        "FullInitMarginReq",
        "FullMaintMarginReq",
        "FullExcessLiquidity",
        "LookAheadAvailableFunds",
        "LookAheadInitMarginReq",
        "LookAheadMaintMarginReq",
        "LookAheadExcessLiquidity",
        "RegTEquity",
        "RegTMargin",
        "SMA",
        "PreviousDayEquityWithLoanValue",
        "AccruedCash",
    ):
        assert first[(tag, "USD")], tag
    for tag in (
        "Cushion",
        "Leverage-S",
        "LookAheadNextChange",
        "HighestSeverity",
        "DayTradesRemaining",
        "DayTradesRemainingT+4",
    ):
        assert (tag, "") in first, tag
    assert ("Leverage", "") not in first
    assert first[("CashBalance", "USD")] == first[("CashBalance", "BASE")] == "100000.00"
    assert first[("Currency", "USD")] == "USD"

    opt = _atm_call(ib)
    [quote] = ib.reqTickers(opt)
    trade = ib.placeOrder(opt, LimitOrder("BUY", 3, quote.ask, orderRef="summary"))
    wait_until(ib, lambda: trade.orderStatus.status == "Filled", what="the fill")
    cash = 100_000.0 - 3 * quote.ask * 100 - 1.95
    wait_until(
        ib,
        lambda: abs(float(_summary(ib)[("TotalCashValue", "USD")]) - cash) < 0.01,
        what="the summary to follow the fill",
    )
    now = _summary(ib)
    assert float(now[("OptionMarketValue", "USD")]) > 0
    assert float(now[("GrossPositionValue", "USD")]) > 0
    assert float(now[("FullAvailableFunds", "USD")]) == pytest.approx(
        float(now[("AvailableFunds", "USD")])
    )


def test_account_summary_subscription_is_updated_only_while_it_lasts(sim: EmbeddedSim, connect):
    ib = connect(1)
    req_id = ib.client.getReqId()
    seen: list[tuple[str, str]] = []
    ib.accountSummaryEvent += lambda v: seen.append((v.tag, v.value))
    ib.client.reqAccountSummary(req_id, "All", "NetLiquidation,TotalCashValue,Leverage")
    wait_until(ib, lambda: len(seen) == 3, what="the first answer")
    assert sorted(tag for tag, _ in seen) == ["Leverage-S", "NetLiquidation", "TotalCashValue"]
    spy = _spy(ib)
    buy = ib.placeOrder(spy, LimitOrder("BUY", 10, 1000.0, orderRef="push"))
    wait_until(ib, lambda: buy.orderStatus.status == "Filled", what="the stock fill")
    wait_until(ib, lambda: len(seen) > 3, what="a pushed change")
    pushed = {tag for tag, _ in seen[3:]}
    assert "TotalCashValue" in pushed and "Leverage-S" in pushed
    ib.client.cancelAccountSummary(req_id)
    count = len(seen)
    sell = ib.placeOrder(spy, LimitOrder("SELL", 10, 1.0, orderRef="after"))
    wait_until(ib, lambda: sell.orderStatus.status == "Filled", what="the closing fill")
    settle(ib, 0.3)
    assert len(seen) == count


# ---------------------------------------------------------------------- historical cancels


def test_ib_async_cancel_of_a_stream_is_acknowledged_with_162(sim: EmbeddedSim, connect) -> None:
    ib = connect(1)
    errors = Errors(ib)
    spy = _spy(ib)
    bars = ib.reqHistoricalData(spy, "", "1800 S", "1 min", "TRADES", True, keepUpToDate=True)
    assert bars
    req_id = bars.reqId
    ib.cancelHistoricalData(bars)
    wait_until(ib, lambda: errors.of(162), what="error 162")
    assert errors.seen == [(req_id, 162, f"{CANCELLED_162}{req_id}")]
    ib.client.cancelHistoricalData(req_id)
    wait_until(ib, lambda: errors.of(366), what="error 366")
    assert errors.of(366) == [(req_id, 366, f"{NOT_FOUND_366}{req_id}")]
    assert ib.isConnected()


def test_ib_insync_cancel_of_a_stream_is_acknowledged_with_162(sim: EmbeddedSim) -> None:
    import ib_insync

    ib = ib_insync.IB()
    codes: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: codes.append((req_id, code, msg))
    try:
        ib.connect("127.0.0.1", sim.port, clientId=23, timeout=10)
        spy = ib_insync.Stock("SPY", "SMART", "USD")
        ib.qualifyContracts(spy)
        bars = ib.reqHistoricalData(spy, "", "1800 S", "1 min", "TRADES", True, keepUpToDate=True)
        ib.cancelHistoricalData(bars)
        for _ in range(50):
            if any(code == 162 for _, code, _ in codes):
                break
            ib.waitOnUpdate(timeout=0.1)
        answers = [e for e in codes if e[1] < 2100]  # ib_insync also reports the farm notices
        assert answers == [(bars.reqId, 162, f"{CANCELLED_162}{bars.reqId}")]
    finally:
        ib.disconnect()

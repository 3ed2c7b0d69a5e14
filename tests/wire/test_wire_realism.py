"""What a client sees of the simulated market over the real ib_async client: an option market
shaped like IB's (many expiries, a wide union of strikes, penny-wide SPY spreads, unlisted pairs
refused), common names at realistic levels, and indices that quote and chart but do not trade."""

from __future__ import annotations

import math

from ib_async import IB, Index, LimitOrder, MarketOrder, Option, Stock
from wirekit import Errors, wait_until

from sim.runner import EmbeddedSim


def _chain(ib: IB, symbol: str):
    stock = Stock(symbol, "SMART", "USD")
    assert ib.qualifyContracts(stock) == [stock]
    rows = ib.reqSecDefOptParams(symbol, "", "STK", stock.conId)
    return stock, next(r for r in rows if r.exchange == "SMART")


def test_spy_chain_has_ibs_shape_and_unlisted_pairs_are_error_200(sim: EmbeddedSim, connect):
    ib = connect(1)
    errors = Errors(ib)
    spy, chain = _chain(ib, "SPY")
    # Dailies, weeklies, monthlies, quarterlies, LEAPS: dozens of expiries; the union of every
    # expiry's strikes is over 400, as IB shows SPY's.
    assert len(chain.expirations) >= 35
    assert len(chain.strikes) > 400
    front, leaps = chain.expirations[0], chain.expirations[-1]
    assert int(leaps[:4]) >= int(front[:4]) + 2
    # The highest union strike exists only for the LEAPS: the front expiry refuses it.
    top = max(chain.strikes)
    assert ib.qualifyContracts(Option("SPY", leaps, top, "C", "SMART"))[0] is not None
    assert ib.qualifyContracts(Option("SPY", front, top, "C", "SMART")) == [None]
    assert 200 in errors.codes()


def test_spy_atm_options_trade_a_cent_or_two_wide(sim: EmbeddedSim, connect):
    ib = connect(1)
    spy, chain = _chain(ib, "SPY")
    [stock_ticker] = ib.reqTickers(spy)
    spot = stock_ticker.last
    checked = 0
    for expiry in chain.expirations[:4]:
        strike = min(chain.strikes, key=lambda k: abs(k - spot))
        opt = Option("SPY", expiry, strike, "C", "SMART")
        if ib.qualifyContracts(opt) != [opt]:
            continue
        [t] = ib.reqTickers(opt)
        assert t.bid > 0 and t.ask > t.bid
        mid = (t.bid + t.ask) / 2
        if mid < 4.0:
            # The old market: 3% of a $2-3 premium, i.e. 6-9 cents.
            assert t.ask - t.bid <= 0.02 + 1e-9, (expiry, t.bid, t.ask)
            checked += 1
    assert checked >= 1


def test_common_names_have_realistic_levels(sim: EmbeddedSim, connect):
    """AAPL resolves without being configured, near its real price, not at a hash-made $22."""
    ib = connect(1)
    aapl = Stock("AAPL", "SMART", "USD")
    assert ib.qualifyContracts(aapl) == [aapl]
    assert aapl.conId == 265598 and aapl.primaryExchange == "NASDAQ"
    [t] = ib.reqTickers(aapl)
    assert 150 < t.last < 450
    assert round(t.ask - t.bid, 2) == 0.01
    bars = ib.reqHistoricalData(aapl, "", "5 D", "1 day", "TRADES", True)
    assert bars and sum(b.volume for b in bars) / len(bars) > 10e6


def test_indices_resolve_quote_and_chart_but_do_not_trade(sim: EmbeddedSim, connect):
    ib = connect(1)
    errors = Errors(ib)
    spx, vix = Index("SPX", "CBOE", "USD"), Index("VIX", "CBOE", "USD")
    assert ib.qualifyContracts(spx, vix) == [spx, vix]
    assert spx.secType == "IND" and spx.conId == 416904 and vix.conId == 13455763
    [details] = ib.reqContractDetails(vix)
    assert details.contract.exchange == "CBOE"
    # An index asked for as a stock is not found.
    assert ib.qualifyContracts(Stock("SPX", "SMART", "USD")) == [None]
    [t] = ib.reqTickers(spx)
    assert 3000 < t.last < 12000
    # A calculated value: no bid or ask.
    assert math.isnan(t.bid) and math.isnan(t.ask)
    bars = ib.reqHistoricalData(vix, "", "2 D", "1 hour", "TRADES", True)
    assert bars and all(5 < b.close < 80 for b in bars)
    # VIX options are not listed here: no option parameters.
    assert ib.reqSecDefOptParams("VIX", "", "IND", vix.conId) == []
    trade = ib.placeOrder(spx, LimitOrder("BUY", 1, 100.0))
    wait_until(ib, lambda: 201 in errors.codes(), what="the index order's refusal")
    assert not trade.isActive()


def test_spx_options_come_in_two_trading_classes(sim: EmbeddedSim, connect):
    """SPX lists its AM-settled monthlies as SPX and everything else as SPXW: reqSecDefOptParams
    has a row per class, a third-Friday option without a class is ambiguous, and SPX options
    quote in nickels and dimes (not in the penny program)."""
    ib = connect(1)
    spx = Index("SPX", "CBOE", "USD")
    assert ib.qualifyContracts(spx) == [spx]
    rows = [r for r in ib.reqSecDefOptParams("SPX", "", "IND", spx.conId) if r.exchange == "SMART"]
    by_class = {r.tradingClass: r for r in rows}
    assert set(by_class) == {"SPX", "SPXW"}
    monthly, weekly = by_class["SPX"], by_class["SPXW"]
    assert len(weekly.expirations) > 2 * len(monthly.expirations) > 0
    # AM-settled: the expiry day's monthly (START is a third Friday) is gone.
    assert "20261120" in weekly.expirations and "20261120" not in monthly.expirations
    shared = sorted(set(monthly.expirations) & set(weekly.expirations))
    assert shared, "third Fridays list under both classes"
    [t] = ib.reqTickers(spx)
    strike = min(weekly.strikes, key=lambda k: abs(k - t.last))
    both = ib.reqContractDetails(Option("SPX", shared[0], strike, "C", "SMART"))
    assert sorted(d.contract.tradingClass for d in both) == ["SPX", "SPXW"]
    assert len({d.contract.conId for d in both}) == 2
    opt = Option("SPX", weekly.expirations[0], strike, "C", "SMART", tradingClass="SPXW")
    assert ib.qualifyContracts(opt) == [opt]
    assert opt.localSymbol.startswith("SPXW ") and opt.multiplier == "100"
    [details] = ib.reqContractDetails(opt)
    assert details.underConId == spx.conId and details.underSecType == "IND"
    [q] = ib.reqTickers(opt)
    assert 0 < q.bid < q.ask
    for price in (q.bid, q.ask):
        tick = 0.10 if price >= 3 else 0.05
        assert abs(price / tick - round(price / tick)) < 1e-6, price
    # Unlike the index itself, its options trade.
    trade = ib.placeOrder(opt, MarketOrder("BUY", 1))
    wait_until(ib, trade.isDone, what="the SPXW fill")
    assert trade.orderStatus.status == "Filled" and trade.fills[0].execution.price == q.ask

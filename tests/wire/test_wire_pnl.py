"""reqPnL over the wire: the simulator answers as IB does (tws-api pnl.html; ib_async decoder msg 94)."""

from __future__ import annotations

import math

import pytest
from ib_async import IB, MarketOrder
from test_wire_ib_async import _atm_call
from wirekit import settle, wait_until

from sim.runner import EmbeddedSim


def test_req_pnl_reports_the_days_realized_and_unrealized(sim: EmbeddedSim, connect) -> None:
    ib: IB = connect(3)
    account = ib.managedAccounts()[0]
    pnl = ib.reqPnL(account)
    wait_until(ib, lambda: not math.isnan(pnl.dailyPnL), what="the first PnL")
    assert (pnl.dailyPnL, pnl.unrealizedPnL, pnl.realizedPnL) == (0.0, 0.0, 0.0)

    opt = _atm_call(ib)
    bought = ib.placeOrder(opt, MarketOrder("BUY", 2, orderRef="pnl-buy"))
    wait_until(ib, lambda: bought.orderStatus.status == "Filled", what="the buy")
    # Bought at the ask, marked at the mid, less commission: down, nothing realized yet.
    wait_until(ib, lambda: pnl.unrealizedPnL < 0, what="the unrealized loss")
    assert pnl.realizedPnL == 0.0
    sold = ib.placeOrder(opt, MarketOrder("SELL", 2, orderRef="pnl-sell"))
    wait_until(ib, lambda: sold.orderStatus.status == "Filled", what="the sale")
    wait_until(ib, lambda: pnl.realizedPnL < 0 and pnl.unrealizedPnL == 0, what="realized")
    # Flat again: the day's P&L is exactly what was realized (spread and commissions).
    assert pnl.dailyPnL == pytest.approx(pnl.realizedPnL, abs=0.01)
    values = {v.tag: v.value for v in ib.accountValues() if v.currency == "USD"}
    assert float(values["NetLiquidation"]) - pnl.dailyPnL == pytest.approx(100_000.0, abs=0.01)
    ib.cancelPnL(account)


def test_req_pnl_for_another_account_gets_no_figures(sim: EmbeddedSim, connect) -> None:
    ib: IB = connect(4)
    other = ib.reqPnL("U0000000")
    mine = ib.reqPnL(ib.managedAccounts()[0])
    wait_until(ib, lambda: not math.isnan(mine.dailyPnL), what="this account's PnL")
    settle(ib, 0.5)
    assert math.isnan(other.dailyPnL)

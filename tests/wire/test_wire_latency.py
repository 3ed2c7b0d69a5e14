"""The latency model as an ib_async client sees it: every answer of a delayed kind waits its drawn
real seconds (here fixed, on the test's fake monotonic clock), a snapshot ends after its own delay,
and an order's cancel never overtakes the order."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from datetime import timedelta

from ib_async import LimitOrder, Stock
from wirekit import Errors, wait_steps, wait_until

from sim.config import SimOptions
from sim.latency import Delay, LatencyOptions
from sim.protocol import In


def _fixed(**seconds: float) -> SimOptions:
    delays = {kind: Delay(s, s) for kind, s in seconds.items()}
    return SimOptions(seed=7, latency=LatencyOptions(delays=delays))


def test_each_request_kind_waits_its_latency(make_sim, connect, mono) -> None:
    sim = make_sim(_fixed(contract_details=5, sec_def=6, historical=7, first_tick=3, snapshot=8))
    ib = connect(1, target=sim)
    spy = Stock("SPY", "SMART", "USD", conId=756733)

    details = asyncio.ensure_future(ib.reqContractDetailsAsync(Stock("SPY", "SMART", "USD")))
    chain = asyncio.ensure_future(ib.reqSecDefOptParamsAsync("SPY", "", "STK", 756733))
    bars = asyncio.ensure_future(
        ib.reqHistoricalDataAsync(spy, "", "1800 S", "1 min", "TRADES", True)
    )
    line = ib.reqMktData(spy)
    snapshot = asyncio.ensure_future(
        ib.reqTickersAsync(Stock("QQQ", "SMART", "USD", conId=320227571))
    )
    wait_steps(ib, sim, 3)
    assert not details.done() and not chain.done() and not bars.done() and not snapshot.done()
    assert math.isnan(line.bid)

    mono.advance(3)  # first ticks: the line and the snapshot's values, not its end
    wait_until(ib, lambda: line.bid > 0, what="the line's first tick")
    wait_steps(ib, sim, 3)
    assert not details.done() and not snapshot.done()
    mono.advance(2)  # 5 s
    wait_until(ib, details.done, what="the contract details")
    assert details.result()[0].contract.conId == 756733 and not chain.done()
    mono.advance(1)  # 6 s
    wait_until(ib, chain.done, what="the option parameters")
    mono.advance(1)  # 7 s
    wait_until(ib, bars.done, what="the bars")
    assert len(bars.result()) > 0
    assert not snapshot.done()
    mono.advance(4)  # 11 s: first tick at 3 s + 8 s
    wait_until(ib, snapshot.done, what="tickSnapshotEnd")
    [ticker] = snapshot.result()
    assert ticker.bid > 0


def test_an_order_is_acknowledged_late_and_its_cancel_does_not_overtake_it(
    make_sim, connect, mono
) -> None:
    sim = make_sim(_fixed(order_ack=2))
    ib = connect(1, target=sim)
    spy = Stock("SPY", "SMART", "USD", conId=756733)
    trade = ib.placeOrder(spy, LimitOrder("BUY", 1, 1.00))
    wait_steps(ib, sim, 3)
    assert trade.orderStatus.status == "PendingSubmit"
    assert sim.book.live_orders() == []
    ib.cancelOrder(trade.order)
    wait_until(ib, lambda: sim.stats["requests"][In.CANCEL_ORDER] == 1, what="the cancel's arrival")
    mono.advance(2)
    wait_until(ib, lambda: trade.orderStatus.status == "Cancelled", what="the cancel")
    statuses = [e.status for e in trade.log]
    assert "Submitted" in statuses and statuses.index("Submitted") < statuses.index("Cancelled")
    assert not [e for e in trade.log if e.errorCode and e.errorCode != 202]


def test_the_default_profile_is_instant(make_sim, connect) -> None:
    sim = make_sim()
    ib = connect(1, target=sim)
    # The fake monotonic clock never moves: any delay at all would hang these.
    [d] = ib.reqContractDetails(Stock("SPY", "SMART", "USD"))
    [t] = ib.reqTickers(d.contract)
    assert t.bid > 0


def test_a_line_waiting_for_its_first_tick_already_holds_its_line(make_sim, connect, mono) -> None:
    opts = _fixed(first_tick=5)
    sim = make_sim(replace(opts, pacing=opts.pacing.updated({"max_market_data_lines": 1})))
    ib = connect(1, target=sim)
    errors = Errors(ib)
    ib.reqMktData(Stock("SPY", "SMART", "USD", conId=756733))
    second = ib.reqMktData(Stock("QQQ", "SMART", "USD", conId=320227571))
    wait_until(ib, lambda: 101 in errors.codes(), what="error 101 for the second line")
    mono.advance(5)
    wait_steps(ib, sim, 3)
    assert math.isnan(second.bid)


def test_a_farm_that_breaks_while_an_answer_is_on_its_way_holds_it(make_sim, connect, mono) -> None:
    sim = make_sim(_fixed(historical=5))
    ib = connect(1, target=sim)
    spy = Stock("SPY", "SMART", "USD", conId=756733)
    bars = asyncio.ensure_future(
        ib.reqHistoricalDataAsync(spy, "", "1800 S", "1 min", "TRADES", True)
    )
    wait_until(ib, lambda: sim.stats["requests"][In.REQ_HISTORICAL_DATA] == 1, what="the request")
    sim.faults.add("farm", code=2105, duration="10m")
    wait_steps(ib, sim, 3)
    mono.advance(5)
    wait_steps(ib, sim, 3)
    assert not bars.done()
    sim.clock.advance(timedelta(minutes=10))
    wait_until(ib, bars.done, what="the bars once the farm is back")
    assert len(bars.result()) > 0

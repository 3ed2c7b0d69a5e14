"""The Gateway's routines as an ib_async client sees them: the nightly server reset (farms or
connectivity flapping), the daily auto-restart (1100, then the drop) and the weekly login (no
connection for hours)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from ib_async import IB, Stock
from wirekit import Errors, FakeMonotonic, settle, wait_dropped, wait_steps, wait_until

CONNECT_FAILED = (ConnectionError, OSError, TimeoutError)


def _spy(ib: IB) -> Stock:
    spy = Stock("SPY", "SMART", "USD")
    assert ib.qualifyContracts(spy) == [spy]
    return spy


def _farm_codes(errors: Errors) -> list[int]:
    return [c for c in errors.codes() if c in (2103, 2104, 2105, 2106, 1100, 1101, 1102)]


@pytest.mark.parametrize("window", [{"duration": "30m"}, {"until": "+31m"}])
def test_nightly_reset_flaps_the_farms_and_holds_data_while_down(make_sim, connect, window) -> None:
    sim = make_sim()
    sim.faults.add("server_reset", at="+1m", flaps=2, **window)
    ib = connect(1, target=sim)
    spy = _spy(ib)
    errors = Errors(ib)
    line = ib.reqMktData(spy)
    wait_until(ib, lambda: line.bid > 0, what="the first tick")
    sim.clock.advance(timedelta(minutes=1))
    wait_until(ib, lambda: _farm_codes(errors) == [2103, 2105], what="the farms breaking")
    # Down: bars wait for the HMDS farm, and the quote line goes quiet while the market moves.
    bars = asyncio.ensure_future(
        ib.reqHistoricalDataAsync(spy, "", "1800 S", "1 min", "TRADES", True)
    )
    bid = line.bid
    sim.clock.advance(timedelta(minutes=5))
    wait_steps(ib, sim, 3)
    settle(ib, 0.2)
    assert line.bid == bid
    sim.clock.advance(timedelta(minutes=5))  # 10 of 30 minutes: the first recovery
    wait_until(ib, lambda: _farm_codes(errors)[2:] == [2104, 2106], what="the farms back")
    wait_until(ib, bars.done, what="the held bars")
    sim.clock.advance(timedelta(minutes=10))
    wait_until(ib, lambda: _farm_codes(errors)[4:] == [2103, 2105], what="the second flap")
    sim.clock.advance(timedelta(minutes=10))
    wait_until(ib, lambda: _farm_codes(errors)[6:] == [2104, 2106], what="the end of the reset")
    assert ib.isConnected()
    assert sim.stats["faults"]["server_reset"] >= 1


def test_nightly_reset_connectivity_style_is_1100_then_1102(make_sim, connect) -> None:
    sim = make_sim()
    sim.faults.add("server_reset", at="+1m", duration="20m", flaps=1, style="connectivity")
    ib = connect(1, target=sim)
    errors = Errors(ib)
    sim.clock.advance(timedelta(minutes=1))
    wait_until(ib, lambda: _farm_codes(errors) == [1100], what="1100")
    sim.clock.advance(timedelta(minutes=20))
    wait_until(ib, lambda: _farm_codes(errors) == [1100, 1102], what="1102")
    assert ib.isConnected()


def test_daily_restart_loses_connectivity_first_then_drops_everyone(
    make_sim, connect, mono: FakeMonotonic
) -> None:
    sim = make_sim()
    sim.faults.add("gateway_restart", at="+1m", lost_seconds=120, down_seconds=90)
    ib = connect(1, target=sim)
    errors = Errors(ib)
    spy = _spy(ib)
    bars = ib.reqHistoricalData(spy, "", "1800 S", "1 min", "TRADES", True, keepUpToDate=True)
    n = len(bars)
    sim.clock.advance(timedelta(minutes=1))
    wait_until(ib, lambda: 1100 in errors.codes(), what="1100")
    # Logged out of IB's servers: still connected, the keepUpToDate stream stops.
    sim.clock.advance(timedelta(minutes=3))
    wait_steps(ib, sim, 3)
    settle(ib, 0.2)
    assert ib.isConnected() and len(bars) == n
    mono.advance(120)
    wait_dropped(ib)
    refused = IB()
    with pytest.raises(CONNECT_FAILED):
        refused.connect("127.0.0.1", sim.port, clientId=1, timeout=1)
    mono.advance(90)
    again = connect(1, target=sim)
    assert again.isConnected()


def test_weekly_login_refuses_connections_for_the_whole_window(
    make_sim, connect, mono: FakeMonotonic
) -> None:
    sim = make_sim()
    sim.faults.add("reauth_required", at="+1m", duration="4h")
    ib = connect(1, target=sim)
    sim.clock.advance(timedelta(minutes=1))
    wait_dropped(ib)
    # Real time passing does not help: only the login (the window's end) does.
    mono.advance(3600)
    sim.clock.advance(timedelta(hours=2))
    for _ in range(2):
        refused = IB()
        with pytest.raises(CONNECT_FAILED):
            refused.connect("127.0.0.1", sim.port, clientId=1, timeout=1)
    sim.clock.advance(timedelta(hours=2))
    wait_steps(refused, sim, 3)  # a step polls the faults: the window ends
    again = connect(1, target=sim, timeout=5)
    assert again.isConnected()
    assert sim.stats["faults"]["reauth_required"] == 1

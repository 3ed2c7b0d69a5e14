"""IB's pacing rules as a plain ib_async client meets them on the embedded simulator."""

from __future__ import annotations

import math
import time

import pytest
from ib_async import IB, Stock, util
from wirekit import Errors, FakeMonotonic, settle, wait_dropped, wait_until

from sim.config import PacingOptions, SimOptions

PACING_162 = "Historical data request pacing violation"


def _bars(ib: IB, contract: Stock, duration: str = "600 S", what: str = "TRADES", **kw) -> list:
    # A plain list: ib_async's BarDataList compares by identity.
    return list(
        ib.reqHistoricalData(
            contract,
            endDateTime="",
            durationStr=duration,
            barSizeSetting=kw.pop("bar_size", "5 secs"),
            whatToShow=what,
            useRTH=True,
            timeout=kw.pop("timeout", 5),
            **kw,
        )
    )


def _opts(**pacing) -> SimOptions:
    return SimOptions(seed=7, pacing=PacingOptions(**pacing))


def test_identical_historical_request_within_15s_gets_162(make_sim, connect, mono) -> None:
    sim = make_sim()
    ib = connect(1, target=sim)
    errors = Errors(ib)
    spy = Stock("SPY", "SMART", "USD")
    assert len(_bars(ib, spy)) > 0
    mono.advance(14.9)
    assert _bars(ib, spy) == []
    [(_, code, text)] = errors.seen
    assert code == 162 and PACING_162 in text
    mono.advance(0.2)  # 15.1 s after the answered one: the refused one did not count
    assert len(_bars(ib, spy)) > 0
    assert sim.violations == {"historical_identical": 1}


def test_sixth_request_for_one_contract_within_2s_gets_162(make_sim, connect, mono) -> None:
    sim = make_sim()
    ib = connect(1, target=sim)
    errors = Errors(ib)
    spy = Stock("SPY", "SMART", "USD")
    answered = []
    for minutes in range(1, 7):
        answered.append(bool(_bars(ib, spy, f"{60 * minutes} S")))
        mono.advance(0.3)
    assert answered == [True] * 5 + [False]
    assert errors.codes() == [162]
    # Another tick type is another series; after 2 s the contract is free again.
    assert _bars(ib, spy, "420 S", what="MIDPOINT")
    mono.advance(2.0)
    assert _bars(ib, spy, "480 S")
    assert sim.violations == {"historical_burst": 1}


def test_sixty_first_request_in_ten_minutes_gets_162(make_sim, connect, mono) -> None:
    sim = make_sim()
    ib = connect(1, target=sim)
    errors = Errors(ib)
    symbols = [Stock(s, "SMART", "USD") for s in ("SPY", "QQQ", "IWM")]
    for i in range(60):
        assert _bars(ib, symbols[i % 3], f"{60 * (i // 3 + 1)} S"), i
        mono.advance(1.0)
    assert _bars(ib, symbols[0], "1800 S") == []
    assert errors.codes() == [162]
    assert sim.violations == {"historical_window": 1}
    # 600 s after the first one, one slot is free again.
    mono.value = 1000.0 + 600.0
    assert _bars(ib, symbols[0], "1800 S")


def test_only_small_bars_are_paced_unless_asked(make_sim, connect) -> None:
    # IB enforces the rules for bars of 30 s or less; 1-minute bars are not refused.
    sim = make_sim()
    ib = connect(1, target=sim)
    errors = Errors(ib)
    spy = Stock("SPY", "SMART", "USD")
    assert _bars(ib, spy, "1 D", bar_size="1 min") and _bars(ib, spy, "1 D", bar_size="1 min")
    assert _bars(ib, spy, "1 D", bar_size="30 secs")
    assert _bars(ib, spy, "1 D", bar_size="30 secs") == []
    assert errors.codes() == [162]
    strict = make_sim(_opts(hist_max_bar_seconds=0))
    ib2 = connect(2, target=strict)
    assert _bars(ib2, spy, "1 D", bar_size="1 hour")
    assert _bars(ib2, spy, "1 D", bar_size="1 hour") == []
    assert strict.violations == {"historical_identical": 1}


@pytest.mark.parametrize(
    "pacing", [dict(historical=False), dict(enabled=False)], ids=["rule-off", "all-off"]
)
def test_historical_pacing_can_be_switched_off(make_sim, connect, pacing) -> None:
    sim = make_sim(_opts(**pacing))
    ib = connect(1, target=sim)
    errors = Errors(ib)
    spy = Stock("SPY", "SMART", "USD")
    for _ in range(8):
        assert _bars(ib, spy)
    assert errors.codes() == [] and sim.violations == {}


def test_message_rate_over_50_per_second_gets_100_and_the_third_drops_the_socket(
    make_sim, connect, mono: FakeMonotonic
) -> None:
    sim = make_sim()
    ib = connect(1, target=sim)
    errors = Errors(ib)
    disconnected = []
    ib.disconnectedEvent += lambda: disconnected.append(True)
    ib.client.MaxRequests = 0  # a client that does not throttle itself

    def burst(n: int) -> None:
        for _ in range(n):
            ib.client.reqCurrentTime()

    mono.advance(5.0)  # a fresh one-second window, clear of the start-up requests
    burst(60)
    wait_until(ib, lambda: 100 in errors.codes(), what="error 100")
    settle(ib, 0.2)
    assert errors.codes() == [100]
    assert "max=50" in errors.of(100)[0][2]
    assert ib.isConnected()
    mono.advance(1.0)
    burst(60)
    wait_until(ib, lambda: errors.codes().count(100) == 2, what="second error 100")
    assert ib.isConnected()
    mono.advance(1.0)
    burst(60)
    wait_dropped(ib)
    assert disconnected == [True]
    # The third 100 and the close go out together: a client busy elsewhere (two test workers
    # on two cores) may see the socket end before it reads that frame. The Gateway side counts
    # all three, and the drop itself is asserted above.
    assert errors.codes().count(100) in (2, 3)
    assert sim.violations == {"message_rate": 3, "message_rate_disconnect": 1}


def test_ib_async_own_throttle_never_trips_the_message_rate(make_sim, connect) -> None:
    # Real monotonic time: ib_async sends at most 45 messages per second by itself.
    sim = make_sim(real_time=True)
    ib = connect(1, target=sim)
    errors = Errors(ib)
    before = sim.stats["requests"][49]
    for _ in range(100):
        ib.client.reqCurrentTime()
    wait_until(
        ib, lambda: sim.stats["requests"][49] - before >= 100, timeout=6, what="all 100 requests"
    )
    assert ib.reqCurrentTime() is not None
    assert errors.codes() == [] and sim.violations == {}


def test_market_data_lines_over_the_limit_get_101(make_sim, connect) -> None:
    sim = make_sim(
        SimOptions(
            symbols=("SPY", "QQQ", "IWM", "DIA"), pacing=PacingOptions(max_market_data_lines=3)
        )
    )
    ib = connect(1, target=sim)
    errors = Errors(ib)
    contracts = [Stock(s, "SMART", "USD") for s in ("SPY", "QQQ", "IWM", "DIA")]
    ib.qualifyContracts(*contracts)
    tickers = [ib.reqMktData(c) for c in contracts]
    wait_until(ib, lambda: 101 in errors.codes(), what="error 101")
    wait_until(ib, lambda: all(not math.isnan(t.bid) for t in tickers[:3]), what="three quotes")
    settle(ib, 0.2)
    assert math.isnan(tickers[3].bid)
    [(req_id, _, text)] = errors.of(101)
    assert "Max number of tickers" in text
    # A snapshot needs no line; a cancelled line is free again.
    [snap] = ib.reqTickers(contracts[3])
    assert not math.isnan(snap.bid)
    ib.cancelMktData(contracts[0])
    again = ib.reqMktData(contracts[3])
    wait_until(ib, lambda: not math.isnan(again.bid), what="the freed line")
    assert sim.violations == {"market_data_lines": 1}


def test_default_line_limit_is_100(make_sim) -> None:
    sim = make_sim()
    assert sim.server.pacing.options.max_market_data_lines == 100
    assert sim.server.pacing.options.max_open_historical == 50


def test_extra_open_historical_requests_wait_for_a_free_slot(make_sim, connect) -> None:
    sim = make_sim(_opts(max_open_historical=2))
    ib = connect(1, target=sim)
    errors = Errors(ib)
    streams = [
        ib.reqHistoricalData(
            Stock(s, "SMART", "USD"), "", "1800 S", "1 min", "TRADES", True, keepUpToDate=True
        )
        for s in ("SPY", "QQQ")
    ]
    assert all(streams)
    task = util.getLoop().create_task(
        ib.reqHistoricalDataAsync(
            Stock("IWM", "SMART", "USD"), "", "1 D", "1 min", "TRADES", True, timeout=5
        )
    )
    settle(ib, 0.4)
    assert not task.done(), "the third request was answered while two were open"
    assert sim.violations == {"open_historical": 1}
    ib.cancelHistoricalData(streams[0])
    wait_until(ib, task.done, what="the queued request")
    assert len(task.result()) > 0
    # The cancelled stream's acknowledgement (error 162, "...query cancelled"), nothing else.
    wait_until(ib, lambda: errors.codes() == [162], what="the cancel acknowledged")
    assert "API historical data query cancelled" in errors.seen[0][2]


def test_extra_open_historical_requests_can_fail_instead(make_sim, connect) -> None:
    sim = make_sim(_opts(max_open_historical=1, open_historical_overflow="fail"))
    ib = connect(1, target=sim)
    errors = Errors(ib)
    stream = ib.reqHistoricalData(
        Stock("SPY", "SMART", "USD"), "", "1800 S", "1 min", "TRADES", True, keepUpToDate=True
    )
    assert stream
    assert _bars(ib, Stock("QQQ", "SMART", "USD")) == []
    [(_, code, text)] = errors.seen
    assert code == 162 and "simultaneous" in text
    ib.cancelHistoricalData(stream)
    assert _bars(ib, Stock("QQQ", "SMART", "USD"))


def test_the_service_gate_sends_orders_first_and_never_trips_the_message_rate(
    make_sim, connect
) -> None:
    """ConnectionActor's gate on a real ib_async client: 150 requests at once, then an order
    message; the Gateway counts no violation, gets all of them, and the order message first."""
    from actors.connection import install_gate
    from actors.pacing import DATA, ORDERS, MessageGate

    sim = make_sim(real_time=True)
    ib = connect(1, target=sim)
    errors = Errors(ib)
    gate = MessageGate(rate=30, burst=10)
    install_gate(ib.client, gate, util.getLoop())
    before = sim.stats["requests"][59]
    for _ in range(150):
        ib.client.reqMarketDataType(1)
    ib.client.reqIds(1)
    assert gate.depth(DATA) == 140 and gate.depth(ORDERS) == 1  # ten went at once
    wait_until(ib, lambda: sim.stats["requests"][8] >= 1, timeout=2, what="the order message")
    assert sim.stats["requests"][59] - before <= 12  # it did not wait behind the data
    wait_until(
        ib, lambda: sim.stats["requests"][59] - before >= 150, timeout=10, what="all 150 requests"
    )
    assert errors.codes() == [] and sim.violations == {}
    assert gate.depth(DATA) == 0


def test_after_error_100_the_service_gate_slows_down_and_the_session_survives(
    make_sim, connect
) -> None:
    """A Gateway that counts more than the gate meant to send (it read our messages late and
    bunched; here, a stricter limit than IB's 50): one error 100, then the gate's second of
    silence and half rate keep it from the third violation that would end the session."""
    from actors.connection import back_off_on_error_100, install_gate
    from actors.pacing import DATA, MessageGate

    sim = make_sim(SimOptions(seed=7, pacing=PacingOptions(max_messages_per_second=20)), True)
    ib = connect(1, target=sim)
    errors = Errors(ib)
    gate = MessageGate(rate=30, burst=10)
    loop = util.getLoop()
    install_gate(ib.client, gate, loop)
    back_off_on_error_100(ib, gate, loop)
    settle(ib, 1.0)  # a fresh window, clear of the start-up requests
    for _ in range(60):
        ib.client.reqMarketDataType(1)
    wait_until(ib, lambda: gate.depth(DATA) == 0, timeout=15, what="the gate emptied")
    settle(ib, 1.0)
    assert errors.codes() == [100]
    assert sim.violations == {"message_rate": 1}
    assert ib.isConnected() and ib.reqCurrentTime() is not None


def test_a_busy_gateway_counts_messages_as_they_arrived_not_as_it_read_them(
    make_sim, connect
) -> None:
    """IB limits what a client sends: 50 messages a second (tws-api rtd_fqa_errors.html). The
    simulator's loop is held up for 2 s (in the 100-symbol soak, computing a cold start's
    backfills) while the service's gate sends 30 a second: the 60-odd messages that waited in
    the socket were sent within the limit and are counted so. Stamped when the loop got round
    to them, as the simulator did, they made an error 100 the client never earned."""
    from actors.connection import install_gate
    from actors.pacing import DATA, MessageGate

    sim = make_sim(real_time=True)
    ib = connect(1, target=sim)
    errors = Errors(ib)
    gate = MessageGate(rate=30, burst=10)
    install_gate(ib.client, gate, util.getLoop())
    settle(ib, 1.0)  # a fresh window, clear of the start-up requests
    before = sim.stats["requests"][59]
    sim._loop.call_soon_threadsafe(time.sleep, 2.0)  # busy, without a message read meanwhile
    for _ in range(120):
        ib.client.reqMarketDataType(1)
    wait_until(
        ib,
        lambda: gate.depth(DATA) == 0 and sim.stats["requests"][59] - before >= 120,
        timeout=15,
        what="all 120 requests handled",
    )
    settle(ib, 0.5)
    assert errors.codes() == [] and sim.violations == {}

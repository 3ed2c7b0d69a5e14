"""End to end against a Gateway that answers as slowly as a real one: the service, with the
simulator's `realistic` latency profile (snapshots end seconds later, bars and contract details
take their time), still goes from idea to a protected fill."""

from __future__ import annotations

from datetime import timedelta

from actors.metrics import Metrics, new_registry
from actors.system import System
from storage import open_db

START = "2026-11-20T15:00:00+00:00"


def test_a_simulated_hour_at_realistic_latency_still_trades_and_protects(make_settings):
    # x120: a snapshot's 4 real seconds are 8 simulated minutes, so this is harder than a Gateway.
    settings = make_settings(
        orders={"entry_timeout_s": 900},
        sim={"seed": 11, "time_scale": 120, "start": START, "latency": "realistic"},
    )
    system = System(settings, metrics=Metrics(new_registry()))
    system.start()
    try:
        assert system.sim.server.options.latency.profile == "realistic"
        system.run_for(timedelta(minutes=60), 120.0)
        assert not system.failed.is_set(), system.failure
    finally:
        system.stop()
    db = open_db(settings.storage.path)
    assert db["signals"].count > 0
    filled = list(db.query("select * from orders where role = 'entry' and state = 'filled'"))
    assert filled, "no entry filled against realistic latency"
    for e in filled:
        legs = {r["role"] for r in db["orders"].rows_where("bracket_ref = ?", [e["bracket_ref"]])}
        assert legs == {"entry", "take_profit", "stop_loss"}


def test_an_entry_whose_quotes_are_not_on_warm_lines_waits_one_round_trip(tmp_path):
    """Lines are too few to warm the symbol's strikes (9: an entry's 5 and 4 spare), so
    every entry asks its quotes after its bar closes. The simulator counts what the service
    asked between the bar's end and the entry's placeOrder: one round trip (a brief streaming
    line per strike, which also proves the quote fresh), never contract details first, never a
    snapshot (IB ends one only when all its fields are in, up to 11 s later), and every line
    closed before the order. The real ib_async client over a socket, the simulator's own log
    of requests (bench/latency.py's Recorder)."""
    import time

    from bench.latency import Recorder, round_trips, service_settings
    from sim.protocol import In
    from sim.runner import EmbeddedSim

    # x20: the recheck's 1 real second is 20 simulated ones, well within the minute.
    clock, options = _spy_at_x20()
    recorder = Recorder(clock)

    def entries() -> list:
        # Past the first live bar, whenever start-up let it come: the bar that first asks for
        # the day's chain (and an entry at it waits for that too).
        chain = [t for t, k in recorder.requests[(1, "SPY")] if k == In.REQ_SEC_DEF_OPT_PARAMS]
        if not chain:
            return []
        since = chain[0].replace(second=0, microsecond=0) + timedelta(minutes=1)
        return recorder.entry_requests(1, since, clock.now())

    with EmbeddedSim(options, clock=clock) as sim:
        recorder.install(sim.server)
        settings = service_settings(tmp_path, sim.port, ["SPY"], "historical", lines=9)
        system = System(settings, clock=clock, serve_metrics=False)
        system.start()
        try:
            deadline = time.monotonic() + 90
            while len(entries()) < 3:
                assert time.monotonic() < deadline, (
                    f"fewer than 3 entries in 90 s: {recorder.entries}"
                )
                assert not system.failed.is_set(), system.failure
                time.sleep(0.05)
        finally:
            system.stop()
        assert system.sim is None  # gateway mode: the simulator above is the only broker
    lines, cancelled = recorder.lines[(1, "SPY")], recorder.cancelled
    for symbol, at, asked in entries():
        end = at.replace(second=0, microsecond=0)
        for i, (t, k) in enumerate(recorder.requests[(1, symbol)]):
            if k != In.REQ_MKT_DATA or not end <= t <= at:
                continue
            assert i in lines, f"{symbol} {at}: a snapshot at {t}"
            assert cancelled.get((1, lines[i]), at) < at, f"{symbol} {at}: line {i} left open"
        assert asked, f"{symbol} {at}: no request at all, so its quotes were on lines"
        assert In.REQ_CONTRACT_DATA not in asked, (symbol, at, [In(k).name for k in asked])
        assert round_trips(asked) == 1, (symbol, at, [In(k).name for k in asked])


def _spy_at_x20(**options):
    """The simulator's clock and options for SPY alone at x20 from Friday 10:00 New York."""
    from datetime import UTC, datetime

    from sim.clock import ScaledClock
    from sim.config import SimOptions

    scale, start = 20.0, datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    clock = ScaledClock(start, scale=scale)
    return clock, SimOptions(
        seed=11,
        time_scale=scale,
        start=start,
        skip_closed=False,
        symbols=("SPY",),
        tick_interval=0.01,
        **options,
    )


def test_a_request_timeout_is_rechecked_and_the_quiet_service_trades_again(tmp_path):
    """The day's chain takes longer than its timeout: the connection degrades (no new entry).
    Nothing else the service asks is timed while it streams and refuses entries, so only its
    own recheck (reqCurrentTime over the real socket, answered at once) can bring it back; it
    must, within seconds. Before, it stayed degraded for good (bench.latency: 0 entries at 10
    symbols)."""
    import time

    from actors.connection.actor import RECHECK_S
    from bench.latency import service_settings
    from sim.latency import Delay, LatencyOptions
    from sim.runner import EmbeddedSim

    clock, options = _spy_at_x20(latency=LatencyOptions(delays={"sec_def": Delay(3.0, 3.0)}))
    metrics = Metrics(new_registry())
    moves = metrics.connection_transitions
    with EmbeddedSim(options, clock=clock) as sim:
        settings = service_settings(tmp_path, sim.port, ["SPY"], "historical")
        settings.broker.timeouts_s["sec_def"] = 0.5
        system = System(settings, metrics=metrics, clock=clock, serve_metrics=False)
        system.start()
        try:
            deadline = time.monotonic() + 60
            while moves.labels("request_failed", "degraded")._value.get() < 1:
                assert time.monotonic() < deadline, "the chain never timed out"
                assert not system.failed.is_set(), system.failure
                time.sleep(0.05)
            degraded = time.monotonic()
            while moves.labels("request_ok", "connected")._value.get() < 1:
                assert time.monotonic() < degraded + RECHECK_S + 10, "still degraded"
                assert not system.failed.is_set(), system.failure
                time.sleep(0.05)
        finally:
            system.stop()

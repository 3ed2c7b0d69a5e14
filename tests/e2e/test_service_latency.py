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

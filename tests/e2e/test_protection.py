"""End to end, live mode on the simulator: a stop removed at the broker is replaced by the service."""

from __future__ import annotations

import time
from datetime import timedelta

from actors.metrics import Metrics, new_registry
from actors.system import System
from storage import open_db

START = "2026-11-20T15:00:00+00:00"  # a Friday session, 30 minutes after the open


def working(book, order_type: str, con_id: int) -> list:
    return [
        o
        for o in book.live_orders()
        if o.action == "SELL" and o.order_type == order_type and o.contract.con_id == con_id
    ]


def held_with_stop(book):
    """A long position at the broker with a working (not waiting) stop, or None."""
    for con_id, pos in book.positions.items():
        if pos.quantity > 0:
            stops = [o for o in working(book, "STP", con_id) if o.status == "Submitted"]
            if stops:
                return con_id, pos.quantity, stops[0]
    return None


def sample(registry, name: str, **labels: str) -> float:
    total = 0.0
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_a_stop_cancelled_at_the_broker_is_replaced_and_counted(make_settings):
    settings = make_settings(
        dry_run=False,
        sim={"seed": 11, "time_scale": 240, "start": START},
        orders={"entry_timeout_s": 900, "take_profit_pct": 0.8, "stop_loss_pct": 0.6},
        risk={"flatten_scalps_before_close_minutes": 0},
    )
    metrics = Metrics(new_registry())
    system = System(settings, metrics=metrics)
    system.start()
    try:
        found = None
        for _ in range(6):  # up to three simulated hours for an entry to fill
            system.run_for(timedelta(minutes=30), 60.0)
            assert not system.failed.is_set(), system.failure
            found = system.sim.call(lambda: held_with_stop(system.sim.book))
            if found:
                break
        assert found, "no position with a working stop at the broker"
        con_id, qty, stop = found
        assert stop.tif == "GTC"
        # Someone (another client, a person in TWS, IB) cancels the stop.
        system.sim.call(
            lambda: system.sim.book.cancel_by_system(stop, system.sim.clock.now(), "test")
        )
        deadline = time.monotonic() + 30
        replaced = []
        while time.monotonic() < deadline and not replaced:
            time.sleep(0.2)
            replaced = system.sim.call(
                lambda: [
                    o
                    for o in working(system.sim.book, "STP", con_id)
                    if o.order_ref != stop.order_ref
                ]
            )
        assert replaced, "the service did not replace the stop"
        assert sum(o.total_quantity for o in replaced) >= qty
        assert all(o.tif == "GTC" and "-P" in o.order_ref for o in replaced)
        assert sample(metrics.registry, "optionsbot_protection_placed_total") >= 1
        system.run_for(timedelta(minutes=2), 10.0)
        assert sample(metrics.registry, "optionsbot_unprotected_positions") == 0
    finally:
        system.stop()
    db = open_db(settings.storage.path)
    rows = list(db.query("select * from orders where order_ref like '%-P%' and role = 'stop_loss'"))
    assert rows, "the protection was written to SQLite"
    submits = list(
        db.query(
            "select detail from order_events where order_ref = ? and event = 'submit'",
            [rows[0]["order_ref"]],
        )
    )
    assert len(submits) == 1 and "protection: exit_gone" in submits[0]["detail"]

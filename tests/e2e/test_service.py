"""End to end: the whole service on the embedded simulator, over real sockets, on a real SQLite file."""

from __future__ import annotations

import urllib.request
from datetime import datetime, timedelta

import pytest

from actors.metrics import Metrics, new_registry
from actors.system import System
from storage import open_db

# A Friday session, 30 minutes after the open; at x240 a simulated hour takes 15 s.
START = "2026-11-20T15:00:00+00:00"


@pytest.fixture
def service_settings(make_settings):
    def make(**extra):
        extra.setdefault("sim", {"seed": 11, "time_scale": 240, "start": START})
        return make_settings(orders={"entry_timeout_s": 900}, **extra)

    return make


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run(settings, minutes: float, real_timeout: float = 90.0) -> dict:
    system = System(settings, metrics=Metrics(new_registry()))
    system.start()
    try:
        system.run_for(timedelta(minutes=minutes), real_timeout)
        assert not system.failed.is_set(), system.failure
        text = scrape(system.metrics_port)
    finally:
        system.stop()
    return {"metrics": text}


def test_a_simulated_hour_goes_from_idea_to_fill(service_settings):
    settings = service_settings()
    out = run(settings, minutes=60)
    db = open_db(settings.storage.path)
    signals = db["signals"].count
    approved = list(
        db.query("select * from decisions where outcome = 'approved' and stage = 'sizing'")
    )
    entries = list(db.query("select * from orders where role = 'entry'"))
    filled = [e for e in entries if e["state"] == "filled"]
    fills = list(
        db.query("select f.* from fills f join orders o using (order_ref) where o.role = 'entry'")
    )
    print(
        f"\nsignals {signals}, sized {len(approved)}, entries {len(entries)}, filled {len(filled)}, "
        f"fills {db['fills'].count}"
    )
    assert signals > 0
    assert approved, "no idea made it through risk sizing"
    assert filled and fills, "no entry filled"
    # Every bracket is complete in storage: parent and both children, linked.
    for e in filled:
        legs = {
            r["role"]: r for r in db["orders"].rows_where("bracket_ref = ?", [e["bracket_ref"]])
        }
        assert set(legs) == {"entry", "take_profit", "stop_loss"}
        assert legs["take_profit"]["oca_group"] == legs["stop_loss"]["oca_group"]
    text = out["metrics"]
    assert sample(text, "optionsbot_cycles_total") > 0
    assert sample(text, "optionsbot_fills_total") >= len(fills)
    assert sample(text, "optionsbot_bars_total") > 0
    assert sample(text, "optionsbot_connection_state", optionsbot_connection_state="connected") == 1
    assert sample(text, "optionsbot_orders", state="filled") >= len(filled)


def test_restart_resumes_without_sending_an_order_twice(service_settings):
    settings = service_settings()
    run(settings, minutes=40)
    db = open_db(settings.storage.path)
    before = {r["order_ref"]: r["state"] for r in db["orders"].rows}
    clock_at_stop = db["kv"].get("clock")["value"]
    db.close()
    assert before, "the first run placed no order"

    # No configured start: the simulated clock must resume from the database.
    resumed = service_settings(sim={"seed": 11, "time_scale": 240, "start": None})
    run(resumed, minutes=20)
    db = open_db(settings.storage.path)
    submits = list(
        db.query(
            "select order_ref, count(*) n from order_events where event = 'submit' group by order_ref having n > 1"
        )
    )
    assert submits == [], f"orders submitted twice: {submits}"
    # The simulated clock resumed where the first run stopped, not at the session open again.
    clock_at_end = datetime.fromisoformat(db["kv"].get("clock")["value"])
    assert clock_at_end >= datetime.fromisoformat(clock_at_stop) + timedelta(minutes=15)
    # Orders open at the stop were restored, not abandoned: none of them went to 'cancelled'
    # with the restart's "never sent" reason.
    abandoned = list(db.query("select * from order_events where event = 'abandon'"))
    assert abandoned == []
    state = db["machine_states"].get("connection")
    assert state["state"] in ("disconnected", "connected")


def test_live_mode_sends_brackets_through_the_wire_and_records_the_broker_fills(service_settings):
    """dry_run false against the simulator: real placeOrder, real executions, matched by orderRef."""
    settings = service_settings(dry_run=False)
    system = System(settings, metrics=Metrics(new_registry()))
    system.start()
    try:
        system.run_for(timedelta(minutes=60), 90.0)
        assert not system.failed.is_set(), system.failure
        sim_orders = system.sim.call(lambda: list(system.sim.book.orders.values()))
    finally:
        system.stop()
    db = open_db(settings.storage.path)
    ours = {r["order_ref"]: r for r in db["orders"].rows}
    fills = list(db["fills"].rows)
    print(
        f"\nlive mode: {len(ours)} orders, {len(fills)} fills, {len(sim_orders)} at the simulator"
    )
    assert fills, "no broker execution was recorded"
    assert not [f for f in fills if f["exec_id"].startswith("paper.")]
    refs_at_sim = [o.order_ref for o in sim_orders]
    assert len(refs_at_sim) == len(set(refs_at_sim)), "an order reached the broker twice"
    assert set(refs_at_sim) <= set(ours)
    filled_entries = [r for r in ours.values() if r["role"] == "entry" and r["state"] == "filled"]
    assert filled_entries
    for e in filled_entries:
        assert e["perm_id"], "the broker's permId is stored"
    # Commission reports arrive after executions and are recorded on the fill.
    assert all(f["commission"] > 0 for f in fills), [f["commission"] for f in fills]


def test_no_entitlement_falls_back_to_delayed_quotes_when_allowed(service_settings):
    """The predecessor's week of NaN quotes (sim/scenarios/entitlement_nan.yaml): with
    broker.delayed_data_fallback the first 10089 switches to delayed data, and trading goes on."""
    from pathlib import Path

    scenario = Path(__file__).parents[2] / "sim" / "scenarios" / "entitlement_nan.yaml"
    settings = service_settings(
        sim={"seed": 11, "time_scale": 240, "start": START, "scenario": str(scenario)},
        broker={"delayed_data_fallback": True},
    )
    out = run(settings, minutes=60)
    text = out["metrics"]
    assert sample(text, "optionsbot_market_data_type") == 3
    assert sample(text, "optionsbot_ib_errors_total", **{"class": "entitlement"}) >= 1
    db = open_db(settings.storage.path)
    entries = list(db.query("select * from orders where role = 'entry'"))
    assert entries, "no entry: the delayed quotes never came"

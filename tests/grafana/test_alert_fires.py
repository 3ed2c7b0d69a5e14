"""A simulator fault drives an alert to firing in a real Prometheus: every order is rejected (201)."""

from __future__ import annotations

import shutil
import time
from datetime import timedelta

import pytest
import yaml
from test_prometheus_live import api, start_prometheus

from actors.metrics import Metrics, new_registry
from actors.system import System
from configs.settings import load_settings


def test_order_rejected_fires_when_the_gateway_rejects_orders(tmp_path):
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is missing: `make test` installs Debian's prometheus package"
    (tmp_path / "reject.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "rejects",
                "faults": [
                    {"kind": "order_reject", "name": "margin", "reason": "insufficient margin"}
                ],
            }
        )
    )
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump(
            {
                "dry_run": False,
                "storage": {"path": str(tmp_path / "bot.sqlite")},
                "log": {"json_file": None},
                "metrics": {"port": 0},
                "risk": {"kill_switch_file": str(tmp_path / "KILL")},
                "sim": {
                    "seed": 11,
                    "time_scale": 240,
                    "start": "2026-11-20T15:00:00+00:00",
                    "scenario": str(tmp_path / "reject.yaml"),
                },
            }
        )
    )
    system = System(load_settings(tmp_path / "c.yaml", environ={}), metrics=Metrics(new_registry()))
    system.start()
    port, prom = start_prometheus(binary, tmp_path, system.metrics_port)
    try:
        deadline = time.monotonic() + 90
        firing = []
        while time.monotonic() < deadline and not firing:
            system.run_for(timedelta(minutes=2), 1.0)
            try:
                alerts = api(port, "alerts")["data"]["alerts"]
            except OSError:
                continue
            firing = [
                a
                for a in alerts
                if a["labels"]["alertname"] == "OrderRejected" and a["state"] == "firing"
            ]
        if not firing:
            pytest.fail("OrderRejected never fired")
        assert (
            system.metrics.registry.get_sample_value(
                "optionsbot_order_transitions_total", {"state": "rejected"}
            )
            >= 1
        )
    finally:
        prom.terminate()
        prom.wait(10)
        system.stop()

"""A real Prometheus scrapes the service running on the simulator; every panel query returns data."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest

from actors.metrics import Metrics, new_registry
from actors.system import System
from grafana.queries import panel_queries

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "grafana" / "prometheus" / "alerts.yml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, path: str, **params: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def start_prometheus(binary: str, tmp: Path, target_port: int) -> tuple[int, subprocess.Popen]:
    """Debian's Prometheus on a free port, scraping the service every second, with our rules."""
    port = free_port()
    shutil.copy(ALERTS, tmp / "alerts.yml")
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs:\n"
        f"  - job_name: optionsbot\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return port, proc


@pytest.fixture(scope="module")
def prometheus_and_service(tmp_path_factory):
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is missing: `make test` installs Debian's prometheus package"
    tmp = tmp_path_factory.mktemp("prom")
    (tmp / "c.yaml").write_text(
        f"storage: {{path: {tmp / 'bot.sqlite'}}}\nlog: {{json_file: null}}\nmetrics: {{port: 0}}\n"
        f"risk: {{kill_switch_file: {tmp / 'KILL'}}}\n"
        "sim: {seed: 11, time_scale: 240, start: '2026-11-20T15:00:00+00:00'}\n"
        "orders: {entry_timeout_s: 900}\n"
    )
    from configs.settings import load_settings

    system = System(load_settings(tmp / "c.yaml", environ={}), metrics=Metrics(new_registry()))
    system.start()
    prom_port, prom = start_prometheus(binary, tmp, system.metrics_port)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                targets = api(prom_port, "targets")["data"]["activeTargets"]
                if targets and targets[0]["health"] == "up":
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("Prometheus never scraped the service")
        # Let a simulated 90 minutes pass (about 23 s): bars, signals, orders and fills.
        system.run_for(timedelta(minutes=90), 60)
        yield prom_port, system
    finally:
        prom.terminate()
        prom.wait(10)
        system.stop()


@pytest.mark.parametrize(("dashboard", "title", "expr"), panel_queries(), ids=lambda v: str(v)[:60])
def test_every_panel_query_returns_data(prometheus_and_service, dashboard, title, expr):
    port, _ = prometheus_and_service
    answer = api(port, "query", query=expr)
    assert answer["status"] == "success", answer
    result = answer["data"]["result"]
    assert result, f"{dashboard} / {title}: no data for {expr}"


def test_the_rules_load_and_evaluate(prometheus_and_service):
    port, _ = prometheus_and_service
    groups = api(port, "rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 8
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_promtool_accepts_the_live_exporter_output(prometheus_and_service):
    _, system = prometheus_and_service
    with urllib.request.urlopen(f"http://127.0.0.1:{system.metrics_port}/metrics", timeout=10) as r:
        text = r.read()
    assert b"optionsbot_fills_total" in text and b"optionsbot_connection_state" in text
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr
    )

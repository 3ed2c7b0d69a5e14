"""Dashboards, alert rules and Alertmanager config, checked without a network or a Grafana.

A dashboard query that names a missing metric or label returns success with no data, so
every metric and label a query names is checked against the registry actors.metrics
builds; promtool and amtool check the rest. That the queries return data from a real
Prometheus is the integration test's job (it runs grafana.queries.panel_queries()).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Enum, Gauge, Histogram, Info, Summary, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from actors.metrics import Metrics, new_registry

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PROMETHEUS_YML = GRAFANA / "prometheus" / "prometheus.yml"
ALERTS = GRAFANA / "prometheus" / "alerts.yml"
ALERTS_TEST = GRAFANA / "prometheus" / "alerts_test.yml"
ALERTMANAGER = GRAFANA / "alertmanager" / "alertmanager.yml"
TEMPLATES = GRAFANA / "alertmanager" / "templates"

EXPECTED_ALERTS = {
    "OptionsbotDown",
    "BreakerOpenTooLong",
    "DataStale",
    "DailyLossGuardHit",
    "PacingViolations",
    "OrderRejected",
    "ReconciliationMismatch",
    "KillSwitchEngaged",
    "UnvouchedBrokerState",
    "UnprotectedPosition",
}
SEVERITIES = {"critical", "warning", "info"}
# Added by Prometheus to every series, and the series it makes of each scrape.
TARGET_LABELS = {"job", "instance"}
SYNTHETIC = {"up": TARGET_LABELS}


def load(name: str, path: Path) -> ModuleType:
    """grafana/ is not an installed package: load its modules by path (any pytest invocation)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


queries = load("grafana_queries", GRAFANA / "queries.py")
render = load("grafana_render", GRAFANA / "alertmanager" / "render.py")


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found: `make test` installs it (Debian package {package}); "
            f"or `sudo apt-get install {package}`"
        )
    return path


def run(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


# -- what the service exports ------------------------------------------------------------


def metric_objects(metrics: Metrics) -> list[MetricWrapperBase]:
    return [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]


@cache
def registered() -> dict[str, frozenset[str]]:
    """Every series name the service can export -> the label names it can carry."""
    metrics = Metrics(new_registry(process=True))
    labelnames = {m._name: set(m._labelnames) for m in metric_objects(metrics)}
    suffixes = {
        "counter": ["_total", "_created"],
        "gauge": [""],
        "histogram": ["_bucket", "_sum", "_count", "_created"],
        "summary": ["", "_sum", "_count", "_created"],
        "info": ["_info"],
        "stateset": [""],
        "unknown": [""],
    }
    names: dict[str, frozenset[str]] = {}
    for family in metrics.registry.collect():
        labels = labelnames.get(family.name, set()) | {k for s in family.samples for k in s.labels}
        if family.type == "stateset":
            labels.add(family.name)
        for suffix in suffixes[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            names[family.name + suffix] = frozenset(labels | extra | TARGET_LABELS)
        for sample in family.samples:
            assert sample.name in names, f"{sample.name}: suffix rule missing for {family.type}"
    names.update({k: frozenset(v) for k, v in SYNTHETIC.items()})
    return names


# -- a small PromQL reader: enough to name metrics, labels and functions -------------------

FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "day_of_week",
    "delta", "deriv", "floor", "group", "histogram_quantile", "hour", "idelta", "increase",
    "irate", "label_join", "label_replace", "last_over_time", "max", "max_over_time", "min",
    "min_over_time", "predict_linear", "quantile", "quantile_over_time", "rate", "resets",
    "round", "scalar", "sgn", "sort", "sort_desc", "stddev", "stddev_over_time", "stdvar",
    "sum", "sum_over_time", "time", "timestamp", "topk", "vector",
}  # fmt: skip
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
RANGE = re.compile(r"\[[^\]]*\]")
IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def parse(expr: str) -> tuple[set[str], set[str], list[tuple[str, set[str]]], set[str]]:
    """(metric names, functions, [(metric, matcher labels)], grouping labels) of a query."""
    text = STRING.sub('""', expr)
    selectors = [
        (m.group(1) or "", set(MATCHER.findall(m.group(2)))) for m in SELECTOR.finditer(text)
    ]
    text = SELECTOR.sub(lambda m: m.group(1) or "", text)
    grouping = {
        label.strip() for m in GROUPING.finditer(text) for label in m.group(2).split(",")
    } - {""}
    text = RANGE.sub("", GROUPING.sub("", text))
    metrics, functions = set(), set()
    for name, call in IDENT.findall(text):
        if name in KEYWORDS:
            continue
        (functions if call else metrics).add(name)
    return metrics, functions, selectors, grouping


def test_the_promql_reader_reads_what_the_dashboards_write():
    metrics, functions, selectors, grouping = parse(
        'sum by (le, strategy) (rate(a_bucket{x=~"b|c", y="d{e}"}[1m] offset 5m)) * 60'
        " or on() vector(0) - ignoring(le) max_over_time(b_total[5m:1m]) > bool 1e3"
        " and on (job) (up offset 10m)"
    )
    assert metrics == {"a_bucket", "b_total", "up"}
    assert functions == {"sum", "rate", "vector", "max_over_time"}
    assert selectors == [("a_bucket", {"x", "y"})]
    assert grouping == {"le", "strategy", "job"}


def check_names(where: str, expr: str) -> None:
    known = registered()
    metrics, functions, selectors, grouping = parse(expr)
    assert metrics, f"{where}: names no metric: {expr}"
    assert not functions - FUNCTIONS, f"{where}: unknown function {functions - FUNCTIONS}"
    missing = sorted(metrics - known.keys())
    assert not missing, f"{where}: {missing} not exported by actors/metrics.py: {expr}"
    for metric, labels in selectors:
        assert metric, f"{where}: a selector without a metric name: {expr}"
        assert labels <= known[metric], f"{where}: {metric} has no label {labels - known[metric]}"
    available = set().union(*(known[m] for m in metrics))
    assert grouping <= available, f"{where}: no metric here has {grouping - available}: {expr}"


# -- dashboards -----------------------------------------------------------------------------


def dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def all_panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    return list(queries.iter_panels(d["panels"]))


def test_three_dashboards():
    assert {p.name for p in DASHBOARDS} == {"overview.json", "connection.json", "symbols.json"}
    uids = [dashboard(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_provisionable(path: Path):
    d = dashboard(path)
    assert d["id"] is None, "an exported id collides on import; keep it null"
    assert d["uid"] and d["title"] and 36 <= d["schemaVersion"] <= 41
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["DS_PROMETHEUS"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"]["value"] == provisioned_datasource()["uid"]
    for panel in all_panels(d):
        assert panel["type"] == "row" or panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_have_unique_ids_titles_and_fit_the_grid(path: Path):
    panels = all_panels(dashboard(path))
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), f"duplicate panel ids in {path.name}"
    titles = [p["title"] for p in panels if p["type"] != "row"]
    assert len(set(titles)) == len(titles), "panel_queries() names panels by title"
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert any(t.get("expr") for t in p["targets"]), f"{p['title']} has no query"


def test_symbol_board_filters_every_query_by_the_symbol_variable():
    d = dashboard(GRAFANA / "dashboards" / "symbols.json")
    var = {v["name"]: v for v in d["templating"]["list"]}["symbol"]
    assert var["definition"] == "label_values(optionsbot_bars_total, symbol)"
    assert var["includeAll"] and var["allValue"] == ".*"
    for panel in all_panels(d):
        for target in panel.get("targets", []):
            assert 'symbol=~"$symbol"' in target["expr"], panel["title"]


def test_panel_queries_lists_every_target_with_variables_filled():
    found = queries.panel_queries()
    targets = [
        t
        for path in DASHBOARDS
        for p in all_panels(dashboard(path))
        for t in p.get("targets", [])
        if t.get("expr")
    ]
    assert len(found) == len(targets)
    assert {f for f, _, _ in found} == {p.name for p in DASHBOARDS}
    for name, title, expr in found:
        assert "$" not in expr, f"{name} / {title}: unfilled variable in {expr}"
    raw = " ".join(t["expr"] for t in targets)
    assert set(re.findall(r"\$\{?\w+", raw)) <= {"$symbol", "$__rate_interval"}


QUERIES = queries.panel_queries()


@pytest.mark.parametrize(
    "name,title,expr", QUERIES, ids=[f"{n}:{t}:{i}" for i, (n, t, _) in enumerate(QUERIES)]
)
def test_query_names_only_exported_metrics_and_labels(name: str, title: str, expr: str):
    check_names(f"{name} / {title}", expr)


def test_zero_fallbacks_do_not_add_a_series_beside_real_ones():
    # `sum by (x) (...) or vector(0)` adds an unlabelled 0 next to the real series;
    # `or on() vector(0)` adds it only when there is none.
    for name, title, expr in QUERIES:
        if "vector(0)" in expr and re.search(r"\b(by|without)\s*\(", expr):
            assert "or on() vector(0)" in expr, f"{name} / {title}"


# -- Prometheus ---------------------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_config():
    out = run(tool("promtool", "prometheus"), "check", "config", str(PROMETHEUS_YML))
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_check_rules():
    out = run(tool("promtool", "prometheus"), "check", "rules", str(ALERTS))
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules():
    out = run(tool("promtool", "prometheus"), "test", "rules", str(ALERTS_TEST))
    assert out.returncode == 0, out.stdout + out.stderr


def test_scrape_config_matches_the_service_and_the_queries():
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    (job,) = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9108"]
    assert job["scrape_interval"] == "5s"
    assert "alerts.yml" in config["rule_files"]
    exprs = [r["expr"] for r in rules()] + [e for _, _, e in QUERIES]
    for expr in exprs:
        for selected in re.findall(r'\bup\{[^}]*job="([^"]+)"', expr):
            assert selected == job["job_name"], expr


def test_every_alert_exists_with_severity_and_instructions():
    found = {r["alert"]: r for r in rules()}
    assert set(found) == EXPECTED_ALERTS
    for name, rule in found.items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 80
        check_names(f"alert {name}", rule["expr"])


def test_every_alert_is_unit_tested_firing_and_not_firing():
    cases = [
        c for t in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for c in t["alert_rule_test"]
    ]
    for name in EXPECTED_ALERTS:
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no firing case"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no not-firing case"


def populated_exposition() -> str:
    """A fresh registry with a sample in every metric, as the exporter would serve it."""
    metrics = Metrics(new_registry(process=True))
    example = {"symbol": "SPY", "strategy": "scalp", "direction": "call", "stage": "risk_gate"}
    example |= {"outcome": "skipped", "reason": "busy", "state": "filled", "class": "pacing"}
    example |= {"kind": "historical", "trigger": "connect", "dest": "connecting"}
    example |= {"bar_size": "1 min", "side": "buy", "actor": "data"}
    for metric in metric_objects(metrics):
        m = (
            metric.labels(*(example.get(n, "x") for n in metric._labelnames))
            if metric._labelnames
            else metric
        )
        if isinstance(metric, Counter):
            m.inc()
        elif isinstance(metric, Gauge):
            m.set(1)
        elif isinstance(metric, Histogram | Summary):
            m.observe(0.02)
        elif isinstance(metric, Enum):
            m.state("connected")
        elif isinstance(metric, Info):
            m.info({"version": "test", "dry_run": "true"})
        else:
            pytest.fail(f"no example for {type(metric).__name__} {metric._name}")
    return generate_latest(metrics.registry).decode()


def test_exposition_passes_promtool_check_metrics():
    text = populated_exposition()
    for name in ("optionsbot_cycles_total", "optionsbot_connection_state", "optionsbot_build_info"):
        assert f"\n{name}{{" in text
    out = run(tool("promtool", "prometheus"), "check", "metrics", stdin=text)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_every_exposed_series_is_known_to_the_name_check():
    names = {
        line.split("{")[0].split(" ")[0]
        for line in populated_exposition().splitlines()
        if line and not line.startswith("#")
    }
    assert names <= registered().keys()


# -- Grafana provisioning -------------------------------------------------------------------


def provisioned_datasource() -> dict[str, Any]:
    config = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    (ds,) = config["datasources"]
    return ds


def test_provisioning_files():
    ds = provisioned_datasource()
    assert ds["type"] == "prometheus" and ds["uid"] == "prometheus"
    assert ds["jsonData"]["timeInterval"] == "5s"
    config = yaml.safe_load((GRAFANA / "provisioning/dashboards/optionsbot.yaml").read_text())
    (provider,) = config["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].endswith("/dashboards")


# -- Alertmanager -----------------------------------------------------------------------------


def amtool() -> str:
    return tool("amtool", "prometheus-alertmanager")


def test_amtool_check_config():
    out = run(amtool(), "check-config", str(ALERTMANAGER))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 templates" in out.stdout, "templates/*.tmpl not found from the config"


def test_alerts_route_to_the_receiver_of_their_severity():
    for rule in rules():
        severity = rule["labels"]["severity"]
        out = run(
            amtool(),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            f"alertname={rule['alert']}",
            f"severity={severity}",
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.split() == [severity], f"{rule['alert']} -> {out.stdout}"


def test_repo_config_holds_placeholders_not_secrets():
    config = yaml.safe_load(ALERTMANAGER.read_text())
    kinds = set()
    for receiver, kind, field, integration in render.secret_fields(config):
        kinds.add(kind)
        assert integration[field] == render.FIELDS[(kind, field)][1], f"{receiver} {kind}.{field}"
    assert kinds == {"telegram_configs", "discord_configs", "webhook_configs"}
    text = "\n".join(
        p.read_text()
        for p in GRAFANA.rglob("*")
        if p.suffix in {".yml", ".yaml", ".tmpl", ".json", ".md"}
    )
    assert not re.search(r"\b\d{6,}:[A-Za-z0-9_-]{30,}\b", text), "a Telegram bot token"
    assert not re.search(r"discord(app)?\.com/api/webhooks/\d", text), "a Discord webhook URL"


def template_names() -> set[str]:
    return set(re.findall(r'template "([^"]+)"', ALERTMANAGER.read_text()))


def test_templates_render(tmp_path: Path):
    alert = {
        "status": "firing",
        "labels": {"alertname": "DataStale", "severity": "warning", "symbol": "SPY"},
        "annotations": {"summary": "SPY <stale> & old", "description": "Check the farm."},
        "startsAt": "2026-11-20T15:30:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": "1",
    }
    data = {
        "receiver": "warning",
        "status": "firing",
        "alerts": [alert, {**alert, "status": "resolved", "endsAt": "2026-11-20T15:40:00Z"}],
        "groupLabels": {"alertname": "DataStale"},
        "commonLabels": {"alertname": "DataStale", "severity": "warning"},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
    }
    (tmp_path / "data.json").write_text(json.dumps(data))
    assert template_names() == {
        "optionsbot.telegram.message",
        "optionsbot.discord.title",
        "optionsbot.discord.message",
    }
    for name in template_names():
        out = run(
            amtool(),
            "template",
            "render",
            f"--template.glob={TEMPLATES}/*.tmpl",
            f"--template.data={tmp_path / 'data.json'}",
            f'--template.text={{{{ template "{name}" . }}}}',
        )
        assert out.returncode == 0 and out.stdout.strip(), f"{name}: {out.stderr}"
        assert "DataStale" in out.stdout or "SPY" in out.stdout, name
        if "telegram" in name:  # parse_mode HTML: a raw < fails the send
            assert "&lt;stale&gt; &amp; old" in out.stdout
            assert "RESOLVED" in out.stdout


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "telegram_bot_token").write_text("123:test-token\n")
    (d / "telegram_chat_id").write_text("-1001234\n")
    (d / "discord_webhook_url").write_text("https://discord.example/api/webhooks/test\n")
    (d / "webhook_url").write_text("http://127.0.0.1:9095/alerts\n")
    return d


def test_rendered_config_has_the_secrets_and_passes_amtool(tmp_path: Path, secrets: Path):
    out = tmp_path / "etc" / "alertmanager.yml"
    out.parent.mkdir()
    assert render.main(["--secrets", str(secrets), "--out", str(out)]) == 0
    assert out.stat().st_mode & 0o007 == 0, "world-readable secrets"
    config = yaml.safe_load(out.read_text())
    values = {(k, f): i[f] for _, k, f, i in render.secret_fields(config)}
    assert values[("telegram_configs", "chat_id")] == -1001234
    assert values[("telegram_configs", "bot_token")] == "123:test-token"
    assert values[("webhook_configs", "url")] == "http://127.0.0.1:9095/alerts"
    assert all(Path(t).is_absolute() for t in config["templates"])
    check = run(amtool(), "check-config", str(out), cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 templates" in check.stdout


def test_render_refuses_a_committed_secret_a_missing_file_and_the_repo(
    tmp_path: Path, secrets: Path
):
    leaked = tmp_path / "alertmanager.yml"
    leaked.write_text(
        ALERTMANAGER.read_text().replace("https://secret.invalid/webhook_url", "http://real", 1)
    )
    with pytest.raises(render.RenderError, match="placeholder"):
        render.render(leaked, secrets)
    (secrets / "telegram_chat_id").unlink()
    with pytest.raises(render.RenderError, match="telegram_chat_id"):
        render.render(ALERTMANAGER, secrets)
    (secrets / "telegram_chat_id").write_text("-1")
    with pytest.raises(render.RenderError, match="inside the repository"):
        render.write(render.render(ALERTMANAGER, secrets), GRAFANA / "rendered.yml")
    assert not (GRAFANA / "rendered.yml").exists()

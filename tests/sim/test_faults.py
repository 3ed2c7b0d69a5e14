"""Scenario files, fault validation and the injector's triggers, without sockets."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sim.config import PacingOptions, SimOptions
from sim.faults import (
    KINDS,
    Fault,
    FaultInjector,
    Scenario,
    ScenarioError,
    make_fault,
    parse_duration,
    parse_when,
)
from sim.runner import build_options, build_parser, main

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "sim" / "scenarios").glob("*.yaml"))
ORIGIN = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


# ---------------------------------------------------------------------- scenario files


def test_the_required_scenario_files_exist() -> None:
    names = {p.name for p in SCENARIOS}
    assert {
        "history_stall.yaml",
        "entitlement_nan.yaml",
        "client_id_in_use.yaml",
        "gateway_restart.yaml",
        "bad_day.yaml",
    } <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_each_scenario_file_loads_and_validates(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#"), "each scenario starts with a comment saying what it reproduces"
    scenario = Scenario.load(path)
    assert scenario.faults and scenario.name == path.stem
    options = scenario.apply(SimOptions())
    assert options.scenario is scenario
    injector = FaultInjector(ORIGIN)
    injector.load(scenario)
    assert len(injector.faults) == len(scenario.faults)
    # Every fault eventually starts within a week lived through with enough requests (routines
    # such as the nightly reset come at their time of day, so the clock walks rather than jumps).
    for kind in ("historical", "market_data", "order", "cancel_order", "connect", "any"):
        for _ in range(500):
            injector.observe(kind, "SPY", 1)
    seen: set[int] = set()
    t = ORIGIN
    while t <= ORIGIN + timedelta(days=8) and len(seen) < len(scenario.faults):
        started, _ = injector.poll(t)
        seen.update(id(f) for f in started)
        t += timedelta(minutes=5)
    assert len(seen) == len(scenario.faults)


def test_bad_day_combines_many_kinds() -> None:
    scenario = Scenario.load(next(p for p in SCENARIOS if p.name == "bad_day.yaml"))
    assert len({f.kind for f in scenario.faults}) >= 10


# ---------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        (90, 90),
        ("90s", 90),
        ("4m", 240),
        ("+15m", 900),
        ("1h30m", 5400),
        ("2.5s", 2.5),
        ("250ms", 0.25),
        ("1d", 86400),
    ],
)
def test_parse_duration(text, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "4x", "m4", "1h-3m", "soon", True, None, [1]])
def test_parse_duration_rejects(text) -> None:
    with pytest.raises(ScenarioError, match="duration"):
        parse_duration(text)


def test_parse_duration_sign() -> None:
    assert parse_duration("-30s", signed=True) == timedelta(seconds=-30)
    with pytest.raises(ScenarioError, match="negative"):
        parse_duration("-30s")


def test_parse_when() -> None:
    assert parse_when("+4m", "at") == timedelta(minutes=4)
    assert parse_when("2026-11-20T10:04:00", "at") == datetime(2026, 11, 20, 15, 4, tzinfo=UTC)
    assert parse_when("2026-11-20T15:04:00+00:00", "at") == datetime(
        2026, 11, 20, 15, 4, tzinfo=UTC
    )
    assert parse_when(datetime(2026, 11, 20, 10, 4), "at") == datetime(
        2026, 11, 20, 15, 4, tzinfo=UTC
    )
    with pytest.raises(ScenarioError, match="at:"):
        parse_when("tomorrow", "at")


# ---------------------------------------------------------------------- fault validation


@pytest.mark.parametrize(
    ("kind", "values", "message"),
    [
        ("histroy_stall", {}, r"kind: unknown fault kind 'histroy_stall'"),
        ("history_stall", {"simbol": "SPY"}, r"fault\.simbol: unknown key"),
        ("history_delay", {}, r"fault\.delay_seconds: required"),
        ("history_delay", {"delay_seconds": -1}, r"fault\.delay_seconds: must be > 0"),
        ("history_stall", {"at": "+1m", "after": 3}, "either 'at' or 'after'"),
        ("history_stall", {"until": "+1m", "duration": "1m"}, "either 'until' or 'duration'"),
        ("disconnect", {"duration": "1m"}, "happens once"),
        ("gateway_restart", {"duration": "1m"}, "down_seconds"),
        ("farm", {"code": 2110}, r"fault\.code: expected one of"),
        ("client_id_in_use", {"mode": "always"}, r"fault\.client_id: mode 'always'"),
        ("client_id_in_use", {"mode": "sometimes"}, r"fault\.mode"),
        ("partial_fill", {"fraction": 1.0}, r"fault\.fraction: must be > 0 and < 1"),
        ("partial_fill", {"fraction": [0.8, 0.2]}, r"fault\.fraction: low must not exceed"),
        ("fill_after_cancel", {"fraction": 0}, r"fault\.fraction"),
        ("slippage", {"ticks": 0}, r"fault\.ticks"),
        ("no_entitlement", {"code": 10090}, r"fault\.code"),
        ("clock_jump", {}, r"fault\.by: required"),
        ("clock_jump", {"by": "0s"}, r"fault\.by: must not be zero"),
        ("history_stall", {"after": -1}, r"fault\.after"),
        ("history_stall", {"request": "quotes"}, r"fault\.request"),
        ("history_stall", {"client_id": "seven"}, r"fault\.client_id"),
    ],
)
def test_bad_faults_name_the_key(kind: str, values: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        make_fault(kind, "fault", **values)


def test_fault_defaults_and_normalisation() -> None:
    f = make_fault("farm", code=2105, symbol="spy,qqq", client_id=3)
    assert f.symbols == frozenset({"SPY", "QQQ"}) and f.client_ids == frozenset({3})
    assert f["farm"] == "ushmds" and f.request == "any"
    assert make_fault("history_stall").request == "historical"
    assert make_fault("no_entitlement")["code"] == 10089
    assert make_fault("partial_fill", fraction=[0.2, 0.4])["fraction"] == (0.2, 0.4)
    assert make_fault("clock_jump", by="-30s")["by"] == timedelta(seconds=-30)
    assert f.matches("SPY", 3) and not f.matches("IWM", 3) and not f.matches("SPY", 4)
    assert not f.matches(None, 3)
    assert make_fault("read_only").matches(None, None)


def test_every_kind_has_a_summary_and_valid_defaults() -> None:
    required = {
        "history_delay": {"delay_seconds": 1},
        "farm": {"code": 2104},
        "clock_jump": {"by": "1m"},
    }
    for kind, spec in KINDS.items():
        assert spec.summary and spec.shape in ("event", "window", "condition")
        make_fault(kind, **required.get(kind, {}))


# ---------------------------------------------------------------------- scenario parsing


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("faults: [", "not valid YAML at line"),
        ("- 1\n- 2", "must be a mapping"),
        ("sede: 3", "sede: unknown key"),
        ("seed: x", "seed: expected an integer"),
        ("faults: {kind: disconnect}", "faults: expected a list"),
        ("faults: [disconnect]", r"faults\[0\]: expected a mapping"),
        ("faults: [{at: +1m}]", r"faults\[0\]\.kind: missing"),
        ("faults: [{kind: disconnect, after: 2, on: order}]", "write 'request', not 'on'"),
        ("faults: [{kind: disconnect}, {kind: farm}]", r"faults\[1\]\.code: required"),
        ("pacing: {max_lines: 3}", r"pacing\.max_lines: unknown key"),
        ("pacing: {max_market_data_lines: many}", r"pacing\.max_market_data_lines: expected int"),
        ("pacing: {open_historical_overflow: drop}", "open_historical_overflow"),
        ("start: +5m", "start: expected an ISO time"),
        ("time_scale: -1", "time_scale: must be > 0"),
    ],
)
def test_bad_scenarios_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message) as e:
        Scenario.from_yaml(text, source="bad.yaml")
    assert str(e.value).startswith("bad.yaml: ")


def test_scenario_settings_apply_and_explicit_values_win() -> None:
    scenario = Scenario.from_yaml(
        "seed: 3\ntime_scale: 10\nstart: 2026-11-20T09:45:00\nsymbols: [spy, QQQ]\n"
        "pacing: {historical: false, max_market_data_lines: 5}\n"
        "faults: [{kind: read_only}]"
    )
    options = scenario.apply(SimOptions(), seed=9, time_scale=None)
    assert options.seed == 9 and options.time_scale == 10
    assert options.start == datetime(2026, 11, 20, 14, 45, tzinfo=UTC)
    assert options.symbols == ("SPY", "QQQ")
    assert options.pacing == PacingOptions(historical=False, max_market_data_lines=5)
    assert Scenario.from_yaml("pacing: false").apply(SimOptions()).pacing.enabled is False
    assert Scenario.from_yaml("").faults == ()


# ---------------------------------------------------------------------- the injector


def test_at_trigger_with_duration() -> None:
    inj = FaultInjector(ORIGIN)
    f = inj.add("history_stall", at="+4m", duration="10m")
    assert inj.poll(ORIGIN + timedelta(minutes=3, seconds=59)) == ([], [])
    assert inj.active("history_stall", "SPY") is None
    assert inj.poll(ORIGIN + timedelta(minutes=4)) == ([f], [])
    assert inj.active("history_stall", "SPY") is f
    assert inj.poll(ORIGIN + timedelta(minutes=14)) == ([], [f])
    assert inj.active("history_stall") is None and inj.state(f) == "ended"


def test_absolute_at_and_until() -> None:
    inj = FaultInjector(ORIGIN)
    f = inj.add("read_only", at="2026-11-20T10:00", until="2026-11-20T11:00")
    assert inj.poll(ORIGIN) == ([], [])
    assert inj.poll(datetime(2026, 11, 20, 15, 0, tzinfo=UTC)) == ([f], [])
    assert inj.poll(datetime(2026, 11, 20, 16, 0, tzinfo=UTC)) == ([], [f])


def test_after_counts_matching_requests_only() -> None:
    inj = FaultInjector(ORIGIN)
    f = inj.add("history_stall", after=2, symbol="SPY", client_id=1)
    inj.observe("historical", "QQQ", 1)
    inj.observe("historical", "SPY", 2)
    inj.observe("market_data", "SPY", 1)
    inj.observe("historical", "SPY", 1)
    assert inj.poll(ORIGIN) == ([], [])
    inj.observe("historical", "SPY", 1)
    assert inj.poll(ORIGIN) == ([f], [])


def test_after_zero_and_no_trigger_start_at_once() -> None:
    inj = FaultInjector(ORIGIN)
    a, b = inj.add("read_only"), inj.add("empty_chain", after=0)
    assert inj.poll(ORIGIN) == ([a, b], [])


def test_events_fire_once_and_are_counted() -> None:
    inj = FaultInjector(ORIGIN)
    f = inj.add("disconnect", after=1)
    inj.observe("order")
    assert inj.poll(ORIGIN) == ([f], [])
    inj.observe("order")
    assert inj.poll(ORIGIN) == ([], [])
    assert inj.state(f) == "ended" and inj.counts["disconnect"] == 1
    assert inj.active("disconnect") is None


def test_windows_end_after_their_duration_from_the_trigger() -> None:
    inj = FaultInjector(ORIGIN)
    f = inj.add("connectivity_lost", after=1, duration="2m", restore="data_lost")
    inj.observe("historical")
    t = ORIGIN + timedelta(hours=1)
    assert inj.poll(t) == ([f], [])
    assert inj.poll(t + timedelta(minutes=2)) == ([], [f])


def test_hits_summary_and_removal() -> None:
    inj = FaultInjector(ORIGIN)
    f = inj.add("slippage", ticks=2, name="slip")
    inj.poll(ORIGIN)
    inj.hit(f, 3)
    assert inj.summary() == {
        "applied": {"slippage": 3},
        "faults": [{"kind": "slippage", "name": "slip", "state": "active"}],
    }
    inj.remove(f)
    assert inj.faults == [] and inj.active("slippage") is None
    inj.add("read_only")
    inj.clear()
    assert inj.faults == []


def test_draws_are_seeded_per_fault() -> None:
    def draws(seed: int) -> list[float]:
        inj = FaultInjector(ORIGIN, seed=seed)
        inj.add("read_only")
        f = inj.add("partial_fill", fraction=[0.1, 0.9])
        return [inj.draw(f, f["fraction"]) for _ in range(5)]

    assert draws(7) == draws(7) != draws(8)
    inj = FaultInjector(ORIGIN)
    fixed = inj.add("slippage", ticks=2)
    assert inj.draw_int(fixed, fixed["ticks"]) == 2


def test_add_accepts_a_fault_and_is_thread_safe() -> None:
    inj = FaultInjector(ORIGIN)
    fault = Fault("read_only")
    assert inj.add(fault) is fault
    with pytest.raises(TypeError):
        inj.add(fault, at="+1m")
    threads = [
        threading.Thread(target=lambda: [inj.add("empty_chain") for _ in range(200)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(inj.faults) == 801


# ---------------------------------------------------------------------- command line


def test_bad_scenario_file_exits_non_zero_without_a_traceback(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("faults:\n  - kind: history_delay\n    delay: 5\n")
    assert main(["--scenario", str(bad), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "faults[0].delay: unknown key" in err and "Traceback" not in err
    assert main(["--scenario", str(tmp_path / "missing.yaml"), "--port", "0"]) == 2
    assert "cannot read the scenario file" in capsys.readouterr().err


def test_command_line_options_and_scenario_precedence() -> None:
    path = next(p for p in SCENARIOS if p.name == "history_stall.yaml")
    args = build_parser().parse_args(["--scenario", str(path), "--no-pacing", "--seed", "5"])
    options = build_options(args)
    assert options.seed == 5 and options.pacing.enabled is False
    assert (
        options.symbols == ("SPY", "QQQ", "AAPL")
        and options.scenario.faults[0].kind == "history_stall"
    )
    plain = build_options(build_parser().parse_args([]))
    assert plain == SimOptions()

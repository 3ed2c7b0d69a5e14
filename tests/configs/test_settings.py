"""Settings: defaults, environment overrides, secrets, and bad input that names the field."""

import subprocess
import sys
from pathlib import Path

import pytest

from configs.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_embedded_default_is_dry_run_on_the_simulator():
    s = load_settings(environ={})
    assert s.dry_run is True
    assert s.broker.mode == "embedded"
    assert s.metrics.host == "127.0.0.1"
    assert str(s.storage.path).startswith("var/")


def test_paper_example_is_valid_and_points_at_the_paper_port():
    s = load_settings(ROOT / "configs" / "paper.example.yaml", environ={})
    assert (s.broker.mode, s.broker.port, s.dry_run) == ("gateway", 4002, True)


def test_environment_overrides_the_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("broker: {port: 4002, client_id: 5}\n")
    s = load_settings(f, environ={"OPTIONSBOT_BROKER__PORT": "4001", "OPTIONSBOT_DRY_RUN": "false"})
    assert (s.broker.port, s.broker.client_id, s.dry_run) == (4001, 5, False)


def test_the_account_id_never_shows_in_reprs():
    s = load_settings(environ={"OPTIONSBOT_BROKER__ACCOUNT": "DU7654321"})
    assert s.broker.account.get_secret_value() == "DU7654321"
    assert "DU7654321" not in repr(s) and "DU7654321" not in str(s.model_dump())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("broker: {port: 99999}", "broker.port: Input should be less than or equal to 65535"),
        ("broker: {clinet_id: 3}", "broker.clinet_id: unknown setting"),
        ("symbols: [SPY, 'SP Y']", "is not a US stock symbol"),
        ("symbols: []", "list at least one underlying"),
        ("scalp: {ema_fast: 30}", "ema_fast must be smaller than ema_slow"),
        ("risk: {risk_per_trade: 2}", "risk.risk_per_trade"),
        ("sim: {start: '2026-11-20T09:30:00'}", "needs a timezone"),
        (
            "broker: {max_messages_per_second: 47}",
            "broker: max_messages_per_second + message_burst must stay under IB's 50",
        ),
        ("dry_run: maybe", "dry_run"),
        ("- just\n- a list", "top level must be a mapping"),
        ("broker: {port: [", "not valid YAML at line 1"),
    ],
)
def test_bad_input_names_the_field(tmp_path, text, expected):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(f, environ={})
    assert expected in err.value.render()


def test_every_bad_field_is_reported_at_once(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("broker: {port: 0, client_id: -1}\nmetrics: {port: -5}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(f, environ={})
    assert len(err.value.problems) == 3


def test_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_cli_exits_2_before_anything_starts(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(f"broker: {{port: 99999}}\nstorage: {{path: {tmp_path / 'db.sqlite'}}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "actors.cli", "run", "--config", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "broker.port" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "db.sqlite").exists()


def test_quote_recheck_must_be_shorter_than_the_quote_age_limit():
    from pydantic import ValidationError

    from configs.settings import OptionSettings

    with pytest.raises(ValidationError, match="quote_recheck_s must be shorter"):
        OptionSettings(max_quote_age_s=2.0, quote_recheck_s=2.0)
    assert OptionSettings(max_quote_age_s=2.0, quote_recheck_s=0.5).quote_recheck_s == 0.5


def test_spike_multiple_below_ordinary_bars_is_refused():
    from pydantic import ValidationError

    from configs.settings import DataSettings

    with pytest.raises(ValidationError, match="spike_atr_multiple"):
        DataSettings(spike_atr_multiple=2)


def test_the_simulator_latency_setting_takes_a_profile_and_names_the_field_when_wrong(tmp_path):
    assert load_settings(environ={}).sim.latency == "instant"
    s = load_settings(environ={"OPTIONSBOT_SIM__LATENCY": "realistic"})
    assert s.sim.latency == "realistic"
    with pytest.raises(ConfigError, match="sim.latency"):
        load_settings(environ={"OPTIONSBOT_SIM__LATENCY": "slow"})


def _names(n: int) -> list[str]:
    return [f"S{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(n)]


def test_more_symbols_than_open_historical_requests_need_real_time_bars():
    """keepUpToDate holds one of IB's ~50 open historical requests per symbol for good: with
    data.stream historical, 51 symbols cannot fit; auto streams the rest as real-time bars."""
    from pydantic import ValidationError

    from configs.settings import Settings

    with pytest.raises(ValidationError, match="data.stream: auto"):
        Settings(symbols=_names(51), data={"stream": "historical"})
    assert len(Settings(symbols=_names(100)).symbols) == 100  # auto: 45 + 55 real-time


@pytest.mark.parametrize(
    ("symbols", "extra", "message"),
    [
        (61, {"data": {"stream": "realtime"}}, "60 new ones in 10 minutes"),
        (106, {}, "60 new ones in 10 minutes"),
        (50, {"data": {"stream": "realtime"}, "broker": {"max_market_data_lines": 55}}, "lines"),
    ],
)
def test_real_time_bars_must_fit_ibs_pacing_and_lines(symbols, extra, message):
    from pydantic import ValidationError

    from configs.settings import Settings

    with pytest.raises(ValidationError, match=message):
        Settings(symbols=_names(symbols), **extra)

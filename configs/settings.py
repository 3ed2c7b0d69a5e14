"""The settings model: every knob of the service, validated before anything starts."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

DEFAULT_FILE = Path(__file__).with_name("default.yaml")
ENV_PREFIX = "OPTIONSBOT_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerSettings(_Section):
    """Where IB Gateway / TWS is. `embedded` starts the built-in simulator instead."""

    mode: Literal["embedded", "gateway"] = "embedded"
    host: str = "127.0.0.1"
    port: int = Field(4002, ge=1, le=65535)
    client_id: int = Field(17, ge=0, le=999_999)
    # On error 326 (client id in use) the next id in this range is tried.
    client_id_pool: int = Field(8, ge=1, le=100)
    # From OPTIONSBOT_BROKER__ACCOUNT (or a file outside the repo); SecretStr keeps it out of logs.
    account: SecretStr = SecretStr("")
    connect_timeout_s: float = Field(10.0, gt=0)
    request_timeout_s: float = Field(30.0, gt=0)  # for kinds without their own below
    # Each kind's timeout (real seconds). A timeout counts toward the breaker, and the
    # requester always gets an answer. Historical requests can legitimately take a while.
    timeouts_s: dict[
        Literal["historical", "contract_details", "sec_def", "snapshot", "probe", "broker_state"],
        float,
    ] = Field(
        default_factory=lambda: {
            "historical": 60.0,
            "contract_details": 15.0,
            "sec_def": 15.0,
            "snapshot": 20.0,
            "probe": 10.0,
            "broker_state": 30.0,
        }
    )
    # gateway: the service's time follows the Gateway's (reqCurrentTime at every connect and
    # every clock_sync_s), advancing at clock_scale between syncs; wall: this machine's clock.
    clock: Literal["gateway", "wall"] = "gateway"
    clock_scale: float = Field(1.0, gt=0)
    clock_sync_s: float = Field(60.0, gt=0)
    # IB allows about 50 historical requests open at once (unconfirmed: a setting, not a fact);
    # each symbol's 1-minute stream holds one for good.
    max_open_historical: int = Field(50, ge=1)
    # IB disconnects a client that sends more than 50 messages a second. Ours go out at most
    # `message_burst` at once, then `max_messages_per_second`, orders before data.
    max_messages_per_second: float = Field(30.0, gt=0)
    message_burst: int = Field(10, ge=1)
    # Streaming quotes a subscription allows at once (100 for most accounts; more with
    # quote booster packs). A watch beyond it waits for a line instead of failing with 101.
    max_market_data_lines: int = Field(100, ge=1)
    breaker_threshold: int = Field(3, ge=1)  # consecutive failures that open the breaker
    breaker_cooldown_s: float = Field(30.0, gt=0)
    market_data_type: Literal[1, 2, 3, 4] = 1
    # On an entitlement error (354, 10089, ...) switch to delayed quotes (type 3), which are
    # 15-20 minutes old: fine for dry-run and paper, not for orders with real money.
    delayed_data_fallback: bool = False
    readonly: bool = False

    @model_validator(mode="after")
    def _message_rate(self) -> BrokerSettings:
        if self.max_messages_per_second + self.message_burst >= 50:
            raise ValueError(
                "max_messages_per_second + message_burst must stay under IB's 50 messages a"
                f" second, got {self.max_messages_per_second:g} + {self.message_burst}; lower"
                " either (the defaults are 30 and 10)"
            )
        return self


class SimSettings(_Section):
    """The embedded IB Gateway simulator (broker.mode: embedded)."""

    seed: int = 7
    time_scale: float = Field(60.0, gt=0, le=100_000)
    start: datetime | None = None  # None: resume the simulated clock stored in the database
    skip_closed: bool = True
    # A fault scenario (sim/scenarios/*.yaml) for the embedded simulator: the Gateway's bad days.
    scenario: Path | None = None
    pacing: bool = True  # enforce IB's pacing rules in the simulator
    bar_update_s: float = Field(5.0, gt=0)  # simulated seconds between keepUpToDate updates

    @field_validator("scenario")
    @classmethod
    def _scenario(cls, v: Path | None) -> Path | None:
        if v is None:
            return v
        from sim.faults import Scenario, ScenarioError

        try:
            Scenario.load(v)
        except ScenarioError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("needs a timezone, e.g. 2026-11-20T09:30:00-05:00")
        return v


class DataSettings(_Section):
    backfill_1min: str = "2 D"
    backfill_1hour: str = "30 D"
    what_to_show: Literal["TRADES", "MIDPOINT"] = "TRADES"
    stale_after_minutes: float = Field(5.0, gt=0)
    # A stale stream is asked for again only after this long without a bar in real time too:
    # at a simulator's speed, or on a loaded Pi, a few seconds' lag is not a dead stream.
    resubscribe_after_s: float = Field(30.0, gt=0)
    record_bars: bool = False  # keep every delivered bar in SQLite (replay, audits)


class ScalpSettings(_Section):
    enabled: bool = True
    rsi_period: int = Field(14, ge=2)
    ema_fast: int = Field(8, ge=2)
    ema_slow: int = Field(21, ge=3)
    rsi_buy_min: float = Field(45.0, ge=0, le=100)
    rsi_buy_max: float = Field(70.0, ge=0, le=100)
    rsi_sell_below: float = Field(40.0, ge=0, le=100)
    min_bars: int = Field(30, ge=1)
    # One idea per symbol per this many bars at most: a scalp signal repeats every bar.
    cooldown_bars: int = Field(15, ge=0)

    @model_validator(mode="after")
    def _order(self) -> ScalpSettings:
        if self.ema_fast >= self.ema_slow:
            raise ValueError("ema_fast must be smaller than ema_slow")
        if self.rsi_buy_min > self.rsi_buy_max:
            raise ValueError("rsi_buy_min must not exceed rsi_buy_max")
        if self.rsi_sell_below > self.rsi_buy_min:
            raise ValueError("rsi_sell_below must not exceed rsi_buy_min, or BUY and SELL overlap")
        return self


class WhaleSettings(_Section):
    enabled: bool = True
    lookback_days: int = Field(20, ge=2)
    volume_multiple: float = Field(1.5, gt=0)
    debounce_days: int = Field(3, ge=0)


class OptionSettings(_Section):
    moneyness: Literal["atm", "itm1", "otm1"] = "atm"
    strike_count: int = Field(5, ge=1, le=50)
    min_dte: int = Field(1, ge=0)
    allow_expiry_day: bool = False
    min_volume: float = Field(100, ge=0)
    max_spread_pct: float = Field(0.10, gt=0, le=1)
    spread_allowance: float = Field(0.10, ge=0)
    max_quote_age_s: float = Field(10.0, gt=0)
    quote_wait_s: float = Field(4.0, gt=0)


class OrderSettings(_Section):
    take_profit_pct: float = Field(0.30, gt=0, le=10)
    stop_loss_pct: float = Field(0.20, gt=0, lt=1)
    entry_timeout_s: float = Field(120.0, gt=0)  # simulated seconds an unfilled entry may wait
    paper_slippage_ticks: int = Field(0, ge=0)
    # Close a position at the open of its option's expiry day instead of holding it into expiry.
    close_on_expiry_day: bool = True
    commission_per_contract: float = Field(0.65, ge=0)
    # A position found without a working stop for its full quantity: `protect` places a
    # take-profit and a stop (GTC) for the gap; `flatten` closes the gap at market.
    unprotected_action: Literal["protect", "flatten"] = "protect"


class RiskSettings(_Section):
    risk_per_trade: float = Field(0.01, gt=0, le=0.2)
    max_daily_loss_pct: float = Field(0.02, gt=0, le=1)
    max_open_positions: int = Field(3, ge=0)
    max_contracts_per_order: int = Field(10, ge=1)
    max_premium_per_trade: float = Field(2000.0, gt=0)
    max_exposure_per_symbol: float = Field(5000.0, gt=0)
    no_entry_first_minutes: int = Field(5, ge=0)
    no_entry_last_minutes: int = Field(15, ge=0)
    # Close scalp positions this many minutes before the close (0: hold them, bracket only).
    flatten_scalps_before_close_minutes: int = Field(10, ge=0)
    # The same for whale positions (0, the default: held across days, protected at the broker by
    # their GTC take-profit and stop).
    flatten_whales_before_close_minutes: int = Field(0, ge=0)
    paper_equity: float = Field(100_000.0, gt=0)  # dry-run starting equity
    kill_switch_file: Path = Path("var/KILL")


class StorageSettings(_Section):
    path: Path = Path("var/optionsbot.sqlite")


class MetricsSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)  # 0: any free port


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_file: Path | None = Path("var/optionsbot.jsonl")


SYMBOL_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ.")


class Settings(BaseSettings):
    """The whole service's settings. Environment overrides use OPTIONSBOT_SECTION__KEY."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    dry_run: bool = True
    symbols: tuple[str, ...] = ("SPY", "QQQ", "IWM")
    broker: BrokerSettings = BrokerSettings()
    sim: SimSettings = SimSettings()
    data: DataSettings = DataSettings()
    scalp: ScalpSettings = ScalpSettings()
    whale: WhaleSettings = WhaleSettings()
    options: OptionSettings = OptionSettings()
    orders: OrderSettings = OrderSettings()
    risk: RiskSettings = RiskSettings()
    storage: StorageSettings = StorageSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("list at least one underlying, e.g. [SPY]")
        out = []
        for s in v:
            if not s or set(s.upper()) - SYMBOL_CHARS or len(s) > 8:
                raise ValueError(f"{s!r} is not a US stock symbol (letters and '.', up to 8)")
            out.append(s.upper())
        if len(set(out)) != len(out):
            raise ValueError("a symbol is listed twice")
        return tuple(out)

    @model_validator(mode="after")
    def _streams_fit(self) -> Settings:
        if len(self.symbols) > self.broker.max_open_historical:
            raise ValueError(
                f"{len(self.symbols)} symbols need {len(self.symbols)} open 1-minute streams but "
                f"broker.max_open_historical is {self.broker.max_open_historical}: list fewer symbols"
            )
        return self

    @model_validator(mode="after")
    def _live_needs_gateway(self) -> Settings:
        if not self.dry_run and self.broker.mode == "gateway" and self.broker.readonly:
            raise ValueError(
                "dry_run is false but broker.readonly is true: orders would be refused (321)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, so a secret never has to be written into it.
        return env_settings, init_settings


class ConfigError(Exception):
    """A configuration problem, with one line per bad field that says how to fix it."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def render(self) -> str:
        lines = [f"configuration error in {self.source}:"]
        lines += [f"  - {p}" for p in self.problems]
        lines.append(
            "nothing was started; fix the file (or the OPTIONSBOT_* variable) and run again"
        )
        return "\n".join(lines)


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return f"{loc}: unknown setting; check its spelling against configs/default.yaml"
    if kind == "missing":
        return f"{loc}: required; add it"
    given = err.get("input")
    shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
    return f"{loc}: {msg}{shown}"


def load_settings(
    path: Path | str | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Read a YAML file (default: the embedded-simulator defaults) and the environment.

    Raises ConfigError naming every bad field; never a traceback for bad input.
    """
    source = Path(path) if path else DEFAULT_FILE
    try:
        raw = yaml.safe_load(source.read_text()) if source.exists() else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            str(source), [f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"]
        ) from None
    except OSError as exc:
        raise ConfigError(str(source), [f"cannot read the file: {exc.strerror}"]) from None
    if path and not source.exists():
        raise ConfigError(str(source), ["the file does not exist"])
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(str(source), ["the top level must be a mapping of settings"])
    old_env = None
    if environ is not None:
        old_env = dict(os.environ)
        os.environ.clear()
        os.environ.update(environ)
    try:
        return Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(str(source), [_describe(e) for e in exc.errors()]) from None
    except SettingsError as exc:
        # Lists and mappings in the environment are JSON: OPTIONSBOT_SYMBOLS='["SPY","QQQ"]'.
        raise ConfigError(
            "the environment",
            [f"{exc}; lists and mappings in OPTIONSBOT_* variables are JSON, e.g. '[\"SPY\"]'"],
        ) from None
    finally:
        if old_env is not None:
            os.environ.clear()
            os.environ.update(old_env)

"""The settings model: every knob of the service, validated before anything starts."""

from __future__ import annotations

import difflib
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

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
# Variables with the prefix that are not settings: test hooks (actors/crash.py, actors/cli.py).
OTHER_ENV = frozenset({"OPTIONSBOT_CRASH_AT", "OPTIONSBOT_DEBUG_HANG", "OPTIONSBOT_TRACE_MEMORY"})
# The sentence that turns on real orders against a Gateway (live.confirm): typed, not defaulted.
LIVE_CONFIRMATION = "I accept real orders"
HOUR = 3600.0
DAY = 86_400.0
HOST = r"^[A-Za-z0-9.:\-]{1,253}$"  # a name or an address, never empty or with spaces
SESSION_MINUTES = 390  # a regular XNYS session, 09:30-16:00
MAX_FILE_BYTES = 1_000_000  # a settings file is a few hundred bytes; anything this big is not one
# Positive, finite and at most an hour: a timeout of 0 fires at once, one of 1e300 never.
Timeout = Annotated[float, Field(gt=0, le=HOUR, allow_inf_nan=False)]


def _writable(path: Path, what: str, example: str) -> Path:
    """Refuse a file path the service could not create or write, without creating anything.

    Root passes os.access on most paths, so the shape checks (a directory where a file should be,
    a file where a directory should be) are what catch a careless path there.
    """
    if str(path) in ("", "."):
        raise ValueError(f"is empty; give the {what} a file name, e.g. {example}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give the {what} a file name inside it")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{path} is not writable; fix its permissions or choose another path")
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{ancestor} is a file, so {path} cannot be created; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(
            f"cannot create {path}: {ancestor} is not writable; fix its permissions or choose"
            " another path"
        )
    return path


class _Section(BaseModel):
    # inf and NaN pass `gt=0` and then overflow or never compare at run time: refuse them here.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LiveSettings(_Section):
    """The opt-in for real orders: dry_run false against a Gateway needs both, typed by a human."""

    enabled: bool = False
    confirm: str = Field("", max_length=100)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class RoutineWindow(_Section):
    """A window in which the Gateway is expected to drop, flap or refuse connections: IB's
    nightly server reset, the Gateway's daily auto-restart, the weekly re-authentication.

    Inside it a failure does not count toward the breaker, the connection alerts stand down
    (optionsbot_gateway_routine), the first refusal is logged once, and the service keeps
    reconnecting with its usual backoff. Outside it every failure counts as before."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    days: tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...] = Field(
        WEEKDAYS, min_length=1, max_length=7
    )
    start: str = Field(max_length=5)  # HH:MM, 24-hour, in `tz`; the window starts on `days`
    minutes: int = Field(ge=1, le=24 * 60)
    tz: str = Field("America/New_York", max_length=64)

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
            raise ValueError(f"{v!r} is not a time of day; use HH:MM, 24-hour, e.g. 23:45")
        return v

    @field_validator("tz")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{v!r} is not a time zone; use an IANA name like America/New_York"
            ) from None
        return v


# IB's routines, in New York time. Sources: IB's "System Availability" page (the North America
# server reset, 00:15-01:45 ET); IBKR's "Auto Restart Considerations" (a restart-daily platform
# needs a login again after Sunday 01:00 ET); the Gateway's own Auto restart time is the user's
# setting (23:45 here: set it to yours).
DEFAULT_ROUTINES = (
    {"name": "server_reset", "start": "00:15", "minutes": 90},
    {"name": "gateway_restart", "start": "23:40", "minutes": 15},
    {"name": "weekly_reauth", "days": ("sun",), "start": "01:00", "minutes": 8 * 60},
)


class BrokerSettings(_Section):
    """Where IB Gateway / TWS is. `embedded` starts the built-in simulator instead."""

    mode: Literal["embedded", "gateway"] = "embedded"
    host: str = Field("127.0.0.1", pattern=HOST)
    port: int = Field(4002, ge=1, le=65535)
    client_id: int = Field(17, ge=0, le=999_999)
    # On error 326 (client id in use) the next id in this range is tried.
    client_id_pool: int = Field(8, ge=1, le=100)
    # From OPTIONSBOT_BROKER__ACCOUNT (or a file outside the repo); SecretStr keeps it out of logs.
    account: SecretStr = SecretStr("")
    connect_timeout_s: float = Field(10.0, gt=0, le=HOUR)
    request_timeout_s: float = Field(30.0, gt=0, le=HOUR)  # for kinds without their own below
    # Each kind's timeout (real seconds). A timeout counts toward the breaker, and the
    # requester always gets an answer. Historical requests can legitimately take a while.
    timeouts_s: dict[
        Literal["historical", "contract_details", "sec_def", "snapshot", "probe", "broker_state"],
        Timeout,
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
    clock_scale: float = Field(1.0, gt=0, le=100_000)
    clock_sync_s: float = Field(60.0, gt=0, le=DAY)
    # IB allows about 50 historical requests open at once (unconfirmed: a setting, not a fact);
    # each symbol's 1-minute stream holds one for good.
    max_open_historical: int = Field(50, ge=1, le=1000)
    # IB disconnects a client that sends more than 50 messages a second. Ours go out at most
    # `message_burst` at once, then `max_messages_per_second`, orders before data: any second
    # carries at most 49, ib_async's own budget (45 a second) spread evenly. IB counts what
    # the client sends (tws-api rtd_fqa_errors.html), and the simulator counts arrivals so: at
    # 45 + 4 a cold start of 50 symbols takes 3.6 s against the 3.3 s of 50 a second, with no
    # violation in about 30 runs (`python -m bench.soak --cold-start`). It forgives a Gateway
    # that reads only about 20 ms late; one whose reading stalls (a long garbage collection) counts
    # more: its first error 100 slows the gate for a minute, then to two thirds of this rate
    # for the rest of the run (30 + 4 forgives half a second; see actors/pacing.py).
    max_messages_per_second: float = Field(45.0, gt=0, lt=50)
    message_burst: int = Field(4, ge=1, lt=50)
    # Streaming quotes a subscription allows at once (100 for most accounts; more with
    # quote booster packs). A watch beyond it waits for a line instead of failing with 101.
    max_market_data_lines: int = Field(100, ge=1, le=10_000)
    breaker_threshold: int = Field(3, ge=1, le=1000)  # consecutive failures that open the breaker
    breaker_cooldown_s: float = Field(30.0, gt=0, le=DAY)
    # When the Gateway's own routines are expected to take it away (see RoutineWindow).
    routines: tuple[RoutineWindow, ...] = Field(
        default_factory=lambda: tuple(RoutineWindow(**r) for r in DEFAULT_ROUTINES),
        max_length=20,
    )
    # 1 live, 2 frozen, 3 delayed, 4 delayed frozen. An int, not a Literal: a Literal refuses
    # the string "3" that OPTIONSBOT_BROKER__MARKET_DATA_TYPE gives.
    market_data_type: int = Field(1, ge=1, le=4)
    # On an entitlement error (354, 10089, ...) switch to delayed quotes (type 3), which are
    # 15-20 minutes old: fine for dry-run and paper, not for orders with real money.
    delayed_data_fallback: bool = False
    readonly: bool = False

    @field_validator("routines")
    @classmethod
    def _routines(cls, v: tuple[RoutineWindow, ...]) -> tuple[RoutineWindow, ...]:
        names = [r.name for r in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"routine names must differ: {', '.join(twice)} given twice")
        return v

    @field_validator("account")
    @classmethod
    def _account(cls, v: SecretStr) -> SecretStr:
        # The value is never shown: not here, not in pydantic's error (see _describe).
        text = v.get_secret_value()
        if text != text.strip() or any(not c.isalnum() for c in text) or len(text) > 32:
            raise ValueError(
                "must be the account id alone, letters and digits (DU and digits for"
                " paper); the value is not shown"
            )
        return v

    @model_validator(mode="after")
    def _message_rate(self) -> BrokerSettings:
        if self.max_messages_per_second + self.message_burst >= 50:
            raise ValueError(
                "max_messages_per_second + message_burst must stay under IB's 50 messages a"
                f" second, got {self.max_messages_per_second:g} + {self.message_burst}; lower"
                " either (the defaults are 45 and 4)"
            )
        return self


class SimSettings(_Section):
    """The embedded IB Gateway simulator (broker.mode: embedded)."""

    seed: int = Field(7, ge=0, le=2**63 - 1)
    time_scale: float = Field(60.0, gt=0, le=100_000)
    start: datetime | None = None  # None: resume the simulated clock stored in the database
    skip_closed: bool = True
    # A fault scenario (sim/scenarios/*.yaml) for the embedded simulator: the Gateway's bad days.
    scenario: Path | None = None
    pacing: bool = True  # enforce IB's pacing rules in the simulator
    # How long the simulator takes to answer: instant, or realistic (like a real Gateway, whose
    # snapshots take seconds); a scenario's own `latency` wins over this.
    latency: Literal["instant", "realistic"] = "instant"
    bar_update_s: float = Field(
        5.0, gt=0, le=HOUR
    )  # simulated seconds between keepUpToDate updates

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
        except (OSError, UnicodeError, ValueError, TypeError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read the scenario {v}: {exc}") from None
        return v

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("needs a timezone, e.g. 2026-11-20T09:30:00-05:00")
        return v


class DataSettings(_Section):
    # IB duration strings: an integer and a unit (S, D, W, M, Y).
    backfill_1min: str = Field("2 D", pattern=r"^[1-9][0-9]{0,3} [SDWMY]$")
    backfill_1hour: str = Field("30 D", pattern=r"^[1-9][0-9]{0,3} [SDWMY]$")
    what_to_show: Literal["TRADES", "MIDPOINT"] = "TRADES"
    stale_after_minutes: float = Field(5.0, gt=0, le=24 * 60)
    # A streamed bar is closed this long (simulated seconds at a simulator) after its end when
    # no update has started the next one: IB's keepUpToDate updates come every 4 to 6 s.
    bar_close_grace_s: float = Field(0.25, gt=0, le=5)
    # Where streamed minutes come from: keepUpToDate requests (each holds one of IB's ~50 open
    # historical requests), real-time 5-second bars aggregated to minutes (each holds a market
    # data line, at most 60), or `auto`: history for the first max_open_historical - 5 symbols,
    # real time for the rest.
    stream: Literal["historical", "realtime", "auto"] = "auto"
    # A stale stream is asked for again only after this long without a bar in real time too:
    # at a simulator's speed, or on a loaded Pi, a few seconds' lag is not a dead stream.
    resubscribe_after_s: float = Field(30.0, gt=0, le=DAY)
    record_bars: bool = False  # keep every delivered bar in SQLite (replay, audits)
    # Keep every option quote the service receives in SQLite (option_quotes), for a backtest to
    # fill from (`optionsbot backtest --bars THAT.sqlite`). Its own flag: a watched line ticks
    # many times a minute, far more rows than bars, on what may be a Pi's SD card.
    record_quotes: bool = False
    # A bar whose true range exceeds this many ATR(14) of the accepted bars before it (and
    # spike_floor_pct of the price) is held as suspect: dropped if the next bar reverts,
    # accepted without a signal if it confirms. The simulator's ordinary bars reach 4 ATR at
    # most (3 seeds x 6 symbols x 40 sessions); only session-open gaps pass 12, and persist.
    spike_atr_multiple: float = Field(12.0, ge=4, le=1000)
    spike_floor_pct: float = Field(0.005, gt=0, lt=1)
    # Before 14 bars give an ATR, only a move beyond this fraction of the price is suspect.
    spike_warmup_pct: float = Field(0.10, gt=0, lt=1)


class ScalpSettings(_Section):
    enabled: bool = True
    rsi_period: int = Field(14, ge=2, le=1000)
    ema_fast: int = Field(8, ge=2, le=1000)
    ema_slow: int = Field(21, ge=3, le=1000)
    rsi_buy_min: float = Field(45.0, ge=0, le=100)
    rsi_buy_max: float = Field(70.0, ge=0, le=100)
    rsi_sell_below: float = Field(40.0, ge=0, le=100)
    min_bars: int = Field(30, ge=1, le=10_000)
    # One idea per symbol per this many bars at most: a scalp signal repeats every bar.
    cooldown_bars: int = Field(15, ge=0, le=10_000)

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
    lookback_days: int = Field(20, ge=2, le=365)
    volume_multiple: float = Field(1.5, gt=0, le=1000)
    debounce_days: int = Field(3, ge=0, le=365)


class OptionSettings(_Section):
    moneyness: Literal["atm", "itm1", "otm1"] = "atm"
    strike_count: int = Field(5, ge=1, le=50)
    min_dte: int = Field(1, ge=0, le=365)
    allow_expiry_day: bool = False
    min_volume: float = Field(100, ge=0, le=1e9)
    max_spread_pct: float = Field(0.10, gt=0, le=1)
    spread_allowance: float = Field(0.10, ge=0, le=100)
    # A quote's age is the age of its last change as the service saw it (IB stamps nothing).
    max_quote_age_s: float = Field(10.0, gt=0, le=HOUR)
    quote_wait_s: float = Field(4.0, gt=0, le=HOUR)
    # A quote not seen to change within max_quote_age_s is watched on a line for this many real
    # seconds before an entry; only a change on it proves the quote alive (a frozen one sends none).
    quote_recheck_s: float = Field(1.0, gt=0, le=60)
    # Keep the strikes in play (calls and puts around each symbol's last close) streaming on
    # market data lines IB's limit leaves free, so an entry needs no quote request at all.
    warm_quotes: bool = True

    @model_validator(mode="after")
    def _recheck_shorter(self) -> OptionSettings:
        if self.quote_recheck_s >= self.max_quote_age_s:
            raise ValueError(
                "quote_recheck_s must be shorter than max_quote_age_s, or a recheck can never "
                "prove a quote fresh"
            )
        return self


class OrderSettings(_Section):
    take_profit_pct: float = Field(0.30, gt=0, le=10)
    stop_loss_pct: float = Field(0.20, gt=0, lt=1)
    entry_timeout_s: float = Field(
        120.0, gt=0, le=7 * DAY
    )  # simulated seconds an unfilled entry may wait
    paper_slippage_ticks: int = Field(0, ge=0, le=1000)
    # Close a position at the open of its option's expiry day instead of holding it into expiry.
    close_on_expiry_day: bool = True
    commission_per_contract: float = Field(0.65, ge=0, le=100)
    # A position found without a working stop for its full quantity: `protect` places a
    # take-profit and a stop (GTC) for the gap; `flatten` closes the gap at market.
    unprotected_action: Literal["protect", "flatten"] = "protect"


class RiskSettings(_Section):
    risk_per_trade: float = Field(0.01, gt=0, le=0.2)
    max_daily_loss_pct: float = Field(0.02, gt=0, le=1)
    max_open_positions: int = Field(3, ge=0, le=1000)
    max_contracts_per_order: int = Field(10, ge=1, le=10_000)
    max_premium_per_trade: float = Field(2000.0, gt=0, le=1e9)
    max_exposure_per_symbol: float = Field(5000.0, gt=0, le=1e9)
    no_entry_first_minutes: int = Field(5, ge=0, le=SESSION_MINUTES)
    no_entry_last_minutes: int = Field(15, ge=0, le=SESSION_MINUTES)
    # Close scalp positions this many minutes before the close (0: hold them, bracket only).
    flatten_scalps_before_close_minutes: int = Field(10, ge=0, le=SESSION_MINUTES)
    # The same for whale positions (0, the default: held across days, protected at the broker by
    # their GTC take-profit and stop).
    flatten_whales_before_close_minutes: int = Field(0, ge=0, le=SESSION_MINUTES)
    paper_equity: float = Field(100_000.0, gt=0, le=1e12)  # dry-run starting equity
    kill_switch_file: Path = Path("var/KILL")

    @field_validator("kill_switch_file")
    @classmethod
    def _kill_file(cls, v: Path) -> Path:
        return _writable(v, "kill switch file", "var/KILL")

    @model_validator(mode="after")
    def _some_entry_time(self) -> RiskSettings:
        if self.no_entry_first_minutes + self.no_entry_last_minutes >= SESSION_MINUTES:
            raise ValueError(
                f"no_entry_first_minutes + no_entry_last_minutes is {self.no_entry_first_minutes}"
                f" + {self.no_entry_last_minutes}, which covers the whole {SESSION_MINUTES}-minute"
                " session, so nothing would ever be traded; lower either (defaults 5 and 15)"
            )
        return self


class StorageSettings(_Section):
    path: Path = Path("var/optionsbot.sqlite")
    # Nightly online backups (SQLite's backup API) at backup_at, this machine's local time,
    # keeping the newest backup_keep; null turns them off. `optionsbot backup` does one now.
    backup_dir: Path | None = Path("var/backups")
    backup_keep: int = Field(7, ge=1, le=365)
    backup_at: str = Field("03:30", max_length=5)

    @field_validator("path")
    @classmethod
    def _path(cls, v: Path) -> Path:
        return v if str(v) == ":memory:" else _writable(v, "database file", "var/optionsbot.sqlite")

    @field_validator("backup_at")
    @classmethod
    def _backup_at(cls, v: str) -> str:
        if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", v):
            raise ValueError(f"{v!r} is not a time of day; use HH:MM, 24-hour, e.g. 03:30")
        return v

    @field_validator("backup_dir")
    @classmethod
    def _backup_dir(cls, v: Path | None) -> Path | None:
        if v is None:
            return None
        if str(v) in ("", "."):
            raise ValueError("is empty; name a directory, e.g. var/backups, or null for none")
        if v.exists() and not v.is_dir():
            raise ValueError(f"{v} is a file; name a directory for the backups")
        ancestor = v.absolute()
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            raise ValueError(f"cannot create or write {v}: fix its permissions or choose another")
        return v


class MetricsSettings(_Section):
    enabled: bool = True
    host: str = Field("127.0.0.1", pattern=HOST)
    port: int = Field(9108, ge=0, le=65535)  # 0: any free port


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_file: Path | None = Path("var/optionsbot.jsonl")
    # The JSON file rotates at this size, keeping `backups` old files (0: never rotates).
    max_bytes: int = Field(20_000_000, ge=0, le=10_000_000_000)
    backups: int = Field(5, ge=0, le=100)

    @field_validator("json_file")
    @classmethod
    def _json_file(cls, v: Path | None) -> Path | None:
        return None if v is None else _writable(v, "log file", "var/optionsbot.jsonl")


SYMBOL_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ.")
SECRET_FIELDS = {("broker", "account")}


class Settings(BaseSettings):
    """The whole service's settings. Environment overrides use OPTIONSBOT_SECTION__KEY."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
    )

    dry_run: bool = True
    live: LiveSettings = LiveSettings()
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
            u = s.upper()
            if (
                not u[:1].isalpha()
                or set(u) - SYMBOL_CHARS
                or len(u) > 8
                or ".." in u
                or u[-1] == "."
            ):
                raise ValueError(
                    f"{s!r} is not a US stock symbol (a letter, then letters and single dots,"
                    " up to 8, e.g. SPY or BRK.B)"
                )
            out.append(s.upper())
        if len(set(out)) != len(out):
            raise ValueError("a symbol is listed twice")
        return tuple(out)

    @model_validator(mode="after")
    def _streams_fit(self) -> Settings:
        from actors.pacing import MAX_REALTIME_STREAMS, stream_kinds

        b, n = self.broker, len(self.symbols)
        if self.data.stream == "historical" and n > b.max_open_historical:
            raise ValueError(
                f"{n} symbols need {n} open 1-minute streams but broker.max_open_historical is"
                f" {b.max_open_historical}: list fewer symbols, or set data.stream: auto (real-time"
                " bars, on market data lines, for the symbols beyond)"
            )
        realtime = sum(stream_kinds(self.symbols, self.data.stream, b.max_open_historical).values())
        if realtime > MAX_REALTIME_STREAMS:
            raise ValueError(
                f"data.stream: {self.data.stream} streams {realtime} symbols as real-time bars, but IB"
                f" allows {MAX_REALTIME_STREAMS} new ones in 10 minutes and every reconnect asks"
                " for all again: list fewer symbols"
            )
        # Each real-time stream holds a line; positions and one entry's quotes need some too.
        needed = realtime + min(self.risk.max_open_positions, 10) + self.options.strike_count + 2
        if realtime and needed > b.max_market_data_lines:
            raise ValueError(
                f"{realtime} real-time bar streams, the open positions' quotes and an entry's"
                f" {self.options.strike_count} strikes need {needed} market data lines but"
                f" broker.max_market_data_lines is {b.max_market_data_lines}: list fewer symbols,"
                " or lower options.strike_count"
            )
        return self

    @model_validator(mode="after")
    def _files_apart(self) -> Settings:
        files = {
            "storage.path": self.storage.path,
            "log.json_file": self.log.json_file,
            "risk.kill_switch_file": self.risk.kill_switch_file,
        }
        seen: dict[Path, str] = {}
        for name, path in files.items():
            if path is None:
                continue
            key = path.absolute()
            if key in seen:
                raise ValueError(
                    f"{name} and {seen[key]} are the same file ({path}); give each its own"
                )
            seen[key] = name
        return self

    @model_validator(mode="after")
    def _live_opt_in(self) -> Settings:
        """Real orders need a typed opt-in and an account, and never trade on delayed quotes.

        The embedded simulator is exempt from the opt-in and the account: it is started by the
        service itself on a loopback port, so no order can reach a real account, and demanding the
        sentence where no money is at stake would teach people to paste it without reading.
        """
        if self.dry_run:
            return self
        problems = []
        b = self.broker
        if b.market_data_type in (3, 4) or b.delayed_data_fallback:
            problems.append(
                "broker.market_data_type / broker.delayed_data_fallback: live orders are never"
                " placed on delayed quotes (15-20 minutes old); use market_data_type 1 and"
                " delayed_data_fallback false, or keep dry_run: true"
            )
        if b.mode == "gateway":
            if not (self.live.enabled and self.live.confirm == LIVE_CONFIRMATION):
                problems.append(
                    "live: dry_run is false, so real orders would go to the Gateway; to mean it,"
                    f' set live.enabled: true and live.confirm: "{LIVE_CONFIRMATION}" (or keep'
                    " dry_run: true)"
                )
            if not b.account.get_secret_value():
                problems.append(
                    "broker.account: live orders need the account id; set"
                    " OPTIONSBOT_BROKER__ACCOUNT in the environment"
                )
        if problems:
            raise ValueError("\n".join(problems))
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


def _describe(err: dict[str, Any]) -> list[str]:
    path = tuple(err.get("loc", ()))
    loc = ".".join(str(p) for p in path)
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return [f"{loc}: unknown setting; check its spelling against configs/default.yaml"]
    if kind == "missing":
        return [f"{loc}: required; add it"]
    if not loc:  # a whole-model rule: its lines name their fields themselves
        return msg.splitlines()
    given = err.get("input")
    # A section that holds a secret is not echoed either: `broker: U1234567` is the account.
    secret = any(path[: len(f)] == f or f[: len(path)] == path for f in SECRET_FIELDS)
    shown = "" if secret or isinstance(given, dict | list | tuple) else f" (got {_short(given)})"
    return [f"{loc}: {line}{shown}" for line in msg.splitlines()]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses what YAML would otherwise resolve silently.

    A duplicate key keeps the last value (`dry_run: true` then `dry_run: false` runs live), and
    YAML 1.1 reads `on:` as the boolean true and `1:` as an integer, not a setting's name.
    """


def _strict_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"the key {_short(key)} is not a setting's name (YAML reads it as"
                f" {type(key).__name__}); names are words like dry_run",
                key_node.start_mark,
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{key!r} is given twice (first at line {seen[key]}); keep one",
                key_node.start_mark,
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


# What YAML refuses as text: C0 controls but tab/LF/CR, DEL, C1 but NEL, surrogates, U+FFFE/F.
_NOT_TEXT = yaml.reader.Reader.NON_PRINTABLE


def _read_yaml(source: Path) -> Any:
    try:
        with source.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(source), [f"cannot read the file: {exc.strerror}"]) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(str(source), [f"over {MAX_FILE_BYTES} bytes: not a settings file"])
    if b"\x00" in data:
        raise ConfigError(str(source), ["a binary file, not YAML text; check the path"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(source),
            [f"not UTF-8 text (byte {exc.start}); save it as UTF-8 or check the path"],
        ) from None
    bad = _NOT_TEXT.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise ConfigError(
            str(source),
            [
                f"control character U+{ord(bad.group()):04X} at line {line}, column {column}:"
                " a binary file, not YAML text; check the path"
            ],
        )
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            str(source), [f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"]
        ) from None
    except (RecursionError, MemoryError):
        raise ConfigError(str(source), ["nested too deeply to be a settings file"]) from None


def _setting_names() -> set[str]:
    """Every OPTIONSBOT_* name pydantic-settings reads, upper case."""
    names = set()
    for name, field in Settings.model_fields.items():
        top = ENV_PREFIX + name.upper()
        names.add(top)
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            names |= {f"{top}__{k.upper()}" for k in sub.model_fields}
    return names


def unknown_env(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """OPTIONSBOT_* variables that match no setting: pydantic-settings ignores them silently."""
    known = _setting_names()
    problems = []
    squashed = {k.replace("_", ""): k for k in known}
    for var in sorted(environ):
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper in OTHER_ENV:
            continue
        # A mapping setting's own keys (OPTIONSBOT_BROKER__TIMEOUTS_S__HISTORICAL) are read too.
        if any(upper.startswith(k + "__") for k in known if "__" in k):
            continue
        guess = squashed.get(upper.replace("_", "")) or next(
            iter(difflib.get_close_matches(upper, known, n=1, cutoff=0.8)), None
        )
        hint = f"did you mean {guess}?" if guess else "check its name against configs/settings.py"
        # The value is never shown: this variable may be the account id under a wrong name.
        problems.append(f"{var}: not a setting, so it would be ignored; {hint}")
    return problems


def load_settings(
    path: Path | str | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Read a YAML file (default: the embedded-simulator defaults) and the environment.

    Raises ConfigError naming every bad field; never a traceback for bad input.
    """
    source = Path(path) if path else DEFAULT_FILE
    if path and not source.exists():
        raise ConfigError(str(source), ["the file does not exist"])
    if source.is_dir():
        raise ConfigError(str(source), ["a directory, not a settings file"])
    raw = _read_yaml(source) if source.exists() else None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(str(source), ["the top level must be a mapping of settings"])
    stray = unknown_env(os.environ if environ is None else environ)
    if stray:
        raise ConfigError("the environment", stray)
    old_env = None
    if environ is not None:
        old_env = dict(os.environ)
        os.environ.clear()
        os.environ.update(environ)
    try:
        return Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(str(source), [p for e in exc.errors() for p in _describe(e)]) from None
    except SettingsError as exc:
        # Lists and mappings in the environment are JSON: OPTIONSBOT_SYMBOLS='["SPY","QQQ"]'.
        raise ConfigError(
            "the environment",
            [
                f"{_env_field(exc)}: not valid JSON; lists and mappings in OPTIONSBOT_* variables"
                " are JSON, e.g. '[\"SPY\"]'"
            ],
        ) from None
    except (OverflowError, RecursionError, MemoryError) as exc:
        raise ConfigError(str(source), [f"a value is out of range: {exc}"]) from None
    finally:
        if old_env is not None:
            os.environ.clear()
            os.environ.update(old_env)


def _env_field(exc: SettingsError) -> str:
    # 'error parsing value for field "symbols" from source "EnvSettingsSource"': name the field
    # without the value, which may be a secret.
    text = str(exc)
    start = text.find('field "')
    if start < 0:
        return "an OPTIONSBOT_* variable"
    name = text[start + 7 : text.find('"', start + 7)]
    return ENV_PREFIX + name.upper()

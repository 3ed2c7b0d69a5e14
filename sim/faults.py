"""Gateway faults on demand: the scenario file model, its validation, and the injector that decides when each fault applies."""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from sim.config import PacingOptions, SimOptions
from sim.latency import LatencyOptions
from sim.protocol import EASTERN, In

# Request kinds an `after` trigger counts, by the message id a client sends.
REQUEST_KINDS: dict[int, str] = {
    In.REQ_HISTORICAL_DATA: "historical",
    In.REQ_MKT_DATA: "market_data",
    In.PLACE_ORDER: "order",
    In.CANCEL_ORDER: "cancel_order",
    In.REQ_CONTRACT_DATA: "contract_details",
    In.REQ_SEC_DEF_OPT_PARAMS: "sec_def",
    In.START_API: "connect",
    In.REQ_REAL_TIME_BARS: "realtime_bars",
    In.REQ_ACCT_DATA: "account",
    In.REQ_POSITIONS: "account",
    In.REQ_EXECUTIONS: "account",
}
REQUEST_KIND_NAMES = frozenset(REQUEST_KINDS.values()) | {"any", "other"}

FARM_TEXTS: dict[int, str] = {
    2103: "Market data farm connection is broken:{farm}",
    2104: "Market data farm connection is OK:{farm}",
    2105: "HMDS data farm connection is broken:{farm}",
    2106: "HMDS data farm connection is OK:{farm}",
    2107: "HMDS data farm connection is inactive but should be available upon demand.{farm}",
    2108: "Market data farm connection is inactive but should be available upon demand.{farm}",
    2157: "Sec-def data farm connection is broken:{farm}",
    2158: "Sec-def data farm connection is OK:{farm}",
}
FARM_NAMES = {
    2103: "usfarm",
    2104: "usfarm",
    2108: "usfarm",
    2105: "ushmds",
    2106: "ushmds",
    2107: "ushmds",
    2157: "secdefnj",
    2158: "secdefnj",
}
# A broken farm reports OK again with this code when its fault ends.
FARM_RECOVERY = {2103: 2104, 2105: 2106, 2157: 2158}


class ScenarioError(ValueError):
    """A scenario or fault that cannot be used; the message names the offending key."""


# ---------------------------------------------------------------------- value parsers

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|h|m|s|d)", re.I)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, key: str = "duration", signed: bool = False) -> timedelta:
    """ "90", 90, "90s", "4m", "+15m", "1h30m", "-30s" (with `signed`) as a timedelta."""
    if isinstance(value, timedelta):
        td = value
    elif isinstance(value, bool):
        raise ScenarioError(f"{key}: expected a duration such as '4m' or '90s', got {value!r}")
    elif isinstance(value, int | float):
        td = timedelta(seconds=float(value))
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        sign = 1.0
        if text and text[0] in "+-":
            sign = -1.0 if text[0] == "-" else 1.0
            text = text[1:]
        try:
            td = timedelta(seconds=sign * float(text))
        except ValueError:
            pos, total = 0, 0.0
            for m in _DURATION_PART.finditer(text):
                if m.start() != pos:
                    break
                total += float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]
                pos = m.end()
            if not text or pos != len(text):
                raise ScenarioError(
                    f"{key}: expected a duration such as '4m', '90s' or '1h30m', got {value!r}"
                ) from None
            td = timedelta(seconds=sign * total)
    else:
        raise ScenarioError(f"{key}: expected a duration such as '4m' or '90s', got {value!r}")
    if td < timedelta(0) and not signed:
        raise ScenarioError(f"{key}: must not be negative, got {value!r}")
    return td


def parse_when(value: Any, key: str) -> datetime | timedelta:
    """A simulated instant: an ISO time (no zone: US/Eastern) or "+15m" from the simulation's start."""
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, date):
        raise ScenarioError(f"{key}: a date needs a time of day, got {value!r}")
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ScenarioError(f"{key}: must not be before the start, got {value!r}")
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return parse_duration(value, key)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("+") or _DURATION_PART.fullmatch(text.lower()) or text.isdigit():
            return parse_duration(text, key)
        try:
            return _aware(datetime.fromisoformat(text))
        except ValueError:
            pass
        try:
            return parse_duration(text, key)
        except ScenarioError:
            pass
    raise ScenarioError(
        f"{key}: expected an ISO time (US/Eastern unless zoned) or '+15m' from the start, got {value!r}"
    )


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=EASTERN).astimezone(UTC) if t.tzinfo is None else t.astimezone(UTC)


def _positive_number(value: Any, key: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{key}: expected a number of real seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ScenarioError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ScenarioError(f"{key}: expected a positive integer, got {value!r}")
    return value


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"{key}: expected true or false, got {value!r}")
    return value


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(f"{key}: expected a non-empty string, got {value!r}")
    return value.strip()


def _choice(*options: Any) -> Callable[[Any, str], Any]:
    def parse(value: Any, key: str) -> Any:
        if value not in options:
            raise ScenarioError(f"{key}: expected one of {list(options)}, got {value!r}")
        return value

    return parse


def _fraction_or_range(upper_inclusive: bool) -> Callable[[Any, str], tuple[float, float]]:
    """A fraction, or [low, high] to draw one per fill from the seeded generator."""

    def one(v: Any, key: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ScenarioError(f"{key}: expected a fraction, got {v!r}")
        ok = 0 < v <= 1 if upper_inclusive else 0 < v < 1
        if not ok:
            bound = "<= 1" if upper_inclusive else "< 1"
            raise ScenarioError(f"{key}: must be > 0 and {bound}, got {v!r}")
        return float(v)

    def parse(value: Any, key: str) -> tuple[float, float]:
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise ScenarioError(f"{key}: expected a fraction or [low, high], got {value!r}")
            lo, hi = one(value[0], key), one(value[1], key)
            if lo > hi:
                raise ScenarioError(f"{key}: low must not exceed high, got {value!r}")
            return (lo, hi)
        f = one(value, key)
        return (f, f)

    return parse


def _ticks(value: Any, key: str) -> tuple[int, int]:
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ScenarioError(f"{key}: expected a tick count or [low, high], got {value!r}")
        lo, hi = _positive_int(value[0], key), _positive_int(value[1], key)
        if lo > hi:
            raise ScenarioError(f"{key}: low must not exceed high, got {value!r}")
        return (lo, hi)
    n = _positive_int(value, key)
    return (n, n)


def _positive_float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ScenarioError(f"{key}: expected a positive number, got {value!r}")
    return float(value)


def _what(value: Any, key: str) -> str:
    return _choice("option", "stock", "both")(value, key)


def _farm_code(value: Any, key: str) -> int:
    if value not in FARM_TEXTS:
        raise ScenarioError(f"{key}: expected one of {sorted(FARM_TEXTS)}, got {value!r}")
    return int(value)


def _signed_duration(value: Any, key: str) -> timedelta:
    td = parse_duration(value, key, signed=True)
    if not td:
        raise ScenarioError(f"{key}: must not be zero")
    return td


# ---------------------------------------------------------------------- fault kinds


@dataclass(frozen=True)
class Param:
    parse: Callable[[Any, str], Any]
    default: Any = None
    required: bool = False


@dataclass(frozen=True)
class KindSpec:
    """What a fault kind is: a one-off event, a window with a start and an end, or a condition."""

    shape: str  # "event", "window" or "condition"
    request: str  # the request kind `after` counts by default
    params: Mapping[str, Param] = field(default_factory=dict)
    summary: str = ""


KINDS: dict[str, KindSpec] = {
    "history_stall": KindSpec(
        "condition",
        "historical",
        summary="historical requests are received and never answered, not even with an error",
    ),
    "history_delay": KindSpec(
        "condition",
        "historical",
        {"delay_seconds": Param(_positive_number, required=True)},
        "historical requests are answered after delay_seconds real seconds",
    ),
    "disconnect": KindSpec("event", "any", summary="the connection drops"),
    "gateway_restart": KindSpec(
        "event",
        "any",
        {
            "down_seconds": Param(lambda v, k: _positive_number(v, k, allow_zero=True), 5.0),
            "lost_seconds": Param(lambda v, k: _positive_number(v, k, allow_zero=True), 0.0),
        },
        "every client is dropped; connections are closed on accept for down_seconds real seconds "
        "(with lost_seconds: first 1100 and no data for that many real seconds, as the Gateway "
        "logs out of IB's servers before it restarts)",
    ),
    "server_reset": KindSpec(
        "window",
        "any",
        {
            "style": Param(_choice("farms", "connectivity"), "farms"),
            "flaps": Param(_positive_int, 2),
        },
        "IB's nightly server reset: the market data and HMDS farms (2103/2105, then 2104/2106) or "
        "the connectivity (1100, then 1102) go down and up `flaps` times across the window",
    ),
    "reauth_required": KindSpec(
        "window",
        "connect",
        summary="the weekly re-authentication: every client is dropped at the start, and "
        "connections are closed on accept until the window ends (a Gateway at its login dialog)",
    ),
    "connectivity_lost": KindSpec(
        "window",
        "any",
        {"restore": Param(_choice("data_kept", "data_lost"), "data_kept")},
        "1100 and no streaming until the window ends, then 1102 (data kept) or 1101 (data lost)",
    ),
    "farm": KindSpec(
        "window",
        "any",
        {"code": Param(_farm_code, required=True), "farm": Param(_text)},
        "a farm message; a broken farm (2103/2105/2157) holds its data until the window ends",
    ),
    "client_id_in_use": KindSpec(
        "condition",
        "connect",
        {
            "mode": Param(_choice("always", "quick_reconnect"), "quick_reconnect"),
            "within_seconds": Param(_positive_number, 60.0),
        },
        "326 and a closed socket, always or for a reconnect within within_seconds real seconds",
    ),
    "no_entitlement": KindSpec(
        "condition",
        "market_data",
        {
            "code": Param(_choice(354, 10089), 10089),
            "delayed": Param(_boolean, True),
        },
        "live quotes never arrive (354/10089); delayed data (type 3/4) works with 10167",
    ),
    "empty_chain": KindSpec(
        "condition", "sec_def", summary="reqSecDefOptParams answers only its end marker"
    ),
    "contract_not_found": KindSpec(
        "condition", "contract_details", summary="every request for the symbol gets error 200"
    ),
    "order_reject": KindSpec(
        "condition",
        "order",
        {
            "reason": Param(
                _text,
                "YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED POSITION YOUR EQUITY "
                "WITH LOAN VALUE MUST EXCEED THE INITIAL MARGIN",
            )
        },
        "new orders get error 201 with the reason and never go live",
    ),
    "exchange_cancel": KindSpec(
        "event",
        "order",
        {"reason": Param(_text, "")},
        "live orders are cancelled by the exchange: Cancelled and error 202",
    ),
    "partial_fill": KindSpec(
        "condition",
        "order",
        {"fraction": Param(_fraction_or_range(upper_inclusive=False), (0.5, 0.5))},
        "each simulation step fills only a fraction of what remains",
    ),
    "slippage": KindSpec(
        "condition",
        "order",
        {"ticks": Param(_ticks, (1, 1))},
        "fills are worse by a number of ticks (never through a limit price)",
    ),
    "fill_after_cancel": KindSpec(
        "condition",
        "cancel_order",
        {"fraction": Param(_fraction_or_range(upper_inclusive=True), (1.0, 1.0))},
        "a cancel meets a fill: PendingCancel, then a fill, then Cancelled for any rest",
    ),
    "read_only": KindSpec(
        "condition", "order", summary="every placeOrder gets error 321 (Read-Only mode)"
    ),
    "clock_jump": KindSpec(
        "event",
        "any",
        {"by": Param(_signed_duration, required=True)},
        "simulated time jumps by `by` (negative: backwards)",
    ),
    # Bad quotes: what the client is sent (snapshots and lines); matching at the simulated
    # exchange goes on with the true market. `what` picks options, stock or both.
    "quote_zero": KindSpec(
        "window",
        "market_data",
        {"side": Param(_choice("bid", "ask", "both"), "both"), "what": Param(_what, "option")},
        "bid and/or ask sent as 0.00 with a size (synthetic: IB sends -1 for an empty side)",
    ),
    "quote_negative": KindSpec(
        "window",
        "market_data",
        {"side": Param(_choice("bid", "ask", "both"), "both"), "what": Param(_what, "option")},
        "bid and/or ask sent as -1 with a size: IB's 'no price' value (ib_async turns -1 into "
        "NaN only when the size is 0)",
    ),
    "quote_crossed": KindSpec(
        "window",
        "market_data",
        {"by": Param(_positive_float, 0.05), "what": Param(_what, "option")},
        "the bid is sent `by` above the ask (locked/crossed markets happen across exchanges)",
    ),
    "quote_frozen": KindSpec(
        "window",
        "market_data",
        {"what": Param(_what, "option")},
        "quotes stop changing while the market moves: snapshots answer the values at the fault's "
        "start and lines send no new tick (a stalled feed; IB re-sends the held values on a new line)",
    ),
    # Bad bars (synthetic prints): in keepUpToDate updates and in historical answers.
    "bar_spike": KindSpec(
        "window",
        "historical",
        {"factor": Param(_positive_float, 10.0), "every": Param(_positive_int, 10)},
        "bars starting in the window, one minute in `every`, come with OHLC x factor",
    ),
    "bar_duplicate": KindSpec(
        "window",
        "historical",
        {"every": Param(_positive_int, 1)},
        "historical answers carry one bar in `every` twice; stream updates repeat the closed bar",
    ),
    "bar_out_of_order": KindSpec(
        "window",
        "historical",
        {"every": Param(_positive_int, 10)},
        "historical answers swap one pair of adjacent bars in `every`; stream updates re-send "
        "the previous bar after the newest",
    ),
}

QUOTE_FAULTS = ("quote_zero", "quote_negative", "quote_crossed", "quote_frozen")
BAR_FAULTS = ("bar_spike", "bar_duplicate", "bar_out_of_order")

COMMON_KEYS = (
    "kind",
    "repeat",
    "name",
    "at",
    "after",
    "request",
    "symbol",
    "symbols",
    "client_id",
    "client_ids",
    "until",
    "duration",
)


# Compared and hashed by identity: two faults with the same settings are still two faults.
@dataclass(frozen=True, eq=False)
class Fault:
    """One fault: what happens (kind, params), when (at/after, until/duration) and to whom (symbols, client ids).

    `at` and `until` are simulated instants (a timedelta is relative to the simulation's start);
    `duration` is simulated time from the trigger; params ending in `_seconds` are real seconds.
    """

    kind: str
    at: datetime | timedelta | None = None
    after: int | None = None
    # The request kind `after` counts (REQUEST_KINDS values, or "any").
    request: str = "any"
    symbols: frozenset[str] | None = None
    client_ids: frozenset[int] | None = None
    until: datetime | timedelta | None = None
    duration: timedelta | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""
    # A routine: the fault comes back this long after each start (simulated time), e.g. 1d.
    repeat: timedelta | None = None

    @property
    def spec(self) -> KindSpec:
        return KINDS[self.kind]

    @property
    def label(self) -> str:
        return self.name or self.kind

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def matches(self, symbol: str | None = None, client_id: int | None = None) -> bool:
        if self.symbols is not None and (symbol is None or symbol.upper() not in self.symbols):
            return False
        return not (
            self.client_ids is not None and (client_id is None or client_id not in self.client_ids)
        )


def make_fault(kind: str, where: str = "fault", **values: Any) -> Fault:
    """Validate and normalise one fault's keys; ScenarioError names the first bad one."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise ScenarioError(f"{where}.kind: unknown fault kind {kind!r} (known: {sorted(KINDS)})")
    spec = KINDS[kind]
    known = set(COMMON_KEYS) | set(spec.params)
    for key in values:
        if key not in known:
            raise ScenarioError(
                f"{where}.{key}: unknown key for a {kind} fault (known: {sorted(known - {'kind'})})"
            )
    at = after = until = duration = None
    if values.get("at") is not None:
        at = parse_when(values["at"], f"{where}.at")
    if values.get("after") is not None:
        v = values["after"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ScenarioError(f"{where}.after: expected a request count >= 0, got {v!r}")
        after = v
    if at is not None and after is not None:
        raise ScenarioError(f"{where}: use either 'at' or 'after', not both")
    request = values.get("request") or spec.request
    if request not in REQUEST_KIND_NAMES:
        raise ScenarioError(
            f"{where}.request: expected one of {sorted(REQUEST_KIND_NAMES)}, got {request!r}"
        )
    if values.get("until") is not None:
        until = parse_when(values["until"], f"{where}.until")
    if values.get("duration") is not None:
        duration = parse_duration(values["duration"], f"{where}.duration")
    if until is not None and duration is not None:
        raise ScenarioError(f"{where}: use either 'until' or 'duration', not both")
    if spec.shape == "event" and (until is not None or duration is not None):
        extra = " (its downtime is down_seconds)" if kind == "gateway_restart" else ""
        raise ScenarioError(
            f"{where}: a {kind} fault happens once and takes no 'until' or 'duration'{extra}"
        )
    repeat = None
    if values.get("repeat") is not None:
        repeat = parse_duration(values["repeat"], f"{where}.repeat")
        if repeat <= timedelta(0):
            raise ScenarioError(f"{where}.repeat: must be longer than 0")
        if at is None:
            raise ScenarioError(f"{where}.repeat: a routine needs 'at', the first time it comes")
        if until is not None:
            raise ScenarioError(
                f"{where}.repeat: use 'duration' for a routine's length, not 'until'"
            )
        if duration is not None and duration >= repeat:
            raise ScenarioError(
                f"{where}.duration: must be shorter than 'repeat' ({values['repeat']})"
            )
    symbols = _symbols(values, where)
    client_ids = _client_ids(values, where)
    params: dict[str, Any] = {}
    for pname, p in spec.params.items():
        if values.get(pname) is not None:
            params[pname] = p.parse(values[pname], f"{where}.{pname}")
        elif p.required:
            raise ScenarioError(f"{where}.{pname}: required for a {kind} fault")
        else:
            params[pname] = p.default
    if kind == "farm" and not params.get("farm"):
        params["farm"] = FARM_NAMES[params["code"]]
    if kind == "client_id_in_use" and params["mode"] == "always" and client_ids is None:
        raise ScenarioError(f"{where}.client_id: mode 'always' needs the client ids it refuses")
    name = values.get("name") or ""
    if not isinstance(name, str):
        raise ScenarioError(f"{where}.name: expected a string, got {name!r}")
    return Fault(
        kind, at, after, request, symbols, client_ids, until, duration, params, name, repeat
    )


def _symbols(values: Mapping[str, Any], where: str) -> frozenset[str] | None:
    raw = values.get("symbols") if values.get("symbols") is not None else values.get("symbol")
    if raw is None or raw == "all" or raw == "*":
        return None
    if isinstance(raw, str):
        raw = [s for s in raw.split(",") if s.strip()]
    if not isinstance(raw, list | tuple | set | frozenset) or not raw:
        raise ScenarioError(f"{where}.symbol: expected a symbol or a list of symbols, got {raw!r}")
    out = set()
    for s in raw:
        if not isinstance(s, str) or not s.strip():
            raise ScenarioError(f"{where}.symbol: expected symbols as strings, got {s!r}")
        out.add(s.strip().upper())
    return frozenset(out)


def _client_ids(values: Mapping[str, Any], where: str) -> frozenset[int] | None:
    raw = (
        values.get("client_ids")
        if values.get("client_ids") is not None
        else values.get("client_id")
    )
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list | tuple | set | frozenset) or not raw:
        raise ScenarioError(f"{where}.client_id: expected a client id or a list, got {raw!r}")
    for c in raw:
        if isinstance(c, bool) or not isinstance(c, int):
            raise ScenarioError(f"{where}.client_id: expected integers, got {c!r}")
    return frozenset(raw)


# ---------------------------------------------------------------------- scenario


# By identity, like Fault, so SimOptions holding one stays hashable.
@dataclass(frozen=True, eq=False)
class Scenario:
    """A scenario file: optional simulator settings, pacing overrides and a list of faults."""

    name: str = ""
    description: str = ""
    seed: int | None = None
    start: datetime | None = None
    time_scale: float | None = None
    skip_closed: bool | None = None
    symbols: tuple[str, ...] | None = None
    pacing: Mapping[str, Any] = field(default_factory=dict)
    latency: LatencyOptions | None = None
    faults: tuple[Fault, ...] = ()
    source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ScenarioError(f"{p}: cannot read the scenario file: {e.strerror or e}") from None
        return cls.from_yaml(text, source=str(p), default_name=p.stem)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<scenario>", default_name: str = "") -> Scenario:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ScenarioError(f"{source}: not valid YAML{where}: {problem}") from None
        if data is None:
            data = {}
        try:
            return cls.from_dict(data, source=source, default_name=default_name)
        except ScenarioError as e:
            raise ScenarioError(f"{source}: {e}") from None

    @classmethod
    def from_dict(cls, data: Any, source: str = "<scenario>", default_name: str = "") -> Scenario:
        if not isinstance(data, Mapping):
            raise ScenarioError(f"the scenario must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"source"}
        for key in data:
            if key not in known:
                raise ScenarioError(f"{key}: unknown key (known: {sorted(known)})")
        seed = data.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ScenarioError(f"seed: expected an integer, got {seed!r}")
        start = None
        if data.get("start") is not None:
            when = parse_when(data["start"], "start")
            if isinstance(when, timedelta):
                raise ScenarioError(f"start: expected an ISO time, got {data['start']!r}")
            start = when
        time_scale = data.get("time_scale")
        if time_scale is not None:
            time_scale = _positive_number(time_scale, "time_scale")
        skip_closed = data.get("skip_closed")
        if skip_closed is not None:
            skip_closed = _boolean(skip_closed, "skip_closed")
        symbols = None
        if data.get("symbols") is not None:
            raw = data["symbols"]
            if isinstance(raw, str):
                raw = raw.split(",")
            if not isinstance(raw, list) or not all(isinstance(x, str) and x.strip() for x in raw):
                raise ScenarioError(f"symbols: expected a list of symbols, got {data['symbols']!r}")
            symbols = tuple(dict.fromkeys(x.strip().upper() for x in raw))
        pacing = _pacing_overrides(data.get("pacing"))
        latency = None
        if data.get("latency") is not None:
            try:
                latency = LatencyOptions.parse(data["latency"])
            except ValueError as e:
                raise ScenarioError(str(e)) from None
        raw_faults = data.get("faults") or []
        if not isinstance(raw_faults, list):
            raise ScenarioError(f"faults: expected a list, got {type(raw_faults).__name__}")
        faults = []
        for i, raw in enumerate(raw_faults):
            where = f"faults[{i}]"
            if not isinstance(raw, Mapping):
                raise ScenarioError(f"{where}: expected a mapping with a 'kind', got {raw!r}")
            if "kind" not in raw:
                raise ScenarioError(f"{where}.kind: missing (known kinds: {sorted(KINDS)})")
            values = {k: v for k, v in raw.items() if k != "kind"}
            for k in values:
                if k is True:
                    # YAML 1.1 reads a bare `on` key as true.
                    raise ScenarioError(f"{where}: a key reads as true; write 'request', not 'on'")
                if not isinstance(k, str):
                    raise ScenarioError(f"{where}: keys must be strings, got {k!r}")
            faults.append(make_fault(raw["kind"], where, **values))
        name = data.get("name") or default_name
        description = data.get("description") or ""
        if not isinstance(name, str) or not isinstance(description, str):
            raise ScenarioError("name and description must be strings")
        return cls(
            name=name,
            description=description,
            seed=seed,
            start=start,
            time_scale=time_scale,
            skip_closed=skip_closed,
            symbols=symbols,
            pacing=pacing,
            latency=latency,
            faults=tuple(faults),
            source=source,
        )

    def apply(self, options: SimOptions, **explicit: Any) -> SimOptions:
        """`options` with this scenario's settings and faults; `explicit` values win over both."""
        changes: dict[str, Any] = {"scenario": self}
        for key in ("seed", "start", "time_scale", "skip_closed", "symbols", "latency"):
            value = getattr(self, key)
            if value is not None:
                changes[key] = value
        pacing = options.pacing
        if self.pacing:
            pacing = pacing.updated(dict(self.pacing))
        changes["pacing"] = pacing
        for key, value in explicit.items():
            if value is not None:
                changes[key] = value
        return replace(options, **changes)


def _pacing_overrides(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, bool):
        return {"enabled": raw}
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"pacing: expected a mapping or true/false, got {raw!r}")
    known = {f.name: f for f in fields(PacingOptions)}
    defaults = PacingOptions()
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ScenarioError(f"pacing.{key}: unknown key (known: {sorted(known)})")
        expected = type(getattr(defaults, key))
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            raise ScenarioError(f"pacing.{key}: expected {expected.__name__}, got {value!r}")
        out[key] = value
    try:
        defaults.updated(out)
    except ValueError as e:
        raise ScenarioError(f"pacing: {e}") from None
    return out


# ---------------------------------------------------------------------- injector


@dataclass
class _Armed:
    fault: Fault
    index: int
    rng: random.Random
    state: str = "pending"  # pending -> active -> ended
    seen: int = 0
    started: datetime | None = None
    ends: datetime | None = None
    # A routine's next start (Fault.repeat); None until its first start.
    next_at: datetime | None = None


# A routine whose time passed more than this ago (its window included) is skipped, not run late.
ROUTINE_GRACE = timedelta(minutes=5)


class FaultInjector:
    """Decides which faults apply now; the server asks it and carries the effects out.

    Triggers: `at` (simulated time), `after` N matching requests (counted by `observe`, and the
    fault starts once the Nth has been handled), or neither (from the start). `poll(now)` moves
    faults through pending -> active -> ended and returns the ones that started and ended.
    Safe to call `add` from another thread than the simulator's.
    """

    def __init__(self, origin: datetime | None = None, seed: int = 7) -> None:
        self.origin = origin or datetime.now(UTC)
        self.seed = seed
        self.counts: Counter[str] = Counter()
        self._armed: list[_Armed] = []
        self._lock = threading.RLock()
        self._next_index = 0

    # -- building ------------------------------------------------------------

    def add(self, kind: str | Fault, **values: Any) -> Fault:
        """Add a fault: `add("history_stall", after=3, symbol="SPY")` or `add(fault)`."""
        fault = kind if isinstance(kind, Fault) else make_fault(kind, "fault", **values)
        if isinstance(kind, Fault) and values:
            raise TypeError("pass either a Fault or a kind with keyword values")
        with self._lock:
            index = self._next_index
            self._next_index += 1
            # One generator per fault, so adding a fault never changes another one's draws.
            rng = random.Random(f"{self.seed}:{index}:{fault.kind}")
            self._armed.append(_Armed(fault, index, rng))
        return fault

    def load(self, faults: Scenario | Iterable[Fault]) -> None:
        for f in faults.faults if isinstance(faults, Scenario) else faults:
            self.add(f)

    def remove(self, fault: Fault) -> None:
        with self._lock:
            self._armed = [a for a in self._armed if a.fault is not fault]

    def clear(self) -> None:
        with self._lock:
            self._armed = []

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return [a.fault for a in self._armed]

    def state(self, fault: Fault) -> str:
        with self._lock:
            for a in self._armed:
                if a.fault is fault:
                    return a.state
        raise KeyError(fault)

    # -- triggers ------------------------------------------------------------

    def resolve(self, when: datetime | timedelta) -> datetime:
        return self.origin + when if isinstance(when, timedelta) else when

    def observe(self, kind: str, symbol: str | None = None, client_id: int | None = None) -> None:
        """Count one request of `kind` for the pending faults waiting for their Nth."""
        with self._lock:
            for a in self._armed:
                f = a.fault
                if a.state != "pending" or f.after is None:
                    continue
                if f.request != "any" and f.request != kind:
                    continue
                if not f.matches(symbol, client_id):
                    continue
                a.seen += 1

    def poll(self, now: datetime) -> tuple[list[Fault], list[Fault]]:
        """Start and end faults due at `now`; returns (started, ended), each in the order added."""
        started: list[Fault] = []
        ended: list[Fault] = []
        with self._lock:
            for a in self._armed:
                f = a.fault
                if a.state == "pending" and self._due(a, now):
                    if f.repeat is not None:
                        due = a.next_at or self.resolve(f.at)  # type: ignore[arg-type]
                        if now >= due + (f.duration or timedelta(0)) + ROUTINE_GRACE:
                            # The clock jumped over this one (a closed market skipped): wait
                            # for the next, rather than running a night's reset at the open.
                            a.next_at = due
                            self._rearm(a, now)
                            continue
                    a.state = "active"
                    # A scheduled fault started when it was due, not when a (late) step saw it:
                    # "bars from the window's start" must not depend on how busy the machine is.
                    a.started = (
                        min(now, a.next_at or self.resolve(f.at)) if f.at is not None else now
                    )
                    if f.repeat is not None and f.duration is not None:
                        # A routine keeps its schedule: it ends when its window ends.
                        a.ends = (a.next_at or self.resolve(f.at)) + f.duration  # type: ignore[arg-type]
                    elif f.duration is not None:
                        a.ends = now + f.duration
                    elif f.until is not None:
                        a.ends = self.resolve(f.until)
                    started.append(f)
                    if f.spec.shape == "event":
                        a.state = "ended"
                        self.counts[f.kind] += 1
                        self._rearm(a, now)
                        continue
                if a.state == "active" and a.ends is not None and now >= a.ends:
                    a.state = "ended"
                    ended.append(f)
                    self._rearm(a, now)
        return started, ended

    def _rearm(self, a: _Armed, now: datetime) -> None:
        """A routine goes back to pending for its next time after `now` (missed ones are skipped:
        a clock that jumped over three nights does not replay three resets at once)."""
        f = a.fault
        if f.repeat is None or f.at is None:
            return
        nxt = a.next_at or self.resolve(f.at)
        while nxt <= now:
            nxt += f.repeat
        a.next_at = nxt
        a.state = "pending"
        a.ends = None

    def _due(self, a: _Armed, now: datetime) -> bool:
        f = a.fault
        if a.next_at is not None:
            return now >= a.next_at
        if f.at is not None:
            return now >= self.resolve(f.at)
        if f.after is not None:
            return a.seen >= f.after
        return True

    # -- queries -------------------------------------------------------------

    def active(
        self, kind: str, symbol: str | None = None, client_id: int | None = None
    ) -> Fault | None:
        """The first active fault of `kind` that applies to this symbol and client, if any."""
        with self._lock:
            for a in self._armed:
                if (
                    a.state == "active"
                    and a.fault.kind == kind
                    and a.fault.matches(symbol, client_id)
                ):
                    return a.fault
        return None

    def started_at(self, fault: Fault) -> datetime | None:
        """When an active fault started (simulated time), None when it is not active."""
        with self._lock:
            for a in self._armed:
                if a.fault is fault:
                    return a.started if a.state == "active" else None
        return None

    def ends_at(self, fault: Fault) -> datetime | None:
        """When an active window ends (simulated time), None when it is not active or open-ended."""
        with self._lock:
            for a in self._armed:
                if a.fault is fault:
                    return a.ends if a.state == "active" else None
        return None

    def all_active(self, kind: str) -> list[Fault]:
        with self._lock:
            return [a.fault for a in self._armed if a.state == "active" and a.fault.kind == kind]

    def hit(self, fault: Fault, n: int = 1) -> None:
        """Record that a fault changed what a client saw."""
        with self._lock:
            self.counts[fault.kind] += n

    def rng(self, fault: Fault) -> random.Random:
        with self._lock:
            for a in self._armed:
                if a.fault is fault:
                    return a.rng
        raise KeyError(fault)

    def draw(self, fault: Fault, bounds: tuple[float, float]) -> float:
        lo, hi = bounds
        return lo if lo == hi else self.rng(fault).uniform(lo, hi)

    def draw_int(self, fault: Fault, bounds: tuple[int, int]) -> int:
        lo, hi = bounds
        return lo if lo == hi else self.rng(fault).randint(lo, hi)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "applied": dict(self.counts),
                "faults": [
                    {"kind": a.fault.kind, "name": a.fault.label, "state": a.state}
                    for a in self._armed
                ],
            }


def describe_kinds() -> str:
    """One line per fault kind, for --help."""
    return "\n".join(f"  {k}: {s.summary}" for k, s in sorted(KINDS.items()))

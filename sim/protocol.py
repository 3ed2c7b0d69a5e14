"""TWS API wire format: framing, field encoding, message ids, request decoders and message builders."""

from __future__ import annotations

import math
import re
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import IntEnum
from typing import Any
from zoneinfo import ZoneInfo

UNSET_DOUBLE = sys.float_info.max
UNSET_INTEGER = 2**31 - 1
# The literal TWS prints for an unset double; float() of it equals UNSET_DOUBLE.
UNSET_DOUBLE_TEXT = "1.7976931348623157E308"

# Below 157 the tick, order and contract layouts change in ways we do not encode.
MIN_SERVER_VERSION = 157
MAX_SERVER_VERSION = 178

# Real frames are far smaller; anything this big is garbage or an attack.
MAX_FRAME_BYTES = 8 * 1024 * 1024

EASTERN = ZoneInfo("US/Eastern")
EASTERN_NAME = "US/Eastern"


class ProtocolError(Exception):
    """A frame or request that cannot be read."""


class In(IntEnum):
    """Message ids a client sends."""

    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    PLACE_ORDER = 3
    CANCEL_ORDER = 4
    REQ_OPEN_ORDERS = 5
    REQ_ACCT_DATA = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DATA = 9
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_MANAGED_ACCTS = 17
    REQ_HISTORICAL_DATA = 20
    CANCEL_HISTORICAL_DATA = 25
    REQ_CURRENT_TIME = 49
    REQ_REAL_TIME_BARS = 50
    CANCEL_REAL_TIME_BARS = 51
    REQ_GLOBAL_CANCEL = 58
    REQ_MARKET_DATA_TYPE = 59
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_POSITIONS_MULTI = 74
    CANCEL_POSITIONS_MULTI = 75
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_SEC_DEF_OPT_PARAMS = 78
    REQ_MARKET_RULE = 91
    REQ_PNL = 92
    CANCEL_PNL = 93
    REQ_COMPLETED_ORDERS = 99


class Out(IntEnum):
    """Message ids the server sends."""

    TICK_PRICE = 1
    TICK_SIZE = 2
    ORDER_STATUS = 3
    ERR_MSG = 4
    OPEN_ORDER = 5
    ACCT_VALUE = 6
    PORTFOLIO_VALUE = 7
    ACCT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    EXECUTION_DATA = 11
    MANAGED_ACCTS = 15
    HISTORICAL_DATA = 17
    TICK_OPTION_COMPUTATION = 21
    TICK_GENERIC = 45
    TICK_STRING = 46
    CURRENT_TIME = 49
    REAL_TIME_BARS = 50
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    TICK_SNAPSHOT_END = 57
    MARKET_DATA_TYPE = 58
    COMMISSION_REPORT = 59
    POSITION_DATA = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY = 63
    ACCOUNT_SUMMARY_END = 64
    POSITION_MULTI = 71
    POSITION_MULTI_END = 72
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    SECURITY_DEFINITION_OPTION_PARAMETER = 75
    SECURITY_DEFINITION_OPTION_PARAMETER_END = 76
    HISTORICAL_DATA_UPDATE = 90
    MARKET_RULE = 93
    PNL = 94
    COMPLETED_ORDER = 101
    COMPLETED_ORDERS_END = 102


class Tick(IntEnum):
    """Tick types the simulator sends."""

    BID_SIZE = 0
    BID = 1
    ASK = 2
    ASK_SIZE = 3
    LAST = 4
    LAST_SIZE = 5
    HIGH = 6
    LOW = 7
    VOLUME = 8
    CLOSE = 9
    MODEL_OPTION = 13
    OPEN = 14
    OPTION_IMPLIED_VOL = 24
    OPTION_CALL_OPEN_INTEREST = 27
    OPTION_PUT_OPEN_INTEREST = 28
    OPTION_CALL_VOLUME = 29
    OPTION_PUT_VOLUME = 30


# ---------------------------------------------------------------------------
# fields and frames


def format_float(value: float) -> str:
    """A double as TWS prints it: shortest round-trip text, '' for unset or NaN."""
    if value is None or value == UNSET_DOUBLE or math.isnan(value):
        return ""
    if math.isinf(value):
        return "Infinite" if value > 0 else "-Infinite"
    # 15 significant digits drop binary noise such as 0.30000000000000004.
    return format(value, ".15g")


def encode_field(value: Any) -> str:
    """One field as text, with the same empty-value rules as ib_async's Client.send."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        # int() so IntEnum members print as numbers on every Python version.
        return "" if value == UNSET_INTEGER else str(int(value))
    if isinstance(value, float):
        return format_float(value)
    return str(value)


def encode_payload(fields: Iterable[Any]) -> bytes:
    return "".join(encode_field(f) + "\0" for f in fields).encode("utf-8", "backslashreplace")


def encode_frame(fields: Iterable[Any]) -> bytes:
    payload = encode_payload(fields)
    return struct.pack(">I", len(payload)) + payload


def decode_payload(payload: bytes) -> list[str]:
    if not payload.endswith(b"\0"):
        raise ProtocolError("frame does not end with a NUL")
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        # Clients only send ASCII7 at these versions, but a stray byte should not kill a session.
        text = payload.decode("utf-8", "backslashreplace")
    return text.split("\0")[:-1]


class FrameBuffer:
    """Accumulates bytes and yields complete frames as field lists."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[list[str]]:
        self._buf += data
        out: list[list[str]] = []
        while len(self._buf) >= 4:
            (size,) = struct.unpack(">I", self._buf[:4])
            if size == 0 or size > self._max:
                raise ProtocolError(f"bad frame length {size}")
            if len(self._buf) < 4 + size:
                break
            payload = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            out.append(decode_payload(payload))
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


_VERSION_RE = re.compile(r"^v(\d+)(?:\.\.(\d+))?(?:\s+(.*))?$")


@dataclass(frozen=True)
class Handshake:
    min_version: int
    max_version: int
    options: str
    consumed: int


def parse_handshake(data: bytes) -> Handshake | None:
    """Parse `API\\0` + framed "vMIN..MAX[ options]"; None while incomplete."""
    prefix = b"API\0"
    if len(data) < len(prefix):
        if not prefix.startswith(bytes(data)):
            raise ProtocolError("handshake does not start with API\\0")
        return None
    if not data.startswith(prefix):
        raise ProtocolError("handshake does not start with API\\0")
    if len(data) < 8:
        return None
    (size,) = struct.unpack(">I", data[4:8])
    if size == 0 or size > 4096:
        raise ProtocolError(f"bad handshake length {size}")
    if len(data) < 8 + size:
        return None
    text = data[8 : 8 + size].decode("ascii", "replace").rstrip("\0").strip()
    m = _VERSION_RE.match(text)
    if not m:
        raise ProtocolError(f"bad version string {text!r}")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    if hi < lo:
        raise ProtocolError(f"empty version range {text!r}")
    return Handshake(lo, hi, (m.group(3) or "").strip(), 8 + size)


def choose_version(client_min: int, client_max: int, server_version: int) -> int | None:
    """The version both sides speak, or None when the ranges do not overlap."""
    chosen = min(client_max, server_version, MAX_SERVER_VERSION)
    if chosen < max(client_min, MIN_SERVER_VERSION):
        return None
    return chosen


def handshake_reply(version: int, now: datetime) -> bytes:
    return encode_frame([version, format_connection_time(now)])


# ---------------------------------------------------------------------------
# times


def format_connection_time(t: datetime) -> str:
    # TWS answers in its own zone with an abbreviation, e.g. "20261120 09:30:00 EST".
    et = t.astimezone(EASTERN)
    return et.strftime("%Y%m%d %H:%M:%S ") + (et.tzname() or "EST")


def format_ib_time(t: datetime) -> str:
    """A timestamp as modern TWS prints it: "YYYYMMDD HH:MM:SS US/Eastern"."""
    return t.astimezone(EASTERN).strftime("%Y%m%d %H:%M:%S ") + EASTERN_NAME


def format_bar_time(t: datetime, format_date: int, daily: bool) -> str:
    """A bar's time for historicalData: dates for daily bars, else ET text or epoch seconds."""
    if daily:
        return t.astimezone(EASTERN).strftime("%Y%m%d")
    if format_date == 2:
        return str(int(t.timestamp()))
    return format_ib_time(t)


def parse_ib_datetime(text: str, default_tz: Any = EASTERN) -> datetime | None:
    """Parse endDateTime-style text; '' gives None. Naive times are in the TWS zone (US/Eastern)."""
    s = text.strip()
    if not s:
        return None
    if s.isdigit() and len(s) > 8:
        return datetime.fromtimestamp(int(s), UTC)
    if len(s) == 8 and s.isdigit():
        d = datetime.strptime(s, "%Y%m%d")
        # A bare date means the end of that day.
        return (d + timedelta(days=1, seconds=-1)).replace(tzinfo=default_tz).astimezone(UTC)
    if "-" in s[:9] and len(s) >= 17 and s[8] == "-":
        # "YYYYMMDD-HH:MM:SS" is UTC by definition.
        d = datetime.strptime(s[:17], "%Y%m%d-%H:%M:%S")
        return d.replace(tzinfo=UTC)
    parts = s.split()
    if len(parts) >= 2:
        d = datetime.strptime(parts[0] + parts[1][:8], "%Y%m%d%H:%M:%S")
        tz: Any = default_tz
        if len(parts) >= 3:
            name = parts[2]
            tz = UTC if name.upper() in ("UTC", "GMT") else ZoneInfo(name)
        return d.replace(tzinfo=tz).astimezone(UTC)
    raise ValueError(f"unrecognised date/time {text!r}")


# ---------------------------------------------------------------------------
# reading requests


class Reader:
    """Sequential reader over a request's fields; missing trailing fields read as empty."""

    def __init__(self, fields: Sequence[str], pos: int = 0) -> None:
        self.fields = fields
        self.pos = pos

    def str(self) -> str:
        if self.pos >= len(self.fields):
            self.pos += 1
            return ""
        v = self.fields[self.pos]
        self.pos += 1
        return v

    def int(self, default: int = 0) -> int:
        v = self.str().strip()
        if not v:
            return default
        try:
            return int(v)
        except ValueError:
            pass
        # Some clients print ints as floats ("1.0"); "inf" is text float() reads but no int.
        try:
            return int(float(v))
        except OverflowError as e:
            raise ValueError(f"not an integer: {v!r}") from e

    def float(self, default: float | None = None) -> float | None:
        v = self.str().strip()
        if not v:
            return default
        if v in ("Infinite", "Infinity"):
            return math.inf
        f = float(v)
        if f == UNSET_DOUBLE:
            return default
        return f

    def bool(self) -> bool:
        v = self.str().strip()
        if not v:
            return False
        if v.lower() in ("true", "false"):
            return v.lower() == "true"
        return bool(int(float(v)))

    def skip(self, n: int = 1) -> None:
        self.pos += n

    @property
    def remaining(self) -> int:
        return max(0, len(self.fields) - self.pos)


@dataclass
class ContractRequest:
    """The 12 contract fields every request carries."""

    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    expiry: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    include_expired: bool = False
    combo_legs: list[tuple[int, int, str, str]] = field(default_factory=list)


def read_contract(r: Reader) -> ContractRequest:
    return ContractRequest(
        con_id=r.int(),
        symbol=r.str().strip().upper(),
        sec_type=r.str().strip().upper(),
        expiry=r.str().strip(),
        strike=r.float(0.0) or 0.0,
        right=r.str().strip().upper(),
        multiplier=r.str().strip(),
        exchange=r.str().strip().upper(),
        primary_exchange=r.str().strip().upper(),
        currency=r.str().strip().upper(),
        local_symbol=r.str(),
        trading_class=r.str().strip(),
    )


@dataclass
class MktDataRequest:
    req_id: int
    contract: ContractRequest
    generic_ticks: str
    snapshot: bool
    regulatory_snapshot: bool


def decode_req_mkt_data(fields: Sequence[str]) -> MktDataRequest:
    r = Reader(fields, 2)
    req_id = r.int()
    c = read_contract(r)
    if c.sec_type == "BAG":
        for _ in range(r.int()):
            c.combo_legs.append((r.int(), r.int(), r.str(), r.str()))
    if r.bool():
        r.skip(3)
    return MktDataRequest(req_id, c, r.str(), r.bool(), r.bool())


@dataclass
class ContractDetailsRequest:
    req_id: int
    contract: ContractRequest
    sec_id_type: str
    sec_id: str


def decode_req_contract_details(fields: Sequence[str]) -> ContractDetailsRequest:
    r = Reader(fields, 2)
    req_id = r.int()
    c = read_contract(r)
    c.include_expired = r.bool()
    return ContractDetailsRequest(req_id, c, r.str(), r.str())


@dataclass
class HistoricalDataRequest:
    req_id: int
    contract: ContractRequest
    end: str
    bar_size: str
    duration: str
    use_rth: bool
    what_to_show: str
    format_date: int
    keep_up_to_date: bool


def decode_req_historical_data(fields: Sequence[str]) -> HistoricalDataRequest:
    # No version field since server version 124.
    r = Reader(fields, 1)
    req_id = r.int()
    c = read_contract(r)
    c.include_expired = r.bool()
    end = r.str()
    bar_size = r.str()
    duration = r.str()
    use_rth = r.bool()
    what = r.str().strip().upper()
    format_date = r.int(1)
    if c.sec_type == "BAG":
        for _ in range(r.int()):
            c.combo_legs.append((r.int(), r.int(), r.str(), r.str()))
    keep = r.bool()
    return HistoricalDataRequest(
        req_id, c, end, bar_size, duration, use_rth, what, format_date, keep
    )


@dataclass
class ExecutionFilterRequest:
    req_id: int
    client_id: int
    account: str
    time: str
    symbol: str
    sec_type: str
    exchange: str
    side: str


def decode_req_executions(fields: Sequence[str]) -> ExecutionFilterRequest:
    r = Reader(fields, 2)
    return ExecutionFilterRequest(
        r.int(),
        r.int(),
        r.str(),
        r.str(),
        r.str().upper(),
        r.str().upper(),
        r.str().upper(),
        r.str().upper(),
    )


@dataclass
class PlaceOrderRequest:
    """The placeOrder fields the simulator acts on; the rest are read past."""

    order_id: int
    contract: ContractRequest
    action: str
    total_quantity: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    oca_group: str
    account: str
    open_close: str
    origin: int
    order_ref: str
    transmit: bool
    parent_id: int
    outside_rth: bool
    hidden: bool
    good_after_time: str = ""
    good_till_date: str = ""
    oca_type: int = 0
    all_or_none: bool = False
    min_qty: int | None = None
    trail_stop_price: float | None = None
    trailing_percent: float | None = None
    what_if: bool = False
    algo_strategy: str = ""


def decode_place_order(fields: Sequence[str], version: int) -> PlaceOrderRequest:
    """Decode placeOrder exactly as ib_async's Client.placeOrder lays it out for `version`."""
    r = Reader(fields, 1)  # placeOrder carries no version field
    order_id = r.int()
    c = read_contract(r)
    r.skip(2)  # secIdType, secId
    action = r.str().strip().upper()
    qty = r.float(0.0) or 0.0
    order_type = r.str().strip().upper()
    lmt = r.float()
    aux = r.float()
    tif = r.str().strip().upper()
    oca_group = r.str()
    account = r.str()
    open_close = r.str()
    origin = r.int()
    order_ref = r.str()
    transmit = r.bool()
    parent_id = r.int()
    r.skip(3)  # blockOrder, sweepToFill, displaySize
    r.skip(1)  # triggerMethod
    outside_rth = r.bool()
    hidden = r.bool()
    if c.sec_type == "BAG":
        for _ in range(r.int()):
            leg = (r.int(), r.int(), r.str(), r.str())
            r.skip(4)
            c.combo_legs.append(leg)
        r.skip(r.int())
        r.skip(2 * r.int())
    r.skip(1)  # deprecated sharesAllocation
    r.skip(1)  # discretionaryAmt
    good_after = r.str()
    good_till = r.str()
    r.skip(3)  # faGroup, faMethod, faPercentage
    if version < 177:
        r.skip(1)  # faProfile
    r.skip(4)  # modelCode, shortSaleSlot, designatedLocation, exemptCode
    oca_type = r.int()
    r.skip(2)  # rule80A, settlingFirm
    all_or_none = r.bool()
    min_qty_text = r.str()
    min_qty = int(float(min_qty_text)) if min_qty_text.strip() else None
    r.skip(1)  # percentOffset
    r.skip(3)  # eTradeOnly, firmQuoteOnly, nbboPriceCap
    r.skip(7)  # auctionStrategy .. overridePercentageConstraints
    r.skip(2)  # volatility, volatilityType
    dn_type = r.str()
    r.skip(1)  # deltaNeutralAuxPrice
    if dn_type:
        r.skip(8)
    r.skip(2)  # continuousUpdate, referencePriceType
    trail_stop = r.float()
    trailing_pct = r.float()
    r.skip(2)  # scaleInitLevelSize, scaleSubsLevelSize
    inc = r.float()
    if inc is not None and 0 < inc < UNSET_DOUBLE:
        r.skip(7)
    r.skip(3)  # scaleTable, activeStartTime, activeStopTime
    if r.str():  # hedgeType
        r.skip(1)
    r.skip(4)  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
    if r.bool():  # deltaNeutralContract present
        r.skip(3)
    algo = r.str()
    if algo:
        r.skip(2 * r.int())
    r.skip(1)  # algoId
    what_if = r.bool()
    return PlaceOrderRequest(
        order_id=order_id,
        contract=c,
        action=action,
        total_quantity=qty,
        order_type=order_type,
        lmt_price=lmt,
        aux_price=aux,
        tif=tif,
        oca_group=oca_group,
        account=account,
        open_close=open_close,
        origin=origin,
        order_ref=order_ref,
        transmit=transmit,
        parent_id=parent_id,
        outside_rth=outside_rth,
        hidden=hidden,
        good_after_time=good_after,
        good_till_date=good_till,
        oca_type=oca_type,
        all_or_none=all_or_none,
        min_qty=min_qty,
        trail_stop_price=trail_stop,
        trailing_percent=trailing_pct,
        what_if=what_if,
        algo_strategy=algo,
    )


# ---------------------------------------------------------------------------
# building messages (lists of fields; the server frames them)

Fields = list[Any]


def contract_fields(c: Any, with_exchange: bool = True) -> Fields:
    """conId .. tradingClass as execDetails/openOrder/position lay them out."""
    out: Fields = [
        c.con_id,
        c.symbol,
        c.sec_type,
        c.expiry,
        float(c.strike or 0.0),
        c.right,
        c.multiplier,
    ]
    if with_exchange:
        out.append(c.exchange)
    out += [c.currency, c.local_symbol, c.trading_class]
    return out


def msg_error(version: int, req_id: int, code: int, text: str, advanced_json: str = "") -> Fields:
    out: Fields = [Out.ERR_MSG, 2, req_id, code, text]
    if version >= 166:
        out.append(advanced_json)
    return out


def msg_managed_accounts(accounts: Sequence[str]) -> Fields:
    return [Out.MANAGED_ACCTS, 1, ",".join(accounts)]


def msg_next_valid_id(order_id: int) -> Fields:
    return [Out.NEXT_VALID_ID, 1, order_id]


def msg_current_time(t: datetime) -> Fields:
    return [Out.CURRENT_TIME, 1, int(t.timestamp())]


def msg_tick_price(req_id: int, tick: int, price: float, size: float, attrib: int = 0) -> Fields:
    return [Out.TICK_PRICE, 6, req_id, tick, price, _size(size), attrib]


def msg_tick_size(req_id: int, tick: int, size: float) -> Fields:
    return [Out.TICK_SIZE, 6, req_id, tick, _size(size)]


def msg_tick_generic(req_id: int, tick: int, value: float) -> Fields:
    return [Out.TICK_GENERIC, 6, req_id, tick, value]


def msg_tick_option_computation(
    req_id: int,
    tick: int,
    iv: float | None,
    delta: float | None,
    price: float | None,
    pv_dividend: float | None,
    gamma: float | None,
    vega: float | None,
    theta: float | None,
    und_price: float | None,
    price_based: bool = False,
) -> Fields:
    # No version field since PRICE_BASED_VOLATILITY (156); IB's sentinels are -1 and -2.
    def v(x: float | None, sentinel: float) -> float:
        return sentinel if x is None or not math.isfinite(x) else x

    return [
        Out.TICK_OPTION_COMPUTATION,
        req_id,
        tick,
        1 if price_based else 0,
        v(iv, -1.0),
        v(delta, -2.0),
        v(price, -1.0),
        v(pv_dividend, -1.0),
        v(gamma, -2.0),
        v(vega, -2.0),
        v(theta, -2.0),
        v(und_price, -1.0),
    ]


def msg_tick_snapshot_end(req_id: int) -> Fields:
    return [Out.TICK_SNAPSHOT_END, 1, req_id]


def msg_market_data_type(req_id: int, data_type: int) -> Fields:
    return [Out.MARKET_DATA_TYPE, 1, req_id, data_type]


def _size(size: float) -> str:
    if size is None or not math.isfinite(size):
        return "0"
    return str(int(size)) if float(size).is_integer() else format_float(float(size))


@dataclass
class ContractDetailsData:
    """What a contractData message carries beyond the contract itself."""

    market_name: str
    min_tick: float
    order_types: str
    valid_exchanges: str
    under_con_id: int
    long_name: str
    contract_month: str
    industry: str
    category: str
    subcategory: str
    time_zone_id: str
    trading_hours: str
    liquid_hours: str
    agg_group: int
    under_symbol: str
    under_sec_type: str
    market_rule_ids: str
    real_expiration_date: str
    stock_type: str
    min_size: float = 1.0
    size_increment: float = 1.0
    suggested_size_increment: float = 1.0
    sec_id_list: tuple[tuple[str, str], ...] = ()


def msg_contract_data(version: int, req_id: int, c: Any, d: ContractDetailsData) -> Fields:
    out: Fields = [Out.CONTRACT_DATA]
    if version < 164:
        out.append(8)
    out += [
        req_id,
        c.symbol,
        c.sec_type,
        c.expiry,
        float(c.strike or 0.0),
        c.right,
        c.exchange,
        c.currency,
        c.local_symbol,
        d.market_name,
        c.trading_class,
        c.con_id,
        d.min_tick,
    ]
    if version < 164:
        out.append(1)  # mdSizeMultiplier
    out += [
        c.multiplier,
        d.order_types,
        d.valid_exchanges,
        1,  # priceMagnifier
        d.under_con_id,
        d.long_name,
        c.primary_exchange,
        d.contract_month,
        d.industry,
        d.category,
        d.subcategory,
        d.time_zone_id,
        d.trading_hours,
        d.liquid_hours,
        "",  # evRule
        "",  # evMultiplier
        len(d.sec_id_list),
        *(f for pair in d.sec_id_list for f in pair),
        d.agg_group,
        d.under_symbol,
        d.under_sec_type,
        d.market_rule_ids,
        d.real_expiration_date,
        d.stock_type,
    ]
    if version == 163:
        out.append(d.suggested_size_increment)
    if version >= 164:
        out += [d.min_size, d.size_increment, d.suggested_size_increment]
    return out


def msg_contract_data_end(req_id: int) -> Fields:
    return [Out.CONTRACT_DATA_END, 1, req_id]


def msg_sec_def_opt_params(
    req_id: int,
    exchange: str,
    under_con_id: int,
    trading_class: str,
    multiplier: str,
    expirations: Sequence[str],
    strikes: Sequence[float],
) -> Fields:
    return [
        Out.SECURITY_DEFINITION_OPTION_PARAMETER,
        req_id,
        exchange,
        under_con_id,
        trading_class,
        multiplier,
        len(expirations),
        *expirations,
        len(strikes),
        *[float(s) for s in strikes],
    ]


def msg_sec_def_opt_params_end(req_id: int) -> Fields:
    return [Out.SECURITY_DEFINITION_OPTION_PARAMETER_END, req_id]


def msg_market_rule(rule_id: int, increments: Sequence[tuple[float, float]]) -> Fields:
    out: Fields = [Out.MARKET_RULE, rule_id, len(increments)]
    for low, inc in increments:
        out += [float(low), float(inc)]
    return out


@dataclass
class BarRow:
    time: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    wap: float
    count: int


def msg_historical_data(req_id: int, start: str, end: str, bars: Sequence[BarRow]) -> Fields:
    # One message with all bars plus start/end: the layout before HISTORICAL_DATA_END (196).
    out: Fields = [Out.HISTORICAL_DATA, req_id, start, end, len(bars)]
    for b in bars:
        out += [b.time, b.open, b.high, b.low, b.close, _size(b.volume), b.wap, b.count]
    return out


def msg_historical_data_update(req_id: int, b: BarRow) -> Fields:
    # Note the order: open, close, high, low, as the decoder reads it.
    return [
        Out.HISTORICAL_DATA_UPDATE,
        req_id,
        b.count,
        b.time,
        b.open,
        b.close,
        b.high,
        b.low,
        b.wap,
        _size(b.volume),
    ]


def msg_real_time_bar(req_id: int, t: datetime, b: BarRow) -> Fields:
    return [
        Out.REAL_TIME_BARS,
        3,
        req_id,
        int(t.timestamp()),
        b.open,
        b.high,
        b.low,
        b.close,
        _size(b.volume),
        b.wap,
        b.count,
    ]


def msg_order_status(o: Any) -> Fields:
    # No version field since MARKET_CAP_PRICE (131).
    return [
        Out.ORDER_STATUS,
        o.order_id,
        o.status,
        o.filled,
        o.remaining,
        o.avg_fill_price,
        o.perm_id,
        o.parent_id,
        o.last_fill_price,
        o.client_id,
        o.why_held,
        0.0,
    ]


@dataclass
class OrderStateData:
    status: str
    init_margin_before: str = ""
    maint_margin_before: str = ""
    equity_with_loan_before: str = ""
    init_margin_change: str = ""
    maint_margin_change: str = ""
    equity_with_loan_change: str = ""
    init_margin_after: str = ""
    maint_margin_after: str = ""
    equity_with_loan_after: str = ""
    commission: float | None = None
    min_commission: float | None = None
    max_commission: float | None = None
    commission_currency: str = ""
    warning_text: str = ""


def _order_head(o: Any, version: int, completed: bool) -> Fields:
    c = o.contract
    out: Fields = contract_fields(c)
    out += [
        o.action,
        o.total_quantity,
        o.order_type,
        o.lmt_price,
        o.aux_price,
        o.tif,
        o.oca_group,
        o.account,
        o.open_close,
        o.origin,
        o.order_ref,
    ]
    if not completed:
        out.append(o.client_id)
    out += [
        o.perm_id,
        o.outside_rth,
        o.hidden,
        0.0,  # discretionaryAmt
        o.good_after_time,
    ]
    if not completed:
        out.append("")  # deprecated sharesAllocation
    out += ["", "", ""]  # faGroup, faMethod, faPercentage
    if version < 177:
        out.append("")  # faProfile
    return out


def msg_open_order(version: int, o: Any, state: OrderStateData) -> Fields:
    """openOrder laid out field by field as ib_async's Decoder.openOrder reads it."""
    out: Fields = [Out.OPEN_ORDER, o.order_id]
    out += _order_head(o, version, completed=False)
    out += [
        "",  # modelCode
        o.good_till_date,
        "",  # rule80A
        None,  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        0,  # auctionStrategy
        None,  # startingPrice
        None,  # stockRefPrice
        None,  # delta
        None,  # stockRangeLower
        None,  # stockRangeUpper
        None,  # displaySize
        False,  # blockOrder
        False,  # sweepToFill
        o.all_or_none,
        o.min_qty,
        o.oca_type,
        False,  # eTradeOnly
        False,  # firmQuoteOnly
        None,  # nbboPriceCap
        o.parent_id,
        0,  # triggerMethod
        None,  # volatility
        0,  # volatilityType
        "",  # deltaNeutralOrderType (empty: no delta-neutral block follows)
        None,  # deltaNeutralAuxPrice
        False,  # continuousUpdate
        0,  # referencePriceType
        o.trail_stop_price,
        o.trailing_percent,
        None,  # basisPoints
        None,  # basisPointsType
        "",  # comboLegsDescrip
        0,  # comboLegs count
        0,  # orderComboLegs count
        0,  # smartComboRoutingParams count
        None,  # scaleInitLevelSize
        None,  # scaleSubsLevelSize
        None,  # scalePriceIncrement (unset: no scale block follows)
        "",  # hedgeType (empty: no hedgeParam)
        False,  # optOutSmartRouting
        "",  # clearingAccount
        "",  # clearingIntent
        False,  # notHeld
        False,  # deltaNeutralContract present
        o.algo_strategy,
    ]
    if o.algo_strategy:
        out.append(0)
    out += [
        False,  # solicited
        o.what_if,
        state.status,
        state.init_margin_before,
        state.maint_margin_before,
        state.equity_with_loan_before,
        state.init_margin_change,
        state.maint_margin_change,
        state.equity_with_loan_change,
        state.init_margin_after,
        state.maint_margin_after,
        state.equity_with_loan_after,
        state.commission,
        state.min_commission,
        state.max_commission,
        state.commission_currency,
        state.warning_text,
        False,  # randomizeSize
        False,  # randomizePrice
        0,  # conditions count
        "",  # adjustedOrderType
        None,  # triggerPrice
        o.trail_stop_price,
        None,  # lmtPriceOffset
        None,  # adjustedStopPrice
        None,  # adjustedStopLimitPrice
        None,  # adjustedTrailingAmount
        0,  # adjustableTrailingUnit
        "",  # softDollarTier name
        "",  # softDollarTier value
        "",  # softDollarTier displayName
        None,  # cashQty
        False,  # dontUseAutoPriceForHedge
        False,  # isOmsContainer
        False,  # discretionaryUpToLimitPrice
        False,  # usePriceMgmtAlgo
    ]
    if version >= 159:
        out.append(None)  # duration
    if version >= 160:
        out.append(None)  # postToAts
    if version >= 162:
        out.append(False)  # autoCancelParent
    if version >= 170:
        out += [None, None, None, None, None]
    return out


def msg_open_order_end() -> Fields:
    return [Out.OPEN_ORDER_END, 1]


def msg_completed_order(
    version: int, o: Any, status: str, completed_time: str, completed_status: str
) -> Fields:
    """completedOrder as ib_async's Decoder.completedOrder reads it (no orderId, no clientId)."""
    out: Fields = [Out.COMPLETED_ORDER]
    out += _order_head(o, version, completed=True)
    out += [
        "",  # modelCode
        o.good_till_date,
        "",  # rule80A
        None,  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        None,  # startingPrice
        None,  # stockRefPrice
        None,  # delta
        None,  # stockRangeLower
        None,  # stockRangeUpper
        None,  # displaySize
        False,  # sweepToFill
        o.all_or_none,
        o.min_qty,
        o.oca_type,
        0,  # triggerMethod
        None,  # volatility
        0,  # volatilityType
        "",  # deltaNeutralOrderType
        None,  # deltaNeutralAuxPrice
        False,  # continuousUpdate
        0,  # referencePriceType
        o.trail_stop_price,
        o.trailing_percent,
        "",  # comboLegsDescrip
        0,  # comboLegs count
        0,  # orderComboLegs count
        0,  # smartComboRoutingParams count
        None,  # scaleInitLevelSize
        None,  # scaleSubsLevelSize
        None,  # scalePriceIncrement
        "",  # hedgeType
        "",  # clearingAccount
        "",  # clearingIntent
        False,  # notHeld
        False,  # deltaNeutralContract present
        o.algo_strategy,
    ]
    if o.algo_strategy:
        out.append(0)
    out += [
        False,  # solicited
        status,
        False,  # randomizeSize
        False,  # randomizePrice
        0,  # conditions count
        o.trail_stop_price,
        None,  # lmtPriceOffset
        None,  # cashQty
        False,  # dontUseAutoPriceForHedge
        False,  # isOmsContainer
        "",  # autoCancelDate
        o.filled,
        0,  # refFuturesConId
        False,  # autoCancelParent
        "",  # shareholder
        False,  # imbalanceOnly
        False,  # routeMarketableToBbo
        o.parent_perm_id,
        completed_time,
        completed_status,
    ]
    if version >= 170:
        out += [None, None, None, None, None]
    return out


def msg_completed_orders_end() -> Fields:
    return [Out.COMPLETED_ORDERS_END]


def msg_execution(version: int, req_id: int, e: Any) -> Fields:
    # No version field since LAST_LIQUIDITY (136).
    out: Fields = [Out.EXECUTION_DATA, req_id, e.order_id]
    out += contract_fields(e.contract)
    out += [
        e.exec_id,
        format_ib_time(e.time),
        e.account,
        e.exchange,
        e.side,
        e.shares,
        e.price,
        e.perm_id,
        e.client_id,
        0,  # liquidation
        e.cum_qty,
        e.avg_price,
        e.order_ref,
        "",  # evRule
        None,  # evMultiplier
        "",  # modelCode
        e.last_liquidity,
    ]
    if version >= 178:
        out.append(False)  # pendingPriceRevision
    return out


def msg_execution_end(req_id: int) -> Fields:
    return [Out.EXECUTION_DATA_END, 1, req_id]


def msg_commission_report(
    exec_id: str, commission: float, currency: str, realized_pnl: float | None
) -> Fields:
    return [
        Out.COMMISSION_REPORT,
        1,
        exec_id,
        commission,
        currency,
        UNSET_DOUBLE_TEXT if realized_pnl is None else realized_pnl,
        UNSET_DOUBLE_TEXT,  # yield
        "",  # yieldRedemptionDate
    ]


def msg_position(account: str, c: Any, position: float, avg_cost: float) -> Fields:
    return [Out.POSITION_DATA, 3, account, *contract_fields(c), position, avg_cost]


def msg_position_end() -> Fields:
    return [Out.POSITION_END, 1]


def msg_position_multi(
    req_id: int, account: str, c: Any, position: float, avg_cost: float, model_code: str = ""
) -> Fields:
    return [
        Out.POSITION_MULTI,
        1,
        req_id,
        account,
        *contract_fields(c),
        position,
        avg_cost,
        model_code,
    ]


def msg_position_multi_end(req_id: int) -> Fields:
    return [Out.POSITION_MULTI_END, 1, req_id]


def msg_account_value(key: str, value: str, currency: str, account: str) -> Fields:
    return [Out.ACCT_VALUE, 2, key, value, currency, account]


def msg_portfolio_value(
    c: Any,
    position: float,
    market_price: float,
    market_value: float,
    avg_cost: float,
    unrealized: float,
    realized: float,
    account: str,
) -> Fields:
    # portfolioValue names the primary exchange where other messages put the exchange.
    return [
        Out.PORTFOLIO_VALUE,
        8,
        c.con_id,
        c.symbol,
        c.sec_type,
        c.expiry,
        float(c.strike or 0.0),
        c.right,
        c.multiplier,
        c.primary_exchange,
        c.currency,
        c.local_symbol,
        c.trading_class,
        position,
        market_price,
        market_value,
        avg_cost,
        unrealized,
        realized,
        account,
    ]


def msg_account_update_time(t: datetime) -> Fields:
    return [Out.ACCT_UPDATE_TIME, 1, t.astimezone(EASTERN).strftime("%H:%M")]


def msg_account_download_end(account: str) -> Fields:
    return [Out.ACCT_DOWNLOAD_END, 1, account]


def msg_account_update_multi(
    req_id: int, account: str, key: str, value: str, currency: str, model_code: str = ""
) -> Fields:
    return [Out.ACCOUNT_UPDATE_MULTI, 1, req_id, account, model_code, key, value, currency]


def msg_account_update_multi_end(req_id: int) -> Fields:
    return [Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id]


def msg_account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> Fields:
    return [Out.ACCOUNT_SUMMARY, 1, req_id, account, tag, value, currency]


def msg_account_summary_end(req_id: int) -> Fields:
    return [Out.ACCOUNT_SUMMARY_END, 1, req_id]


def msg_pnl(req_id: int, daily: float, unrealized: float, realized: float) -> Fields:
    return [Out.PNL, req_id, daily, unrealized, realized]


def occ_local_symbol(symbol: str, expiry: str, strike: float, right: str) -> str:
    """OCC option symbol: root padded to 6, YYMMDD, C/P, strike * 1000 in 8 digits."""
    return f"{symbol:<6}{expiry[2:8]}{right[:1]}{round(strike * 1000):08d}"


_OCC_RE = re.compile(r"^(?P<root>.{1,6}?)\s*(?P<date>\d{6})(?P<right>[CP])(?P<strike>\d{8})$")


def parse_occ_local_symbol(text: str) -> tuple[str, str, float, str] | None:
    """(symbol, YYYYMMDD, strike, right) from an OCC symbol, or None."""
    m = _OCC_RE.match(text.strip().upper()) if len(text.strip()) >= 15 else None
    if not m:
        return None
    return (
        m.group("root").strip(),
        "20" + m.group("date"),
        int(m.group("strike")) / 1000.0,
        m.group("right"),
    )


def as_date(t: datetime) -> date:
    return t.astimezone(EASTERN).date()

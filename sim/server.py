"""asyncio TCP server speaking the server side of the TWS API over a simulated market and order book."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import math
import re
import time as _time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sim import protocol as P
from sim.clock import ScaledClock
from sim.config import PacingOptions, SimOptions
from sim.faults import (
    FARM_RECOVERY,
    FARM_TEXTS,
    QUOTE_FAULTS,
    REQUEST_KINDS,
    Fault,
    FaultInjector,
)
from sim.market import BAR_SIZES, NEW_YORK, MarketModel, SimBar, default_spec
from sim.orders import (
    PENDING_CANCEL,
    OrderBook,
    OrderRejected,
    Quote,
    SimContract,
    SimExecution,
    SimOrder,
    SimPosition,
    spec_from_request,
)
from sim.pacing import (
    HIST_PACING_TEXT,
    LINES_TEXT,
    MESSAGE_RATE,
    MESSAGE_RATE_DISCONNECT,
    OPEN_HISTORICAL,
    OPEN_HISTORICAL_TEXT,
    MessageRate,
    Monotonic,
    Pacing,
    RateVerdict,
    message_rate_text,
)
from sim.pricing import normalize_right, option_tick
from sim.protocol import In, ProtocolError, Tick

log = logging.getLogger(__name__)

ERR_NO_SECURITY = "No security definition has been found for the request"
ERR_CLIENT_ID_IN_USE = (
    "Unable to connect as the client id is already in use. Retry with a unique client id."
)
FARM_MESSAGES = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)
ERR_READ_ONLY = (
    "Error validating request.-'bO' : cause - The API interface is currently in Read-Only mode."
)
ERR_NO_ENTITLEMENT = {
    354: "Requested market data is not subscribed.Delayed market data is available.{symbol} {exchange}/TOP/ALL",
    10089: (
        "Requested market data requires additional subscription for API. See link in "
        "'Market Data Connections' dialog for more details.Delayed market data is available."
        "{symbol} {exchange}/TOP/ALL"
    ),
}
ERR_DELAYED_NOT_ENABLED = (
    "Requested market data is not subscribed. Delayed market data is not enabled."
)
MSG_DELAYED = "Requested market data is not subscribed. Displaying delayed market data."
MSG_CONNECTIVITY_LOST = "Connectivity between IB and Trader Workstation has been lost."
MSG_RESTORED_DATA_LOST = (
    "Connectivity between IB and Trader Workstation has been restored - data lost."
)
MSG_RESTORED_DATA_KEPT = (
    "Connectivity between IB and Trader Workstation has been restored - data maintained."
)
# Delayed data is 15 minutes old and comes with its own tick types (what ib_async and ib_insync map).
DELAY = timedelta(minutes=15)
DELAYED_TICKS = {
    Tick.BID: 66,
    Tick.ASK: 67,
    Tick.LAST: 68,
    Tick.VOLUME: 74,
    Tick.CLOSE: 75,
    Tick.MODEL_OPTION: 83,
}

# Market rule ids as IB numbers them: stocks, penny options everywhere, and the two tiered option rules.
RULE_STOCK = 26
RULE_OPT_PENNY = 110
RULE_OPT_PENNY_NICKEL = 32
RULE_OPT_NICKEL_DIME = 33
MARKET_RULES: dict[int, tuple[tuple[float, float], ...]] = {
    RULE_STOCK: ((0.0, 0.01),),
    RULE_OPT_PENNY: ((0.0, 0.01),),
    RULE_OPT_PENNY_NICKEL: ((0.0, 0.01), (3.0, 0.05)),
    RULE_OPT_NICKEL_DIME: ((0.0, 0.05), (3.0, 0.10)),
}

STOCK_EXCHANGES = (
    "SMART",
    "AMEX",
    "NYSE",
    "CBOE",
    "PHLX",
    "ISE",
    "CHX",
    "ARCA",
    "NASDAQ",
    "BATS",
    "IEX",
)
OPTION_EXCHANGES = (
    "SMART",
    "AMEX",
    "CBOE",
    "PHLX",
    "PSE",
    "ISE",
    "BOX",
    "BATS",
    "NASDAQOM",
    "CBOE2",
    "MIAX",
)
EXTRA_STOCK_EXCHANGES = frozenset({"ISLAND", "NYSEARCA", "EDGX", "BYX", "MEMX", "IBKRATS"})
# Only what the simulator executes, so a client that reads orderTypes is not misled.
STOCK_ORDER_TYPES = "DAY,GTC,IOC,LMT,MKT,OCA,STP,STPLMT,WHATIF"
OPTION_ORDER_TYPES = STOCK_ORDER_TYPES
LONG_NAMES = {
    "SPY": ("SPDR S&P 500 ETF TRUST", "ETF"),
    "QQQ": ("INVESCO QQQ TRUST SERIES 1", "ETF"),
    "IWM": ("ISHARES RUSSELL 2000 ETF", "ETF"),
    "DIA": ("SPDR DJ INDUSTRIAL AVERAGE", "ETF"),
}

ACCOUNT_REFRESH = timedelta(minutes=3)
HANDSHAKE_TIMEOUT = 10.0
# A client that lets this much output pile up is not reading; drop it rather than grow without bound.
MAX_WRITE_BUFFER = 64 * 1024 * 1024
# Refuse historical requests that would build more bars than this.
MAX_BARS = 300_000

_BAR_SIZE_RE = re.compile(r"^\s*(\d+)\s*(secs?|mins?|hours?|days?|weeks?|months?|[SDWM])\s*$", re.I)
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([SDWMY])\s*$", re.I)


@dataclass
class MktDataSub:
    req_id: int
    contract: SimContract
    generic: frozenset[str]
    last: dict[str, Any] = field(default_factory=dict)
    delayed: bool = False


@dataclass
class HistSub:
    req_id: int
    contract: SimContract
    bar_size: int | str
    what: str
    format_date: int
    last_bar_start: datetime
    last_update: datetime


@dataclass
class RealTimeSub:
    req_id: int
    contract: SimContract
    what: str
    next_start: datetime


@dataclass
class HeldRequest:
    """A historical request received but not answered yet, and why."""

    session: ClientSession
    req_id: int
    fields: list[str]
    # "stall" (never), "delay" (at release_at), "farm:<code>"/"outage" (when that ends),
    # "queue" (a free slot under the open-request limit).
    reason: str
    release_at: float | None = None
    symbol: str | None = None
    msg_id: int = In.REQ_HISTORICAL_DATA

    @property
    def open(self) -> bool:
        # Queued requests wait in front of the limit; the others are open at the data farm.
        return self.msg_id == In.REQ_HISTORICAL_DATA and self.reason != "queue"


class ClientSession:
    """One API connection: its negotiated version, client id and subscriptions."""

    def __init__(
        self,
        server: SimServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn_no: int,
    ):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.conn_no = conn_no
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.version = 0
        self.client_id: int | None = None
        self.api_started = False
        self.closed = False
        self.market_data_type = 1
        self.auto_open_orders = False
        self.mkt_subs: dict[int, MktDataSub] = {}
        self.hist_subs: dict[int, HistSub] = {}
        self.rt_subs: dict[int, RealTimeSub] = {}
        self.account_updates = False
        self.account_multi: set[int] = set()
        self.positions_sub = False
        self.positions_multi: set[int] = set()
        self.account_summary: dict[int, set[str] | None] = {}
        self.pnl_subs: set[int] = set()
        self.rate: MessageRate | None = None
        self.arrived: float | None = None  # monotonic time the current chunk was read
        # reqMktData ids the entitlement gate let through as delayed data.
        self.delayed_reqs: set[int] = set()
        # Dropped by a Gateway restart, which forgets the client rather than remembering its close.
        self.restart_dropped = False

    @property
    def is_master(self) -> bool:
        return self.client_id == 0

    def send(self, fields: Sequence[Any]) -> None:
        self.send_many([fields])

    def send_many(self, messages: Sequence[Sequence[Any]]) -> None:
        if self.closed or not messages:
            return
        data = b"".join(P.encode_frame(m) for m in messages)
        try:
            self.writer.write(data)
        except (ConnectionError, RuntimeError) as e:
            log.info("client %s: write failed: %s", self.peer, e)
            self.close()
            return
        self.server.stats["messages_sent"] += len(messages)
        transport = self.writer.transport
        if transport is not None and transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("client %s is not reading; closing it", self.peer)
            self.close()

    def send_error(self, req_id: int, code: int, text: str, advanced_json: str = "") -> None:
        self.server.stats["errors"][code] += 1
        self.send(P.msg_error(self.version, req_id, code, text, advanced_json))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.writer.close()
        except RuntimeError:
            pass

    def __repr__(self) -> str:
        return f"ClientSession(#{self.conn_no}, clientId={self.client_id}, {self.peer})"


Handler = Callable[[ClientSession, list[str]], Any]


class SimServer:
    """The simulated IB Gateway: accepts API clients and runs one simulation-step task."""

    def __init__(
        self,
        options: SimOptions | None = None,
        market: MarketModel | None = None,
        clock: Any = None,
        monotonic: Monotonic = _time.monotonic,
    ):
        self.options = options or SimOptions()
        opts = self.options
        # Real seconds for everything the Gateway times by its own wall clock: pacing windows,
        # history delays, restart downtime, the client-id memory.
        self.monotonic = monotonic
        self.symbols = tuple(s.strip().upper() for s in opts.symbols)
        self.market = market or MarketModel(
            seed=opts.seed, specs=[default_spec(s) for s in self.symbols]
        )
        if clock is None:
            start = opts.start or self.market.sessions_back(datetime.now(UTC), 0)
            clock = ScaledClock(start, scale=opts.time_scale)
        self.clock = clock
        self.book = OrderBook(
            account=opts.account,
            starting_cash=opts.starting_cash,
            commission_per_contract=opts.commission_per_contract,
            min_commission=opts.min_commission,
            quote_fn=self._book_quote,
            tick_fn=self._price_tick,
            seed=opts.seed,
        )
        self.book.listener = self
        self.book.fill_policy = self._fill_policy
        self.pacing = Pacing(opts.pacing, monotonic=monotonic)
        self.faults = FaultInjector(self._fault_origin(), seed=opts.seed)
        if opts.scenario is not None:
            self.faults.load(opts.scenario)
        self.stats: dict[str, Any] = {
            "connections": 0,
            "active_clients": 0,
            "refused": 0,
            "malformed": 0,
            "unknown_requests": 0,
            "requests": Counter(),
            "errors": Counter(),
            "messages_sent": 0,
            "fills": 0,
            "steps": 0,
            "clock_jumps": 0,
            "refused_restarting": 0,
            "dropped_connections": 0,
            # Shared with the pacing and fault objects, so they are always current.
            "violations": self.pacing.violations,
            "faults": self.faults.counts,
        }
        self.port = 0
        self.host = ""
        self.sessions: set[ClientSession] = set()
        self.by_client: dict[int, ClientSession] = {}
        self._server: asyncio.Server | None = None
        self._step_task: asyncio.Task | None = None
        self._conn_tasks: set[asyncio.Task] = set()
        self._conn_no = 0
        self._contracts: dict[int, SimContract] = {}
        self._quote_cache: dict[tuple[int, float], Any] = {}
        self._hours_cache: dict[date, tuple[str, str, str]] = {}
        self._prev_close_cache: dict[tuple[int, date], float] = {}
        self._account_dirty = False
        self._last_account_push: datetime | None = None
        # reqPnL: the day's baseline (New York date, net liquidation and realized P&L at its
        # start). The simulator starts flat, so its first day starts from the starting cash.
        self._pnl_day: tuple[Any, float, float] | None = None
        self._session_bounds: tuple[datetime, datetime] | None = None
        self._held: list[HeldRequest] = []
        self._refuse_until = -math.inf
        self._last_closed: dict[int, float] = {}
        self._outages: list[Fault] = []
        self._broken_farms: dict[int, Fault] = {}
        self._gates: dict[int, Callable[[ClientSession, list[str], datetime], bool]] = {
            In.START_API: self._gate_start_api,
            In.REQ_MKT_DATA: self._gate_mkt_data,
            In.REQ_REAL_TIME_BARS: self._gate_real_time_bars,
            In.REQ_HISTORICAL_DATA: self._gate_historical,
            In.CANCEL_HISTORICAL_DATA: self._gate_cancel_historical,
            In.REQ_CONTRACT_DATA: self._gate_contract_details,
            In.REQ_SEC_DEF_OPT_PARAMS: self._gate_sec_def,
            In.PLACE_ORDER: self._gate_place_order,
            In.CANCEL_ORDER: self._gate_cancel_order,
        }
        self._handlers: dict[int, Handler] = {
            In.START_API: self._h_start_api,
            In.REQ_MKT_DATA: self._h_req_mkt_data,
            In.CANCEL_MKT_DATA: self._h_cancel_mkt_data,
            In.PLACE_ORDER: self._h_place_order,
            In.CANCEL_ORDER: self._h_cancel_order,
            In.REQ_OPEN_ORDERS: self._h_req_open_orders,
            In.REQ_ALL_OPEN_ORDERS: self._h_req_all_open_orders,
            In.REQ_AUTO_OPEN_ORDERS: self._h_req_auto_open_orders,
            In.REQ_ACCT_DATA: self._h_req_account_updates,
            In.REQ_EXECUTIONS: self._h_req_executions,
            In.REQ_IDS: self._h_req_ids,
            In.REQ_CONTRACT_DATA: self._h_req_contract_details,
            In.REQ_MANAGED_ACCTS: self._h_req_managed_accounts,
            In.REQ_HISTORICAL_DATA: self._h_req_historical_data,
            In.CANCEL_HISTORICAL_DATA: self._h_cancel_historical_data,
            In.REQ_CURRENT_TIME: self._h_req_current_time,
            In.REQ_REAL_TIME_BARS: self._h_req_real_time_bars,
            In.CANCEL_REAL_TIME_BARS: self._h_cancel_real_time_bars,
            In.REQ_GLOBAL_CANCEL: self._h_req_global_cancel,
            In.REQ_MARKET_DATA_TYPE: self._h_req_market_data_type,
            In.REQ_POSITIONS: self._h_req_positions,
            In.CANCEL_POSITIONS: self._h_cancel_positions,
            In.REQ_POSITIONS_MULTI: self._h_req_positions_multi,
            In.CANCEL_POSITIONS_MULTI: self._h_cancel_positions_multi,
            In.REQ_ACCOUNT_SUMMARY: self._h_req_account_summary,
            In.CANCEL_ACCOUNT_SUMMARY: self._h_cancel_account_summary,
            In.REQ_ACCOUNT_UPDATES_MULTI: self._h_req_account_updates_multi,
            In.CANCEL_ACCOUNT_UPDATES_MULTI: self._h_cancel_account_updates_multi,
            In.REQ_SEC_DEF_OPT_PARAMS: self._h_req_sec_def_opt_params,
            In.REQ_MARKET_RULE: self._h_req_market_rule,
            In.REQ_COMPLETED_ORDERS: self._h_req_completed_orders,
            In.REQ_PNL: self._h_req_pnl,
            In.CANCEL_PNL: self._h_cancel_pnl,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._on_connect, host, port)
        sock = self._server.sockets[0]
        self.host, self.port = sock.getsockname()[:2]
        self._step_task = asyncio.create_task(self._run_steps(), name="sim-steps")
        log.info(
            "simulated IB Gateway listening on %s:%s (clock %r)", self.host, self.port, self.clock
        )
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._step_task is not None:
            self._step_task.cancel()
            try:
                await self._step_task
            except asyncio.CancelledError:
                pass
            self._step_task = None
        for session in list(self.sessions):
            session.close()
        tasks = list(self._conn_tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # ------------------------------------------------------------------ connections

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.monotonic() < self._refuse_until:
            # A Gateway that is starting accepts the TCP connection and closes it at once.
            self.stats["refused_restarting"] += 1
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        self._conn_no += 1
        session = ClientSession(self, reader, writer, self._conn_no)
        self.stats["connections"] += 1
        try:
            await self._serve(session)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            log.info("%r: connection lost: %s", session, e)
        except Exception:
            log.exception("%r: session crashed", session)
        finally:
            self._drop_session(session)
            session.close()
            if task is not None:
                self._conn_tasks.discard(task)

    async def _serve(self, session: ClientSession) -> None:
        buf = b""
        hs = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANDSHAKE_TIMEOUT
        while hs is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.info("%r: no handshake; closing", session)
                return
            try:
                chunk = await asyncio.wait_for(session.reader.read(4096), remaining)
            except TimeoutError:
                log.info("%r: handshake timed out", session)
                return
            if not chunk:
                return
            buf += chunk
            try:
                hs = P.parse_handshake(buf)
            except ProtocolError as e:
                self.stats["malformed"] += 1
                log.warning("%r: bad handshake: %s", session, e)
                return
        version = P.choose_version(hs.min_version, hs.max_version, self.options.server_version)
        if version is None:
            self.stats["refused"] += 1
            log.warning(
                "%r: client speaks v%d..%d, server %d: no common version; closing",
                session,
                hs.min_version,
                hs.max_version,
                self.options.server_version,
            )
            return
        session.version = version
        self.sessions.add(session)
        session.writer.write(P.handshake_reply(version, self.clock.now()))
        frames = P.FrameBuffer()
        pending = buf[hs.consumed :]
        while not session.closed:
            if pending:
                data, pending = pending, b""
            else:
                data = await session.reader.read(65536)
                if not data:
                    return
            # The Gateway counts messages as they arrive, not as it gets round to them: a
            # chunk is stamped when read, so a slow answer does not bunch up the ones after it.
            session.arrived = self.monotonic()
            try:
                messages = frames.feed(data)
            except ProtocolError as e:
                self.stats["malformed"] += 1
                log.warning("%r: malformed frame: %s; closing", session, e)
                return
            for fields in messages:
                if session.closed:
                    return
                await self.dispatch(session, fields)

    def _drop_session(self, session: ClientSession) -> None:
        self.sessions.discard(session)
        if session.client_id is not None and self.by_client.get(session.client_id) is session:
            del self.by_client[session.client_id]
            if not session.restart_dropped:
                self._last_closed[session.client_id] = self.monotonic()
        self._held = [h for h in self._held if h.session is not session]
        self.stats["active_clients"] = len(self.by_client)
        session.mkt_subs.clear()
        session.hist_subs.clear()
        session.rt_subs.clear()

    # ------------------------------------------------------------------ dispatch

    def before_request(self, session: ClientSession, msg_id: int, fields: list[str]) -> bool:
        """The one choke point for pacing and faults: False drops the request (its answer, if any, is sent here)."""
        if not self._rate_ok(session):
            return False
        now = self.clock.now()
        # Time-triggered faults apply to this request even if no simulation step has run since.
        self._poll_faults(now)
        if session.closed:
            return False
        if not session.api_started and msg_id != In.START_API:
            return True
        kind = REQUEST_KINDS.get(msg_id, "other")
        client_id = session.client_id
        if msg_id == In.START_API:
            client_id = _safe(lambda: P.Reader(fields, 2).int())
        self.faults.observe(kind, self._request_symbol(session, msg_id, fields, now), client_id)
        gate = self._gates.get(msg_id)
        if gate is None:
            return True
        try:
            return gate(session, fields, now)
        except (ProtocolError, ValueError, IndexError, TypeError) as e:
            # Let the handler report the unreadable request the usual way.
            log.debug("%r: gate for %d could not read the request: %s", session, msg_id, e)
            return True

    async def dispatch(self, session: ClientSession, fields: list[str]) -> None:
        """The one entry point for every request a client sends."""
        if not fields:
            return
        try:
            msg_id = int(fields[0])
        except ValueError:
            self.stats["malformed"] += 1
            log.warning("%r: non-numeric message id %r; closing", session, fields[0][:20])
            session.close()
            return
        self.stats["requests"][msg_id] += 1
        try:
            await self._dispatch(session, msg_id, fields)
        finally:
            # Faults triggered by the Nth request start once it has been answered.
            self._after_request()

    async def _dispatch(self, session: ClientSession, msg_id: int, fields: list[str]) -> None:
        ok = self.before_request(session, msg_id, fields)
        if inspect.isawaitable(ok):
            ok = await ok
        if not ok:
            return
        if not session.api_started and msg_id != In.START_API:
            log.info("%r: request %d before startApi ignored", session, msg_id)
            return
        handler = self._handlers.get(msg_id)
        if handler is None:
            self.stats["unknown_requests"] += 1
            log.info("%r: unhandled message id %d ignored", session, msg_id)
            return
        self._run_handler(session, msg_id, handler, fields)

    def _run_handler(
        self, session: ClientSession, msg_id: int, handler: Handler, fields: list[str]
    ) -> None:
        try:
            handler(session, fields)
        except (ProtocolError, ValueError, IndexError, TypeError) as e:
            log.warning("%r: cannot read request %d: %s", session, msg_id, e, exc_info=True)
            session.send_error(-1, 320, f"Error reading request: message id {msg_id}: {e}")
        except Exception as e:
            # A simulator bug must cost one request, not the client's session.
            log.exception("%r: request %d failed", session, msg_id)
            session.send_error(-1, 320, f"Error processing request: message id {msg_id}: {e}")

    def _after_request(self) -> None:
        try:
            self._poll_faults(self.clock.now())
            self._release_held()
        except Exception:
            log.exception("fault or pacing bookkeeping failed")

    # ------------------------------------------------------------------ pacing

    def set_pacing(self, options: PacingOptions) -> None:
        """Change the pacing rules of a running simulator (windows and message counts start afresh)."""
        self.pacing.configure(options)
        for s in self.sessions:
            s.rate = None

    def _rate_ok(self, session: ClientSession) -> bool:
        if not self.pacing.on("message_rate"):
            return True
        if session.rate is None:
            session.rate = self.pacing.new_message_rate()
        verdict = session.rate.check(session.arrived)
        if verdict is RateVerdict.OK:
            return True
        if verdict is RateVerdict.DROP:
            return False
        rate = session.rate
        self.pacing.record(MESSAGE_RATE)
        session.send_error(
            -1, 100, message_rate_text(rate.limit, rate.received_in_window, rate.violations)
        )
        if verdict is RateVerdict.DISCONNECT:
            self.pacing.record(MESSAGE_RATE_DISCONNECT)
            self.stats["dropped_connections"] += 1
            log.warning("%r: message rate violation %d; dropping it", session, rate.violations)
            session.close()
        return False

    def _lines_in_use(self) -> int:
        return sum(len(s.mkt_subs) + len(s.rt_subs) for s in self.sessions if not s.closed)

    def _open_historical(self) -> int:
        subs = sum(len(s.hist_subs) for s in self.sessions if not s.closed)
        return subs + sum(1 for h in self._held if h.open)

    # ------------------------------------------------------------------ gates

    def _request_symbol(
        self, s: ClientSession, msg_id: int, fields: list[str], now: datetime
    ) -> str | None:
        """The (underlying) symbol a request is about, or None."""
        try:
            if msg_id == In.REQ_HISTORICAL_DATA:
                c = P.decode_req_historical_data(fields).contract
            elif msg_id == In.REQ_MKT_DATA:
                c = P.decode_req_mkt_data(fields).contract
            elif msg_id == In.REQ_CONTRACT_DATA:
                c = P.decode_req_contract_details(fields).contract
            elif msg_id == In.PLACE_ORDER:
                c = P.decode_place_order(fields, s.version).contract
            elif msg_id == In.REQ_REAL_TIME_BARS:
                r = P.Reader(fields, 2)
                r.skip(1)
                c = P.read_contract(r)
            elif msg_id == In.REQ_SEC_DEF_OPT_PARAMS:
                r = P.Reader(fields, 1)
                r.skip(1)
                symbol = r.str().strip().upper()
                r.skip(2)
                con_id = r.int()
                if not symbol and con_id:
                    known = self.contract_by_con_id(con_id, now)
                    return known.symbol if known else None
                return symbol or None
            elif msg_id == In.CANCEL_ORDER:
                order = self.book.find_for_client(
                    s.client_id or 0, P.Reader(fields, 2).int(), s.is_master
                )
                return order.contract.symbol if order else None
            else:
                return None
        except (ProtocolError, ValueError, IndexError, TypeError):
            return None
        if c.symbol:
            return c.symbol
        if c.local_symbol:
            occ = P.parse_occ_local_symbol(c.local_symbol)
            return occ[0] if occ else c.local_symbol.strip().upper()
        if c.con_id:
            known = self.contract_by_con_id(c.con_id, now)
            return known.symbol if known else None
        return None

    def _not_found(self, s: ClientSession, symbol: str | None, req_id: int) -> bool:
        """Error 200 for a symbol a contract_not_found fault hides; True when it did."""
        f = self.faults.active("contract_not_found", symbol, s.client_id)
        if f is None:
            return False
        self.faults.hit(f)
        s.send_error(req_id, 200, ERR_NO_SECURITY)
        return True

    def _gate_start_api(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        if s.api_started:
            return True
        client_id = P.Reader(fields, 2).int()
        for f in self.faults.all_active("client_id_in_use"):
            if f.client_ids is not None and client_id not in f.client_ids:
                continue
            if f["mode"] == "quick_reconnect":
                closed = self._last_closed.get(client_id)
                if closed is None or self.monotonic() - closed >= f["within_seconds"]:
                    continue
            self.faults.hit(f)
            log.info("%r: fault %s refuses client id %d", s, f.label, client_id)
            s.send_error(-1, 326, ERR_CLIENT_ID_IN_USE)
            s.close()
            return False
        return True

    def _gate_mkt_data(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        req = P.decode_req_mkt_data(fields)
        symbol = self._request_symbol(s, In.REQ_MKT_DATA, fields, now)
        s.delayed_reqs.discard(req.req_id)
        if self._not_found(s, symbol, req.req_id):
            return False
        f = self.faults.active("no_entitlement", symbol, s.client_id)
        if f is not None:
            self.faults.hit(f)
            delayed_type = s.market_data_type in (3, 4)
            if not delayed_type:
                is_stock = req.contract.sec_type in ("", "STK") and symbol is not None
                exchange = self.market.spec(symbol).primary_exchange if is_stock else "OPRA"
                text = ERR_NO_ENTITLEMENT[f["code"]].format(symbol=symbol, exchange=exchange)
                s.send_error(req.req_id, f["code"], text)
                return False
            if not f["delayed"]:
                s.send_error(req.req_id, 10168, ERR_DELAYED_NOT_ENABLED)
                return False
            s.delayed_reqs.add(req.req_id)
        snapshot = req.snapshot or req.regulatory_snapshot
        if not snapshot and req.req_id not in s.mkt_subs:
            if not self.pacing.lines_allow(self._lines_in_use()):
                s.send_error(req.req_id, 101, LINES_TEXT)
                return False
        return True

    def _gate_real_time_bars(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        req_id = P.Reader(fields, 2).int()
        symbol = self._request_symbol(s, In.REQ_REAL_TIME_BARS, fields, now)
        if self._not_found(s, symbol, req_id):
            return False
        if req_id not in s.rt_subs and not self.pacing.lines_allow(self._lines_in_use()):
            s.send_error(req_id, 101, LINES_TEXT)
            return False
        return True

    def _gate_historical(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        req = P.decode_req_historical_data(fields)
        symbol = self._request_symbol(s, In.REQ_HISTORICAL_DATA, fields, now)
        if self._not_found(s, symbol, req.req_id):
            return False
        full = self.pacing.open_full(self._open_historical())
        fail_when_full = self.pacing.options.open_historical_overflow == "fail"
        if full and fail_when_full:
            # Refused before it reaches the data farm, so it does not count for pacing.
            self.pacing.record(OPEN_HISTORICAL)
            limit = self.pacing.options.max_open_historical
            s.send_error(req.req_id, 162, OPEN_HISTORICAL_TEXT.format(limit=limit))
            return False
        if self.pacing.historical_applies(parse_bar_size(req.bar_size)):
            rule = self.pacing.check_historical(*self._hist_keys(req, now))
            if rule is not None:
                log.info("%r: historical request %d breaks %s", s, req.req_id, rule)
                s.send_error(req.req_id, 162, HIST_PACING_TEXT)
                return False
        if full:
            self.pacing.record(OPEN_HISTORICAL)
            self._held.append(HeldRequest(s, req.req_id, fields, "queue", symbol=symbol))
            return False
        return not self._hold_historical(s, req.req_id, fields, symbol)

    def _hist_keys(self, req: P.HistoricalDataRequest, now: datetime) -> tuple[Any, Any, int]:
        c = req.contract
        found = self.resolve(c, now)
        ident: Any = (
            found[0].con_id
            if len(found) == 1
            else (c.con_id, c.symbol, c.sec_type, c.expiry, c.strike, c.right, c.local_symbol)
        )
        what = req.what_to_show
        identical = (
            ident,
            c.exchange,
            req.end.strip(),
            req.bar_size.strip(),
            req.duration.strip(),
            req.use_rth,
            what,
            req.format_date,
            req.keep_up_to_date,
        )
        # IB counts a BID_ASK request twice.
        return identical, (ident, c.exchange, what), 2 if what == "BID_ASK" else 1

    def _hold_historical(
        self, s: ClientSession, req_id: int, fields: list[str], symbol: str | None
    ) -> bool:
        """Hold a historical request a fault keeps unanswered; True when it is held."""
        if (f := self.faults.active("history_stall", symbol, s.client_id)) is not None:
            self.faults.hit(f)
            self._held.append(HeldRequest(s, req_id, fields, "stall", symbol=symbol))
            return True
        if (f := self.faults.active("history_delay", symbol, s.client_id)) is not None:
            self.faults.hit(f)
            release = self.monotonic() + f["delay_seconds"]
            self._held.append(HeldRequest(s, req_id, fields, "delay", release, symbol))
            return True
        if 2105 in self._broken_farms:
            self._held.append(HeldRequest(s, req_id, fields, "farm:2105", symbol=symbol))
            return True
        if self._outages:
            self._held.append(HeldRequest(s, req_id, fields, "outage", symbol=symbol))
            return True
        return False

    def _gate_cancel_historical(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        req_id = P.Reader(fields, 2).int()
        self._held = [
            h
            for h in self._held
            if not (h.session is s and h.req_id == req_id and h.msg_id == In.REQ_HISTORICAL_DATA)
        ]
        return True

    def _gate_contract_details(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        req_id = P.Reader(fields, 2).int()
        symbol = self._request_symbol(s, In.REQ_CONTRACT_DATA, fields, now)
        if self._not_found(s, symbol, req_id):
            return False
        return not self._hold_sec_def(s, In.REQ_CONTRACT_DATA, req_id, fields)

    def _hold_sec_def(self, s: ClientSession, msg_id: int, req_id: int, fields: list[str]) -> bool:
        """Contract lookups wait while the sec-def farm is broken; True when this one waits."""
        if 2157 not in self._broken_farms:
            return False
        self._held.append(HeldRequest(s, req_id, fields, "farm:2157", msg_id=msg_id))
        return True

    def _gate_sec_def(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        req_id = P.Reader(fields, 1).int()
        symbol = self._request_symbol(s, In.REQ_SEC_DEF_OPT_PARAMS, fields, now)
        if self._not_found(s, symbol, req_id):
            return False
        if self._hold_sec_def(s, In.REQ_SEC_DEF_OPT_PARAMS, req_id, fields):
            return False
        f = self.faults.active("empty_chain", symbol, s.client_id)
        if f is not None:
            self.faults.hit(f)
            s.send(P.msg_sec_def_opt_params_end(req_id))
            return False
        return True

    def _gate_place_order(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        req = P.decode_place_order(fields, s.version)
        symbol = self._request_symbol(s, In.PLACE_ORDER, fields, now)
        client_id = s.client_id or 0
        if (f := self.faults.active("read_only", symbol, client_id)) is not None:
            self.faults.hit(f)
            s.send_error(req.order_id, 321, ERR_READ_ONLY)
            return False
        if self._not_found(s, symbol, req.order_id):
            return False
        is_new = self.book.get(client_id, req.order_id) is None
        if is_new and (f := self.faults.active("order_reject", symbol, client_id)) is not None:
            self.faults.hit(f)
            self.book.consume_order_id(client_id, req.order_id)
            s.send_error(req.order_id, 201, f"Order rejected - reason:{f['reason']}")
            return False
        return True

    def _gate_cancel_order(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        order_id = P.Reader(fields, 2).int()
        order = self.book.find_for_client(s.client_id or 0, order_id, s.is_master)
        if order is None or not order.is_live:
            return True
        f = self.faults.active("fill_after_cancel", order.contract.symbol, order.client_id)
        if f is None:
            return True
        quote = self._book_quote(order.contract, now)
        price = self._racing_fill_price(order, quote)
        if price is None:
            return True
        self.faults.hit(f)
        order.status = PENDING_CANCEL
        self.order_changed(order, False)
        fraction = self.faults.draw(f, f["fraction"])
        qty = _fill_quantity(order.remaining, fraction, allow_all=True)
        # The fill was already on its way from the exchange when the cancel arrived.
        self.book.fill_now(order, qty, price, now)
        if not order.is_done:
            self.book.cancel_by_system(order, now, reason="")
        self._account_dirty = True
        return False

    def _racing_fill_price(self, order: SimOrder, quote: Quote | None) -> float | None:
        if order.order_type in ("LMT", "STP LMT") and order.lmt_price:
            return order.lmt_price
        if order.order_type == "STP" and order.aux_price:
            return order.aux_price
        if quote is None:
            return None
        price = quote.ask if order.action == "BUY" else quote.bid
        return price if price and price > 0 and math.isfinite(price) else None

    # ------------------------------------------------------------------ faults

    def _fault_origin(self) -> datetime:
        """Where "+15m" in a scenario counts from: the first simulated instant the simulator serves."""
        now = self.clock.now()
        if self.options.skip_closed and not self.market.is_open(now):
            return self.market.next_open(now)
        return now

    def _poll_faults(self, now: datetime) -> None:
        started, ended = self.faults.poll(now)
        for f in started:
            try:
                self._start_fault(f, now)
            except Exception:
                log.exception("fault %s failed to start", f.label)
        for f in ended:
            try:
                self._end_fault(f, now)
            except Exception:
                log.exception("fault %s failed to end", f.label)

    def _targets(self, f: Fault) -> list[ClientSession]:
        return [
            s
            for s in list(self.sessions)
            if s.api_started
            and not s.closed
            and (f.client_ids is None or s.client_id in f.client_ids)
        ]

    def _start_fault(self, f: Fault, now: datetime) -> None:
        log.info("fault %s starts at %s", f.label, now.isoformat())
        kind = f.kind
        if kind == "disconnect":
            for s in self._targets(f):
                self.stats["dropped_connections"] += 1
                s.close()
        elif kind == "gateway_restart":
            self._restart(f["down_seconds"])
        elif kind == "clock_jump":
            self.clock.jump(f["by"])
            self.stats["clock_jumps"] += 1
            self._quote_cache.clear()
        elif kind == "exchange_cancel":
            reason = f["reason"]
            for order in self.book.live_orders():
                if f.matches(order.contract.symbol if f.symbols else None, order.client_id):
                    self.book.cancel_by_system(order, now, reason=reason)
        elif kind == "connectivity_lost":
            self.faults.hit(f)
            self._outages.append(f)
            for s in self._targets(f):
                s.send_error(-1, 1100, MSG_CONNECTIVITY_LOST)
        elif kind == "farm":
            self.faults.hit(f)
            self._farm_message(f, f["code"])

    def _end_fault(self, f: Fault, now: datetime) -> None:
        log.info("fault %s ends at %s", f.label, now.isoformat())
        if f.kind == "connectivity_lost":
            if f in self._outages:
                self._outages.remove(f)
            lost = f["restore"] == "data_lost"
            for s in self._targets(f):
                if lost:
                    s.mkt_subs.clear()
                    s.hist_subs.clear()
                    s.rt_subs.clear()
                    s.send_error(-1, 1101, MSG_RESTORED_DATA_LOST)
                else:
                    s.send_error(-1, 1102, MSG_RESTORED_DATA_KEPT)
            if not self._outages:
                self._release_where(lambda h: h.reason == "outage")
        elif f.kind == "farm" and f["code"] in FARM_RECOVERY:
            self._farm_message(f, FARM_RECOVERY[f["code"]])

    def _farm_message(self, f: Fault, code: int) -> None:
        text = FARM_TEXTS[code].format(farm=f["farm"])
        for s in self._targets(f):
            s.send_error(-1, code, text)
        if code in FARM_RECOVERY:
            self._broken_farms[code] = f
            return
        for broken, ok in FARM_RECOVERY.items():
            if ok == code and self._broken_farms.pop(broken, None) is not None:
                self._release_where(lambda h, why=f"farm:{broken}": h.reason == why)

    def _restart(self, down_seconds: float) -> None:
        log.warning("Gateway restart: dropping every client, down for %.1fs", down_seconds)
        for s in list(self.sessions):
            s.restart_dropped = True
            self.stats["dropped_connections"] += 1
            s.close()
        self._held.clear()
        # A fresh Gateway remembers no client ids and no farm or connectivity trouble.
        self._last_closed.clear()
        self._outages.clear()
        self._broken_farms.clear()
        self._refuse_until = self.monotonic() + down_seconds

    def _release_where(self, pred: Callable[[HeldRequest], bool]) -> None:
        due = [h for h in self._held if pred(h)]
        if not due:
            return
        self._held = [h for h in self._held if not pred(h)]
        for h in due:
            self._answer_held(h)

    def _release_held(self) -> None:
        if not self._held:
            return
        mono = self.monotonic()
        self._release_where(
            lambda h: h.reason == "delay" and h.release_at is not None and h.release_at <= mono
        )
        limit = self.pacing.options.max_open_historical
        while any(h.reason == "queue" for h in self._held):
            if self.pacing.on("open_historical") and self._open_historical() >= limit:
                break
            h = next(h for h in self._held if h.reason == "queue")
            self._held.remove(h)
            # Faults that started while it waited apply to it as to a fresh request.
            if not self._hold_historical(h.session, h.req_id, h.fields, h.symbol):
                self._answer_held(h)

    def _answer_held(self, h: HeldRequest) -> None:
        if h.session.closed:
            return
        self._run_handler(h.session, h.msg_id, self._handlers[h.msg_id], h.fields)

    def _fill_policy(self, order: SimOrder, price: float, now: datetime) -> tuple[float, float]:
        """Quantity and price of the next fill, as partial_fill and slippage faults change them."""
        qty = order.remaining
        symbol = order.contract.symbol
        slip = self.faults.active("slippage", symbol, order.client_id)
        if slip is not None:
            ticks = self.faults.draw_int(slip, slip["ticks"])
            tick = self._price_tick(order.contract, price)
            worse = price + order.side * ticks * tick
            if order.order_type in ("LMT", "STP LMT") and order.lmt_price:
                worse = (
                    min(worse, order.lmt_price) if order.side > 0 else max(worse, order.lmt_price)
                )
            worse = round(round(worse / tick) * tick, 6)
            if worse > 0 and worse != price:
                self.faults.hit(slip)
                price = worse
        partial = self.faults.active("partial_fill", symbol, order.client_id)
        if partial is not None:
            fraction = self.faults.draw(partial, partial["fraction"])
            part = _fill_quantity(qty, fraction, allow_all=False)
            if part < qty:
                self.faults.hit(partial)
                qty = part
        return qty, price

    # ------------------------------------------------------------------ simulation step

    async def _run_steps(self) -> None:
        interval = max(0.001, float(self.options.tick_interval))
        while True:
            try:
                self.step()
            except Exception:
                log.exception("simulation step failed")
            await asyncio.sleep(interval)

    def step(self) -> None:
        """Advance the simulation once: sessions, matching, ticks, bars, account pushes."""
        self.stats["steps"] += 1
        self._quote_cache.clear()
        self._poll_faults(self.clock.now())
        self._release_held()
        now = self.clock.now()
        is_open = self.market.is_open(now)
        bounds = self.market.session_open_close(now) if is_open else None
        if self._session_bounds is not None and bounds != self._session_bounds:
            self.book.expire_day_orders(now)
        self._session_bounds = bounds
        if not is_open and self.options.skip_closed:
            target = self.market.next_open(now)
            jump = getattr(self.clock, "jump_to", None) or self.clock.set
            jump(target)
            self.stats["clock_jumps"] += 1
            self._quote_cache.clear()
            now = self.clock.now()
            is_open = self.market.is_open(now)
            self._session_bounds = self.market.session_open_close(now) if is_open else None
        if self.book.match(now, is_open):
            self._account_dirty = True
        for session in list(self.sessions):
            if session.closed or not session.api_started:
                continue
            try:
                self._stream_session(session, now, is_open)
            except Exception:
                log.exception("%r: streaming failed", session)
        due = self._last_account_push is None or now - self._last_account_push >= ACCOUNT_REFRESH
        if self._account_dirty or (due and self.book.positions):
            self._push_account(now)

    def _stream_session(self, session: ClientSession, now: datetime, is_open: bool) -> None:
        if self._outages:
            return
        if 2103 not in self._broken_farms:
            for sub in list(session.mkt_subs.values()):
                msgs = self._tick_messages(sub, now, force=False, client_id=session.client_id)
                session.send_many(msgs)
        if is_open and 2105 not in self._broken_farms:
            interval = timedelta(seconds=self.options.bar_update_interval)
            for hsub in list(session.hist_subs.values()):
                if now - hsub.last_update >= interval:
                    hsub.last_update = now
                    self._send_bar_updates(session, hsub, now)
            for rsub in list(session.rt_subs.values()):
                self._send_real_time_bars(session, rsub, now)

    # ------------------------------------------------------------------ market helpers

    def _quote(self, c: SimContract, now: datetime) -> Any:
        key = (c.con_id, now.timestamp())
        q = self._quote_cache.get(key)
        if q is None:
            if c.is_option:
                q = self.market.option_quote(c.symbol, c.expiry, c.strike, c.right, now)
            else:
                q = self.market.quote(c.symbol, now)
            if len(self._quote_cache) > 10_000:
                self._quote_cache.clear()
            self._quote_cache[key] = q
        return q

    def _book_quote(self, c: SimContract, now: datetime) -> Quote | None:
        try:
            q = self._quote(c, now)
        except (ValueError, KeyError) as e:
            log.debug("no quote for %s: %s", c.local_symbol, e)
            return None
        return Quote(q.bid, q.ask, q.bid_size, q.ask_size)

    def _price_tick(self, c: SimContract, price: float) -> float:
        if c.is_option:
            return option_tick(c.symbol, price)
        return 0.01 if price >= 1.0 else 0.0001

    def _prev_close(self, c: SimContract, now: datetime) -> float | None:
        """The previous session's closing price, as IB's close tick (9) reports it."""
        try:
            prev_open = self.market.sessions_back(now, 1)
        except ValueError:
            return None
        bounds = self.market.session_open_close(prev_open)
        if bounds is None:
            return None
        key = (c.con_id, bounds[1].date())
        cached = self._prev_close_cache.get(key)
        if cached is not None:
            return cached
        if c.is_option:
            value = self.market.option_quote(
                c.symbol, c.expiry, c.strike, c.right, bounds[1] - timedelta(seconds=1)
            ).last
        else:
            value = self.market.last_price(c.symbol, bounds[1])
        if len(self._prev_close_cache) > 10_000:
            self._prev_close_cache.clear()
        self._prev_close_cache[key] = value
        return value

    # ------------------------------------------------------------------ contracts

    def stock_contract(self, symbol: str, exchange: str = "SMART") -> SimContract:
        spec = self.market.spec(symbol)
        c = SimContract(
            con_id=spec.con_id,
            symbol=spec.symbol,
            sec_type="STK",
            exchange=exchange or "SMART",
            primary_exchange=spec.primary_exchange,
            currency="USD",
            local_symbol=spec.symbol,
            # IB files every Nasdaq-listed stock under trading class NMS.
            trading_class="NMS" if spec.primary_exchange == "NASDAQ" else spec.symbol,
        )
        self._contracts.setdefault(c.con_id, _with_exchange(c, "SMART"))
        return c

    def option_contract(
        self,
        symbol: str,
        expiry: str,
        strike: float,
        right: str,
        trading_class: str,
        multiplier: str,
        exchange: str = "SMART",
    ) -> SimContract:
        con_id = self._option_con_id(symbol, expiry, strike, right)
        c = SimContract(
            con_id=con_id,
            symbol=symbol,
            sec_type="OPT",
            expiry=expiry,
            strike=float(strike),
            right=right,
            multiplier=multiplier,
            exchange=exchange or "SMART",
            primary_exchange="",
            currency="USD",
            local_symbol=P.occ_local_symbol(symbol, expiry, float(strike), right),
            trading_class=trading_class,
        )
        known = self._contracts.setdefault(con_id, _with_exchange(c, "SMART"))
        if known.local_symbol != c.local_symbol:
            # conIds are a 30-bit hash; a clash would make conId lookups ambiguous, so make it loud.
            log.error("conId %d clash: %s and %s", con_id, known.local_symbol, c.local_symbol)
        return c

    def _option_con_id(self, symbol: str, expiry: str, strike: float, right: str) -> int:
        return self.market.option_con_id(symbol, expiry, strike, right)

    def _known_symbol(self, symbol: str) -> bool:
        return symbol in self.symbols

    def contract_by_con_id(self, con_id: int, now: datetime) -> SimContract | None:
        c = self._contracts.get(con_id)
        if c is not None:
            return c
        for sym in self.symbols:
            spec = self.market.spec(sym)
            if spec.con_id == con_id:
                return self.stock_contract(sym)
        # Not seen yet: search today's chains, which is where a client could have found it.
        for sym in self.symbols:
            chain = self.market.option_chain(sym, now)
            for expiry in chain.expirations:
                for strike in chain.strikes:
                    for right in ("C", "P"):
                        if self._option_con_id(sym, expiry, strike, right) == con_id:
                            return self.option_contract(
                                sym, expiry, strike, right, chain.trading_class, chain.multiplier
                            )
        return None

    def resolve(self, req: P.ContractRequest, now: datetime) -> list[SimContract]:
        """All contracts matching a request's contract fields, as IB's contract lookup would."""
        sec_type = req.sec_type
        if req.con_id and req.con_id > 0:
            c = self.contract_by_con_id(req.con_id, now)
            if c is None or (sec_type and c.sec_type != sec_type):
                return []
            return [_with_exchange(c, req.exchange or "SMART")]
        if req.currency and req.currency != "USD":
            return []
        if sec_type == "OPT" or (not sec_type and (req.right or req.strike)):
            return self._resolve_options(req, now)
        if sec_type not in ("", "STK"):
            return []
        symbol = req.symbol or req.local_symbol.strip().upper()
        if not self._known_symbol(symbol):
            return []
        if req.local_symbol and req.local_symbol.strip().upper() != symbol:
            return []
        spec = self.market.spec(symbol)
        exch = req.exchange
        if (
            exch
            and exch not in STOCK_EXCHANGES
            and exch not in EXTRA_STOCK_EXCHANGES
            and exch != spec.primary_exchange
        ):
            return []
        if (
            req.primary_exchange
            and req.primary_exchange not in (spec.primary_exchange, "SMART")
            and req.primary_exchange not in EXTRA_STOCK_EXCHANGES | set(STOCK_EXCHANGES)
        ):
            return []
        return [self.stock_contract(symbol, exch or "SMART")]

    def _resolve_options(self, req: P.ContractRequest, now: datetime) -> list[SimContract]:
        symbol, expiry, strike, right = req.symbol, req.expiry, req.strike, req.right
        if req.local_symbol:
            occ = P.parse_occ_local_symbol(req.local_symbol)
            if occ is None:
                return []
            o_sym, o_exp, o_strike, o_right = occ
            if symbol and symbol != o_sym:
                return []
            symbol, expiry, strike, right = (
                o_sym,
                expiry or o_exp,
                strike or o_strike,
                right or o_right,
            )
        if not self._known_symbol(symbol):
            return []
        if req.exchange and req.exchange not in OPTION_EXCHANGES:
            return []
        try:
            chain = self.market.option_chain(symbol, now)
        except ValueError:
            return []
        if req.trading_class and req.trading_class != chain.trading_class:
            return []
        if req.multiplier:
            try:
                if float(req.multiplier) != float(chain.multiplier):
                    return []
            except ValueError:
                return []
        if expiry:
            if len(expiry) == 8:
                expiries = [expiry] if expiry in chain.expirations else []
            elif len(expiry) == 6:
                expiries = [e for e in chain.expirations if e.startswith(expiry)]
            else:
                return []
        else:
            expiries = list(chain.expirations)
        if strike and strike > 0:
            strikes = [s for s in chain.strikes if abs(s - strike) < 1e-6]
        else:
            strikes = list(chain.strikes)
        if right:
            try:
                rights = [normalize_right(right)]
            except ValueError:
                return []
        else:
            rights = ["C", "P"]
        return [
            self.option_contract(
                symbol, e, s, r, chain.trading_class, chain.multiplier, req.exchange or "SMART"
            )
            for e in expiries
            for s in strikes
            for r in rights
        ]

    def _trading_hours(self, now: datetime) -> tuple[str, str, str]:
        """(tradingHours, liquidHours, optionHours) for the coming week in IB's format."""
        today = now.astimezone(P.EASTERN).date()
        cached = self._hours_cache.get(today)
        if cached:
            return cached
        trading, liquid = [], []
        for i in range(7):
            d = today + timedelta(days=i)
            noon = datetime.combine(d, time(12, 0), P.EASTERN)
            bounds = self.market.session_open_close(noon)
            ds = d.strftime("%Y%m%d")
            if bounds is None:
                trading.append(f"{ds}:CLOSED")
                liquid.append(f"{ds}:CLOSED")
                continue
            o, c = (b.astimezone(P.EASTERN) for b in bounds)
            liquid.append(f"{ds}:{o:%H%M}-{ds}:{c:%H%M}")
            late = min(c + timedelta(hours=4), datetime.combine(d, time(20, 0), P.EASTERN))
            trading.append(f"{ds}:0400-{ds}:{late:%H%M}")
        result = (";".join(trading), ";".join(liquid), ";".join(liquid))
        self._hours_cache = {today: result}
        return result

    def _option_rule(self, symbol: str) -> int:
        ticks = (option_tick(symbol, 1.0), option_tick(symbol, 5.0))
        return {
            (0.01, 0.01): RULE_OPT_PENNY,
            (0.01, 0.05): RULE_OPT_PENNY_NICKEL,
            (0.05, 0.1): RULE_OPT_NICKEL_DIME,
        }.get(ticks, RULE_OPT_PENNY)

    def _details(self, c: SimContract, now: datetime) -> P.ContractDetailsData:
        trading, liquid, option_hours = self._trading_hours(now)
        long_name, stock_type = LONG_NAMES.get(c.symbol, (f"{c.symbol} SIMULATED INC", "COMMON"))
        if c.is_option:
            rule = self._option_rule(c.symbol)
            return P.ContractDetailsData(
                market_name=c.trading_class,
                min_tick=option_tick(c.symbol, 1.0),
                order_types=OPTION_ORDER_TYPES,
                valid_exchanges=",".join(OPTION_EXCHANGES),
                under_con_id=self.market.spec(c.symbol).con_id,
                long_name=long_name,
                contract_month=c.expiry[:6],
                industry="",
                category="",
                subcategory="",
                time_zone_id="US/Eastern",
                trading_hours=option_hours,
                liquid_hours=liquid,
                agg_group=2,
                under_symbol=c.symbol,
                under_sec_type="STK",
                market_rule_ids=",".join([str(rule)] * len(OPTION_EXCHANGES)),
                real_expiration_date=c.expiry,
                stock_type="",
            )
        industry, category, sub = (
            ("Funds", "Equity Fund", "Growth&Income")
            if stock_type == "ETF"
            else ("Technology", "Software", "Simulated")
        )
        return P.ContractDetailsData(
            market_name=c.trading_class,
            min_tick=0.01,
            order_types=STOCK_ORDER_TYPES,
            valid_exchanges=",".join(STOCK_EXCHANGES),
            under_con_id=0,
            long_name=long_name,
            contract_month="",
            industry=industry,
            category=category,
            subcategory=sub,
            time_zone_id="US/Eastern",
            trading_hours=trading,
            liquid_hours=liquid,
            agg_group=1,
            under_symbol="",
            under_sec_type="",
            market_rule_ids=",".join([str(RULE_STOCK)] * len(STOCK_EXCHANGES)),
            real_expiration_date="",
            stock_type=stock_type,
            suggested_size_increment=100.0,
        )

    # ------------------------------------------------------------------ handlers: connection

    def _h_start_api(self, s: ClientSession, fields: list[str]) -> None:
        if s.api_started:
            return
        r = P.Reader(fields, 2)
        client_id = r.int()
        other = self.by_client.get(client_id)
        if other is not None and not other.closed:
            log.warning("%r: client id %d already in use by %r", s, client_id, other)
            s.send_error(-1, 326, ERR_CLIENT_ID_IN_USE)
            s.close()
            return
        s.client_id = client_id
        s.api_started = True
        self.by_client[client_id] = s
        self.stats["active_clients"] = len(self.by_client)
        log.info("%r: API started (server version %d)", s, s.version)
        s.send_many(
            [
                P.msg_managed_accounts([self.options.account]),
                P.msg_next_valid_id(self.book.next_order_id(client_id)),
            ]
        )
        for code, text in FARM_MESSAGES:
            broken = next((b for b, ok in FARM_RECOVERY.items() if ok == code), None)
            fault = self._broken_farms.get(broken) if broken else None
            if fault is not None:
                s.send_error(-1, broken, FARM_TEXTS[broken].format(farm=fault["farm"]))
            else:
                s.send_error(-1, code, text)
        if self._outages:
            s.send_error(-1, 1100, MSG_CONNECTIVITY_LOST)

    def _h_req_ids(self, s: ClientSession, fields: list[str]) -> None:
        s.send(P.msg_next_valid_id(self.book.next_order_id(s.client_id or 0)))

    def _h_req_managed_accounts(self, s: ClientSession, fields: list[str]) -> None:
        s.send(P.msg_managed_accounts([self.options.account]))

    def _h_req_current_time(self, s: ClientSession, fields: list[str]) -> None:
        s.send(P.msg_current_time(self.clock.now()))

    def _h_req_market_data_type(self, s: ClientSession, fields: list[str]) -> None:
        data_type = P.Reader(fields, 2).int(1)
        if data_type in (1, 2, 3, 4):
            s.market_data_type = data_type

    # ------------------------------------------------------------------ handlers: contracts

    def _h_req_contract_details(self, s: ClientSession, fields: list[str]) -> None:
        req = P.decode_req_contract_details(fields)
        now = self.clock.now()
        found = [] if req.sec_id_type else self.resolve(req.contract, now)
        if not found:
            s.send_error(req.req_id, 200, ERR_NO_SECURITY)
            return
        msgs = [P.msg_contract_data(s.version, req.req_id, c, self._details(c, now)) for c in found]
        msgs.append(P.msg_contract_data_end(req.req_id))
        s.send_many(msgs)

    def _h_req_sec_def_opt_params(self, s: ClientSession, fields: list[str]) -> None:
        r = P.Reader(fields, 1)
        req_id = r.int()
        symbol = r.str().strip().upper()
        exchange = r.str().strip().upper()
        sec_type = r.str().strip().upper()
        con_id = r.int()
        now = self.clock.now()
        under = self.contract_by_con_id(con_id, now) if con_id else None
        if under is not None and under.sec_type == "STK":
            symbol = under.symbol
        if not self._known_symbol(symbol) or sec_type not in ("", "STK"):
            s.send_error(req_id, 200, ERR_NO_SECURITY)
            return
        chain = self.market.option_chain(symbol, now)
        under_con_id = self.market.spec(symbol).con_id
        msgs = []
        for exch in ("SMART", "CBOE"):
            if exchange and exchange != exch:
                continue
            msgs.append(
                P.msg_sec_def_opt_params(
                    req_id,
                    exch,
                    under_con_id,
                    chain.trading_class,
                    chain.multiplier,
                    chain.expirations,
                    chain.strikes,
                )
            )
        msgs.append(P.msg_sec_def_opt_params_end(req_id))
        s.send_many(msgs)

    def _h_req_market_rule(self, s: ClientSession, fields: list[str]) -> None:
        rule_id = P.Reader(fields, 1).int()
        increments = MARKET_RULES.get(rule_id)
        if increments is None:
            log.info("%r: unknown market rule %d", s, rule_id)
            return
        s.send(P.msg_market_rule(rule_id, increments))

    # ------------------------------------------------------------------ handlers: market data

    def _h_req_mkt_data(self, s: ClientSession, fields: list[str]) -> None:
        req = P.decode_req_mkt_data(fields)
        now = self.clock.now()
        found = self.resolve(req.contract, now)
        if len(found) != 1:
            s.send_error(req.req_id, 200, ERR_NO_SECURITY)
            return
        generic = frozenset(g.strip() for g in req.generic_ticks.split(",") if g.strip())
        delayed = req.req_id in s.delayed_reqs
        s.delayed_reqs.discard(req.req_id)
        sub = MktDataSub(req.req_id, found[0], generic, delayed=delayed)
        msgs: list[Any] = []
        if delayed:
            msgs.append(P.msg_error(s.version, req.req_id, 10167, MSG_DELAYED))
            self.stats["errors"][10167] += 1
        msgs.append(P.msg_market_data_type(req.req_id, s.market_data_type))
        if not self._outages and 2103 not in self._broken_farms:
            msgs += self._tick_messages(sub, now, force=True, client_id=s.client_id)
        if req.snapshot or req.regulatory_snapshot:
            msgs.append(P.msg_tick_snapshot_end(req.req_id))
        else:
            s.mkt_subs[req.req_id] = sub
        s.send_many(msgs)

    def _h_cancel_mkt_data(self, s: ClientSession, fields: list[str]) -> None:
        s.mkt_subs.pop(P.Reader(fields, 2).int(), None)

    def _tick_messages(
        self, sub: MktDataSub, now: datetime, force: bool, client_id: int | None = None
    ) -> list[Any]:
        c = sub.contract
        if sub.delayed:
            now = now - DELAY
        try:
            q = self._quote(c, now)
        except (ValueError, KeyError) as e:
            log.debug("no quote for %s: %s", c.local_symbol, e)
            return []
        q, raw = self._faulty_quote(c, q, client_id)
        msgs = self._live_tick_messages(sub, c, q, now, force, raw)
        if sub.delayed:
            msgs = [_as_delayed(m) for m in msgs]
        return msgs

    def _faulty_quote(self, c: SimContract, q: Any, client_id: int | None) -> tuple[Any, bool]:
        """The quote as the client is sent it under the active quote faults; raw: send prices as
        they are (0 and -1 on purpose), not IB's -1 for an empty side."""
        raw = False
        for kind in QUOTE_FAULTS:
            f = self.faults.active(kind, c.symbol, client_id)
            if f is None or f["what"] not in ("both", "option" if c.is_option else "stock"):
                continue
            self.faults.hit(f)
            if kind == "quote_frozen":
                started = self.faults.started_at(f)
                if started is not None:
                    try:
                        q = self._quote(c, started)
                    except (ValueError, KeyError):
                        pass  # not listed yet at the start: nothing was frozen
            elif kind == "quote_crossed":
                q = dataclasses.replace(q, bid=round(q.ask + f["by"], 2))
            else:
                value = 0.0 if kind == "quote_zero" else -1.0
                side = f["side"]
                q = dataclasses.replace(
                    q,
                    bid=value if side in ("bid", "both") else q.bid,
                    ask=value if side in ("ask", "both") else q.ask,
                    # A size of 0 would make ib_async read the side as empty (NaN).
                    bid_size=max(1, q.bid_size),
                    ask_size=max(1, q.ask_size),
                )
                raw = True
        return q, raw

    def _live_tick_messages(
        self, sub: MktDataSub, c: SimContract, q: Any, now: datetime, force: bool, raw: bool = False
    ) -> list[Any]:
        rid = sub.req_id
        last = sub.last
        msgs: list[Any] = []

        def changed(key: str, value: Any) -> bool:
            if force or last.get(key) != value:
                last[key] = value
                return True
            return False

        if changed("bid", (q.bid, q.bid_size)):
            msgs.append(
                P.msg_tick_price(rid, Tick.BID, q.bid if q.bid > 0 or raw else -1.0, q.bid_size, 1)
            )
        if changed("ask", (q.ask, q.ask_size)):
            msgs.append(
                P.msg_tick_price(rid, Tick.ASK, q.ask if q.ask > 0 or raw else -1.0, q.ask_size, 1)
            )
        if q.last and changed("last", q.last):
            msgs.append(P.msg_tick_price(rid, Tick.LAST, q.last, 1 if c.is_option else 100, 0))
        if changed("volume", q.volume):
            msgs.append(P.msg_tick_size(rid, Tick.VOLUME, q.volume))
        if force:
            close = self._prev_close(c, now)
            if close:
                msgs.append(P.msg_tick_price(rid, Tick.CLOSE, close, 0, 0))
        if c.is_option:
            comp = (q.iv, q.delta, q.model_price, q.gamma, q.vega, q.theta, q.und_price)
            if changed("greeks", comp):
                msgs.append(
                    P.msg_tick_option_computation(
                        rid,
                        Tick.MODEL_OPTION,
                        q.iv,
                        q.delta,
                        q.model_price,
                        0.0,
                        q.gamma,
                        q.vega,
                        q.theta,
                        q.und_price,
                    )
                )
            if "106" in sub.generic and changed("iv", q.iv):
                msgs.append(P.msg_tick_generic(rid, Tick.OPTION_IMPLIED_VOL, q.iv))
            if "101" in sub.generic and force:
                oi = 500 + (c.con_id % 20_000)
                tick = (
                    Tick.OPTION_CALL_OPEN_INTEREST
                    if c.right == "C"
                    else Tick.OPTION_PUT_OPEN_INTEREST
                )
                msgs.append(P.msg_tick_size(rid, tick, oi))
        elif "106" in sub.generic and force:
            msgs.append(
                P.msg_tick_generic(rid, Tick.OPTION_IMPLIED_VOL, self.market.spec(c.symbol).vol)
            )
        return msgs

    # ------------------------------------------------------------------ handlers: historical data

    def _h_req_historical_data(self, s: ClientSession, fields: list[str]) -> None:
        req = P.decode_req_historical_data(fields)
        now = self.clock.now()
        found = self.resolve(req.contract, now)
        if len(found) != 1:
            s.send_error(req.req_id, 200, ERR_NO_SECURITY)
            return
        c = found[0]

        def hmds_error(text: str) -> None:
            s.send_error(req.req_id, 162, f"Historical Market Data Service error message:{text}")

        if c.is_option:
            hmds_error("HMDS query returned no data: the simulator has no option bars")
            return
        what = req.what_to_show
        if what not in ("TRADES", "MIDPOINT", "BID", "ASK", "ADJUSTED_LAST"):
            hmds_error(f"whatToShow={what} is not supported by the simulator")
            return
        bar_size = parse_bar_size(req.bar_size)
        if bar_size is None:
            hmds_error(f"Invalid bar size {req.bar_size!r}")
            return
        if req.keep_up_to_date and req.end.strip():
            hmds_error("End date not supported with live updates")
            return
        try:
            end = P.parse_ib_datetime(req.end) or now
        except (ValueError, KeyError):
            hmds_error(f"Invalid endDateTime {req.end!r}")
            return
        end = min(end, now)
        try:
            start = self._duration_start(req.duration, end)
        except ValueError as e:
            hmds_error(str(e))
            return
        span = (end - start).total_seconds()
        if isinstance(bar_size, int) and span / bar_size > MAX_BARS:
            hmds_error("Time length exceed max.")
            return
        bars = self.history_bars(c.symbol, start, end, bar_size)
        daily = bar_size in ("W", "M") or bar_size == 86400
        sent = self._faulty_bars(c.symbol, bars, bar_size, s.client_id, stream=False)
        rows = [_bar_row(b, what, req.format_date, daily) for b in sent]
        s.send(
            P.msg_historical_data(req.req_id, P.format_ib_time(start), P.format_ib_time(end), rows)
        )
        if req.keep_up_to_date:
            s.hist_subs[req.req_id] = HistSub(
                req_id=req.req_id,
                contract=c,
                bar_size=bar_size,
                what=what,
                format_date=req.format_date,
                last_bar_start=bars[-1].time if bars else end,
                last_update=now,
            )

    def _h_cancel_historical_data(self, s: ClientSession, fields: list[str]) -> None:
        s.hist_subs.pop(P.Reader(fields, 2).int(), None)

    def _duration_start(self, duration: str, end: datetime) -> datetime:
        m = _DURATION_RE.match(duration)
        if not m:
            raise ValueError(f"Invalid duration {duration!r}")
        n, unit = int(m.group(1)), m.group(2).upper()
        if n <= 0:
            raise ValueError(f"Invalid duration {duration!r}")
        if unit == "S":
            return end - timedelta(seconds=n)
        sessions = {"D": n, "W": 5 * n, "M": 21 * n, "Y": 252 * n}[unit]
        return self.market.sessions_back(end, sessions - 1)

    def history_bars(
        self, symbol: str, start: datetime, end: datetime, bar_size: int | str
    ) -> list[SimBar]:
        """RTH bars of any IB bar size, built from the market model's native sizes."""
        if isinstance(bar_size, int) and bar_size in BAR_SIZES:
            return self.market.bars(symbol, start, end, bar_size)
        if bar_size in ("W", "M"):
            days = self.market.bars(symbol, self._align_start(start, 86400), end, 86400)
            return _group_calendar(days, bar_size)
        assert isinstance(bar_size, int)
        base = max(b for b in (5, 60, 300, 900, 1800) if bar_size % b == 0)
        aligned = self._align_start(start, bar_size)
        return self._group_intraday(self.market.bars(symbol, aligned, end, base), bar_size)

    def _align_start(self, start: datetime, bar_size: int) -> datetime:
        try:
            session_open = self.market.sessions_back(start, 0)
        except ValueError:
            return start
        if bar_size >= 86400:
            return session_open if self.market.session_open_close(start) else start
        offset = (start - session_open).total_seconds()
        if self.market.session_open_close(start) is None:
            return start
        return session_open + timedelta(seconds=(offset // bar_size) * bar_size)

    def _group_intraday(self, bars: list[SimBar], bar_size: int) -> list[SimBar]:
        groups: dict[tuple[datetime, int], list[SimBar]] = {}
        for b in bars:
            session_open = self.market.sessions_back(b.time, 0)
            idx = int((b.time - session_open).total_seconds() // bar_size)
            groups.setdefault((session_open, idx), []).append(b)
        return [
            _merge_bars(group, session_open + timedelta(seconds=idx * bar_size))
            for (session_open, idx), group in sorted(groups.items())
        ]

    def _send_bar_updates(self, s: ClientSession, sub: HistSub, now: datetime) -> None:
        bars = self.history_bars(sub.contract.symbol, sub.last_bar_start, now, sub.bar_size)
        if not bars:
            return
        daily = sub.bar_size in ("W", "M") or sub.bar_size == 86400
        sent = self._faulty_bars(sub.contract.symbol, bars, sub.bar_size, s.client_id, stream=True)
        # Closed bars first with their final values, then the open one: a client never misses a bar.
        s.send_many(
            [
                P.msg_historical_data_update(
                    sub.req_id, _bar_row(b, sub.what, sub.format_date, daily)
                )
                for b in sent
            ]
        )
        sub.last_bar_start = bars[-1].time

    def _faulty_bars(
        self,
        symbol: str,
        bars: list[SimBar],
        bar_size: int | str,
        client_id: int | None,
        stream: bool,
    ) -> list[SimBar]:
        """1-minute bars as the client is sent them under the active bar faults."""
        if bar_size != 60 or not bars:
            return bars
        out = list(bars)
        if (f := self.faults.active("bar_spike", symbol, client_id)) is not None:
            started = self.faults.started_at(f)
            k, every = f["factor"], f["every"]
            for i, b in enumerate(out):
                if started and b.time >= started and int(b.time.timestamp() // 60) % every == 0:
                    self.faults.hit(f)
                    out[i] = dataclasses.replace(
                        b,
                        open=round(b.open * k, 2),
                        high=round(b.high * k, 2),
                        low=round(b.low * k, 2),
                        close=round(b.close * k, 2),
                        wap=round(b.wap * k, 2),
                    )
        if (f := self.faults.active("bar_duplicate", symbol, client_id)) is not None:
            self.faults.hit(f)
            if stream:
                out = out[:1] + out  # the closed bar again (ib_async drops an unchanged repeat)
            else:
                out = [
                    x for i, b in enumerate(out) for x in ((b, b) if i % f["every"] == 0 else (b,))
                ]
        if (f := self.faults.active("bar_out_of_order", symbol, client_id)) is not None:
            self.faults.hit(f)
            if stream:
                if len(out) >= 2:
                    out = out + [out[-2]]  # an older bar after the newest
            else:
                for i in range(0, len(out) - 1, f["every"]):
                    out[i], out[i + 1] = out[i + 1], out[i]
        return out

    def _h_req_real_time_bars(self, s: ClientSession, fields: list[str]) -> None:
        r = P.Reader(fields, 2)
        req_id = r.int()
        c_req = P.read_contract(r)
        r.skip(1)  # barSize: always 5
        what = r.str().strip().upper()
        now = self.clock.now()
        found = self.resolve(c_req, now)
        if len(found) != 1 or found[0].is_option:
            s.send_error(req_id, 200, ERR_NO_SECURITY)
            return
        start = datetime.fromtimestamp(math.ceil(now.timestamp() / 5) * 5, UTC)
        s.rt_subs[req_id] = RealTimeSub(req_id, found[0], what or "TRADES", start)

    def _h_cancel_real_time_bars(self, s: ClientSession, fields: list[str]) -> None:
        s.rt_subs.pop(P.Reader(fields, 2).int(), None)

    def _send_real_time_bars(self, s: ClientSession, sub: RealTimeSub, now: datetime) -> None:
        if now - sub.next_start < timedelta(seconds=5):
            return
        bars = self.market.bars(sub.contract.symbol, sub.next_start, now, 5)
        msgs = []
        for b in bars:
            if b.time + timedelta(seconds=5) > now:
                break
            msgs.append(P.msg_real_time_bar(sub.req_id, b.time, _bar_row(b, sub.what, 2, False)))
            sub.next_start = b.time + timedelta(seconds=5)
        if not bars:
            sub.next_start = now - timedelta(seconds=now.timestamp() % 5)
        s.send_many(msgs)

    # ------------------------------------------------------------------ handlers: orders

    def _h_place_order(self, s: ClientSession, fields: list[str]) -> None:
        req = P.decode_place_order(fields, s.version)
        now = self.clock.now()
        found = self.resolve(req.contract, now)
        if not found:
            s.send_error(req.order_id, 200, ERR_NO_SECURITY)
            return
        if len(found) > 1:
            s.send_error(
                req.order_id,
                200,
                f"The contract description specified for {req.contract.symbol} is ambiguous.",
            )
            return
        client_id = s.client_id or 0
        try:
            order = self.book.place(client_id, spec_from_request(req), found[0], now)
        except OrderRejected as e:
            s.send_error(req.order_id, e.code, e.text)
            return
        if order.what_if:
            w = self.book.what_if(order, now)
            state = P.OrderStateData(
                status="PreSubmitted",
                init_margin_before=_money(w["init_before"]),
                maint_margin_before=_money(w["maint_before"]),
                equity_with_loan_before=_money(w["ewl_before"]),
                init_margin_change=_money(w["init_change"]),
                maint_margin_change=_money(w["maint_change"]),
                equity_with_loan_change=_money(w["ewl_change"]),
                init_margin_after=_money(w["init_after"]),
                maint_margin_after=_money(w["maint_after"]),
                equity_with_loan_after=_money(w["ewl_after"]),
                commission=w["commission"],
                min_commission=w["commission"],
                max_commission=w["commission"],
                commission_currency="USD",
            )
            s.send(P.msg_open_order(s.version, order, state))
            return
        if self.book.match(now, self.market.is_open(now)):
            self._account_dirty = True

    def _h_cancel_order(self, s: ClientSession, fields: list[str]) -> None:
        order_id = P.Reader(fields, 2).int()
        order = self.book.find_for_client(s.client_id or 0, order_id, s.is_master)
        if order is not None and order.is_live:
            # IB acknowledges a cancel with PendingCancel before the final Cancelled.
            order.status = PENDING_CANCEL
            self.order_changed(order, False)
        try:
            self.book.cancel(s.client_id or 0, order_id, self.clock.now(), master=s.is_master)
        except OrderRejected as e:
            s.send_error(order_id, e.code, e.text)

    def _h_req_global_cancel(self, s: ClientSession, fields: list[str]) -> None:
        self.book.global_cancel(self.clock.now())

    def _visible(self, s: ClientSession, order: SimOrder) -> bool:
        return s.is_master or order.client_id == s.client_id

    def _open_order_messages(self, s: ClientSession, orders: list[SimOrder]) -> list[Any]:
        msgs: list[Any] = []
        for o in orders:
            msgs.append(P.msg_open_order(s.version, o, P.OrderStateData(o.status)))
            msgs.append(P.msg_order_status(o))
        return msgs

    def _h_req_open_orders(self, s: ClientSession, fields: list[str]) -> None:
        orders = [o for o in self.book.live_orders() if self._visible(s, o)]
        s.send_many(self._open_order_messages(s, orders) + [P.msg_open_order_end()])

    def _h_req_all_open_orders(self, s: ClientSession, fields: list[str]) -> None:
        s.send_many(
            self._open_order_messages(s, self.book.live_orders()) + [P.msg_open_order_end()]
        )

    def _h_req_auto_open_orders(self, s: ClientSession, fields: list[str]) -> None:
        # TWS answers nothing: it only binds future manual orders to client 0.
        s.auto_open_orders = P.Reader(fields, 2).bool()

    def _h_req_completed_orders(self, s: ClientSession, fields: list[str]) -> None:
        today = self._today()
        msgs: list[Any] = []
        for o in self.book.completed_orders():
            if o.completed_time is None or P.as_date(o.completed_time) != today:
                continue
            msgs.append(
                P.msg_completed_order(
                    s.version, o, o.status, P.format_ib_time(o.completed_time), o.completed_status
                )
            )
        msgs.append(P.msg_completed_orders_end())
        s.send_many(msgs)

    def _h_req_executions(self, s: ClientSession, fields: list[str]) -> None:
        f = P.decode_req_executions(fields)
        after = None
        if f.time.strip():
            try:
                after = P.parse_ib_datetime(f.time)
            except (ValueError, KeyError):
                after = None
        today = self._today()
        side = {"BUY": "BOT", "SELL": "SLD"}.get(f.side, f.side)
        msgs: list[Any] = []
        for e in self.book.executions:
            if P.as_date(e.time) != today:
                continue
            if f.client_id and e.client_id != f.client_id:
                continue
            if f.account and f.account != e.account:
                continue
            if after is not None and e.time < after:
                continue
            if f.symbol and f.symbol != e.contract.symbol:
                continue
            if f.sec_type and f.sec_type != e.contract.sec_type:
                continue
            if f.exchange and f.exchange not in (e.exchange, e.contract.exchange):
                continue
            if side and side != e.side:
                continue
            msgs.append(P.msg_execution(s.version, f.req_id, e))
            msgs.append(P.msg_commission_report(e.exec_id, e.commission, "USD", e.realized_pnl))
        msgs.append(P.msg_execution_end(f.req_id))
        s.send_many(msgs)

    def _today(self) -> date:
        return P.as_date(self.clock.now())

    # ------------------------------------------------------------------ book listener

    def _order_sessions(self, order: SimOrder) -> list[ClientSession]:
        out = []
        owner = self.by_client.get(order.client_id)
        if owner is not None and not owner.closed:
            out.append(owner)
        master = self.by_client.get(0)
        if master is not None and master is not owner and not master.closed:
            out.append(master)
        return out

    def order_changed(self, order: SimOrder, open_order: bool) -> None:
        for s in self._order_sessions(order):
            msgs: list[Any] = []
            if open_order:
                msgs.append(P.msg_open_order(s.version, order, P.OrderStateData(order.status)))
            msgs.append(P.msg_order_status(order))
            s.send_many(msgs)

    def order_error(self, order: SimOrder, code: int, text: str) -> None:
        owner = self.by_client.get(order.client_id)
        if owner is not None and not owner.closed:
            owner.send_error(order.order_id, code, text)

    def order_filled(self, order: SimOrder, execution: SimExecution) -> None:
        self.stats["fills"] += 1
        self._account_dirty = True
        for s in self._order_sessions(order):
            s.send_many(
                [
                    P.msg_execution(s.version, -1, execution),
                    P.msg_commission_report(
                        execution.exec_id, execution.commission, "USD", execution.realized_pnl
                    ),
                    P.msg_open_order(s.version, order, P.OrderStateData(order.status)),
                    P.msg_order_status(order),
                ]
            )

    def position_changed(self, position: SimPosition) -> None:
        self._account_dirty = True
        account = self.options.account
        for s in list(self.sessions):
            if s.closed:
                continue
            msgs: list[Any] = []
            if s.positions_sub:
                msgs.append(
                    P.msg_position(
                        account,
                        _position_contract(position.contract),
                        position.quantity,
                        position.avg_cost,
                    )
                )
            for rid in s.positions_multi:
                msgs.append(
                    P.msg_position_multi(
                        rid,
                        account,
                        _position_contract(position.contract),
                        position.quantity,
                        position.avg_cost,
                    )
                )
            s.send_many(msgs)

    # ------------------------------------------------------------------ handlers: account

    def _account_rows(self, now: datetime) -> list[tuple[str, str, str]]:
        values = self.book.account_values(now)
        rows = [
            ("AccountCode", self.options.account, ""),
            ("AccountType", "INDIVIDUAL", ""),
            ("Currency", "USD", "USD"),
        ]
        rows += [(k, _money(v), "USD") for k, v in values.items()]
        rows += [
            ("CashBalance", _money(self.book.cash), "BASE"),
            ("NetLiquidationByCurrency", _money(values["NetLiquidation"]), "BASE"),
        ]
        return rows

    def _portfolio_messages(self, now: datetime) -> list[Any]:
        account = self.options.account
        msgs: list[Any] = []
        for row in self.book.portfolio(now):
            pos: SimPosition = row["position"]
            msgs.append(
                P.msg_portfolio_value(
                    pos.contract,
                    pos.quantity,
                    row["market_price"],
                    row["market_value"],
                    pos.avg_cost,
                    row["unrealized"],
                    pos.realized_pnl,
                    account,
                )
            )
        return msgs

    def _pnl(self, now: datetime) -> tuple[float, float, float]:
        """(daily, unrealized, realized) as IB's reqPnL reports them: dailyPnL is today's change
        in the account's value, unrealizedPnL the open positions' since they were opened and
        realizedPnL today's (IB's tws-api pnl.html; ib_async decoder.py msg 94)."""
        values = self.book.account_values(now)
        day = now.astimezone(NEW_YORK).date()
        if self._pnl_day is None:
            self._pnl_day = (day, self.options.starting_cash, 0.0)
        elif self._pnl_day[0] != day:
            self._pnl_day = (day, values["NetLiquidation"], self.book.realized_pnl)
        _, base_liq, base_realized = self._pnl_day
        return (
            values["NetLiquidation"] - base_liq,
            values["UnrealizedPnL"],
            self.book.realized_pnl - base_realized,
        )

    def _h_req_pnl(self, s: ClientSession, fields: list[str]) -> None:
        # EClient.reqPnL sends: 92, reqId, account, modelCode (no version field).
        r = P.Reader(fields, 1)
        req_id = r.int()
        account = r.str()
        if account and account != self.options.account:
            # What IB answers for an account this login does not manage is not documented (the
            # tws-api pnl page is silent on it): the simulator stays silent, and a client must
            # not wait for ever.
            return
        # Answered with the next account push, which carries the account values first: the
        # figures a client holds then are of one moment (IB's P&L and account values refresh on
        # schedules of their own; a client that mixes them is off by what moved in between).
        s.pnl_subs.add(req_id)
        self._account_dirty = True

    def _h_cancel_pnl(self, s: ClientSession, fields: list[str]) -> None:
        s.pnl_subs.discard(P.Reader(fields, 1).int())

    def _push_account(self, now: datetime) -> None:
        self._account_dirty = False
        self._last_account_push = now
        pnl_targets = [s for s in self.sessions if not s.closed and s.pnl_subs]
        figures = self._pnl(now) if pnl_targets else None
        targets = [
            s for s in self.sessions if not s.closed and (s.account_updates or s.account_multi)
        ]
        for s in pnl_targets:
            if s not in targets:
                s.send_many([P.msg_pnl(rid, *figures) for rid in sorted(s.pnl_subs)])
        if not targets:
            return
        rows = self._account_rows(now)
        portfolio = self._portfolio_messages(now)
        account = self.options.account
        for s in targets:
            msgs: list[Any] = []
            if s.account_updates:
                msgs += [P.msg_account_value(k, v, cur, account) for k, v, cur in rows]
                msgs += portfolio
                msgs.append(P.msg_account_update_time(now))
            for rid in s.account_multi:
                msgs += [P.msg_account_update_multi(rid, account, k, v, cur) for k, v, cur in rows]
            if figures is not None:
                msgs += [P.msg_pnl(rid, *figures) for rid in sorted(s.pnl_subs)]
            s.send_many(msgs)

    def _h_req_account_updates(self, s: ClientSession, fields: list[str]) -> None:
        r = P.Reader(fields, 2)
        subscribe = r.bool()
        account = r.str() or self.options.account
        if not subscribe:
            s.account_updates = False
            return
        s.account_updates = True
        now = self.clock.now()
        msgs: list[Any] = [
            P.msg_account_value(k, v, cur, self.options.account)
            for k, v, cur in self._account_rows(now)
        ]
        msgs += self._portfolio_messages(now)
        msgs.append(P.msg_account_update_time(now))
        msgs.append(P.msg_account_download_end(account))
        s.send_many(msgs)

    def _h_req_account_updates_multi(self, s: ClientSession, fields: list[str]) -> None:
        r = P.Reader(fields, 2)
        req_id = r.int()
        now = self.clock.now()
        account = self.options.account
        msgs: list[Any] = [
            P.msg_account_update_multi(req_id, account, k, v, cur)
            for k, v, cur in self._account_rows(now)
        ]
        msgs.append(P.msg_account_update_multi_end(req_id))
        s.account_multi.add(req_id)
        s.send_many(msgs)

    def _h_cancel_account_updates_multi(self, s: ClientSession, fields: list[str]) -> None:
        s.account_multi.discard(P.Reader(fields, 2).int())

    def _h_req_positions(self, s: ClientSession, fields: list[str]) -> None:
        s.positions_sub = True
        account = self.options.account
        msgs: list[Any] = [
            P.msg_position(account, _position_contract(p.contract), p.quantity, p.avg_cost)
            for p in sorted(self.book.positions.values(), key=lambda p: p.contract.con_id)
        ]
        msgs.append(P.msg_position_end())
        s.send_many(msgs)

    def _h_cancel_positions(self, s: ClientSession, fields: list[str]) -> None:
        s.positions_sub = False

    def _h_req_positions_multi(self, s: ClientSession, fields: list[str]) -> None:
        req_id = P.Reader(fields, 2).int()
        account = self.options.account
        msgs: list[Any] = [
            P.msg_position_multi(
                req_id, account, _position_contract(p.contract), p.quantity, p.avg_cost
            )
            for p in sorted(self.book.positions.values(), key=lambda p: p.contract.con_id)
        ]
        msgs.append(P.msg_position_multi_end(req_id))
        s.positions_multi.add(req_id)
        s.send_many(msgs)

    def _h_cancel_positions_multi(self, s: ClientSession, fields: list[str]) -> None:
        s.positions_multi.discard(P.Reader(fields, 2).int())

    def _h_req_account_summary(self, s: ClientSession, fields: list[str]) -> None:
        r = P.Reader(fields, 2)
        req_id = r.int()
        r.skip(1)  # group
        tags = {t.strip() for t in r.str().split(",") if t.strip()}
        now = self.clock.now()
        account = self.options.account
        values = {k: (v, cur) for k, v, cur in self._account_rows(now) if cur != "BASE"}
        values["Cushion"] = ("1", "")
        values["Leverage-S"] = ("0", "")
        msgs: list[Any] = []
        for tag, (value, cur) in values.items():
            if tag in tags:
                msgs.append(P.msg_account_summary(req_id, account, tag, value, cur))
        msgs.append(P.msg_account_summary_end(req_id))
        s.account_summary[req_id] = tags
        s.send_many(msgs)

    def _h_cancel_account_summary(self, s: ClientSession, fields: list[str]) -> None:
        s.account_summary.pop(P.Reader(fields, 2).int(), None)


# ---------------------------------------------------------------------- helpers


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (ProtocolError, ValueError, IndexError, TypeError):
        return None


def _as_delayed(msg: list[Any]) -> list[Any]:
    """A live tick message re-labelled with its delayed tick type."""
    msg_id = msg[0]
    if msg_id in (P.Out.TICK_PRICE, P.Out.TICK_SIZE):
        tick = msg[3]
        if tick in DELAYED_TICKS:
            return [*msg[:3], DELAYED_TICKS[tick], *msg[4:]]
    elif msg_id == P.Out.TICK_OPTION_COMPUTATION:
        tick = msg[2]
        if tick in DELAYED_TICKS:
            return [*msg[:2], DELAYED_TICKS[tick], *msg[3:]]
    return msg


def _fill_quantity(remaining: float, fraction: float, allow_all: bool) -> float:
    """Whole units of `remaining` for a fill of `fraction`; at least one, and less than all unless allowed."""
    if not float(remaining).is_integer():
        part = remaining * fraction
        return remaining if allow_all and fraction >= 1 else part
    part = math.floor(remaining * fraction + 1e-9)
    if not allow_all and part >= remaining:
        part = remaining - 1
    return float(max(1, min(part, remaining)))


def parse_bar_size(text: str) -> int | str | None:
    """Seconds per bar for IB's barSizeSetting, "W"/"M" for weekly/monthly, None if unsupported."""
    m = _BAR_SIZE_RE.match(text or "")
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2).lower()
    if n <= 0:
        return None
    if unit.startswith("sec") or unit == "s":
        seconds = n
    elif unit.startswith("min"):
        seconds = 60 * n
    elif unit.startswith("hour"):
        seconds = 3600 * n
    elif unit.startswith("day") or unit == "d":
        return 86400 if n == 1 else None
    elif unit.startswith("week") or unit == "w":
        return "W" if n == 1 else None
    else:
        return "M" if n == 1 else None
    if seconds in BAR_SIZES:
        return seconds
    if seconds % 5 or seconds > 8 * 3600:
        return None
    return seconds


def _merge_bars(group: list[SimBar], start: datetime) -> SimBar:
    volume = sum(b.volume for b in group)
    wap = sum(b.wap * b.volume for b in group) / volume if volume else group[-1].close
    return SimBar(
        time=start,
        open=group[0].open,
        high=max(b.high for b in group),
        low=min(b.low for b in group),
        close=group[-1].close,
        volume=volume,
        wap=round(wap, 4),
        count=sum(b.count for b in group),
    )


def _group_calendar(days: list[SimBar], unit: str) -> list[SimBar]:
    groups: dict[tuple[int, int], list[SimBar]] = {}
    for b in days:
        d = b.time.astimezone(P.EASTERN).date()
        key = tuple(d.isocalendar()[:2]) if unit == "W" else (d.year, d.month)
        groups.setdefault(key, []).append(b)  # type: ignore[arg-type]
    return [_merge_bars(g, g[0].time) for _, g in sorted(groups.items())]


def _bar_row(b: SimBar, what: str, format_date: int, daily: bool) -> P.BarRow:
    t = P.format_bar_time(b.time, format_date, daily)
    if what in ("TRADES", "ADJUSTED_LAST"):
        return P.BarRow(t, b.open, b.high, b.low, b.close, b.volume, b.wap, b.count)
    if what == "MIDPOINT":
        return P.BarRow(t, b.open, b.high, b.low, b.close, -1, -1.0, -1)
    sign = -1.0 if what == "BID" else 1.0

    def shift(p: float) -> float:
        half = max(0.01, round(p * 0.0001, 2))
        return round(p + sign * half, 2)

    return P.BarRow(t, shift(b.open), shift(b.high), shift(b.low), shift(b.close), -1, -1.0, -1)


def _money(v: float) -> str:
    return f"{v:.2f}"


def _with_exchange(c: SimContract, exchange: str) -> SimContract:
    return c if c.exchange == exchange else dataclasses.replace(c, exchange=exchange)


def _position_contract(c: SimContract) -> SimContract:
    # IB reports positions without a routing exchange; clients qualify before trading.
    return _with_exchange(c, "")

"""asyncio TCP server speaking the server side of the TWS API over a simulated market and order book."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sim import protocol as P
from sim.clock import ScaledClock
from sim.config import SimOptions
from sim.market import BAR_SIZES, MarketModel, SimBar, default_spec
from sim.orders import (
    OrderBook,
    OrderRejected,
    Quote,
    SimContract,
    SimExecution,
    SimOrder,
    SimPosition,
    spec_from_request,
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
    ):
        self.options = options or SimOptions()
        opts = self.options
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
        self._session_bounds: tuple[datetime, datetime] | None = None
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
        self.stats["active_clients"] = len(self.by_client)
        session.mkt_subs.clear()
        session.hist_subs.clear()
        session.rt_subs.clear()

    # ------------------------------------------------------------------ dispatch

    def before_request(self, session: ClientSession, msg_id: int, fields: list[str]) -> bool:
        """Hook for fault injection and pacing: return False (or an awaitable of False) to drop a request."""
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
        try:
            result = handler(session, fields)
            if inspect.isawaitable(result):
                await result
        except (ProtocolError, ValueError, IndexError, TypeError) as e:
            log.warning("%r: cannot read request %d: %s", session, msg_id, e, exc_info=True)
            session.send_error(-1, 320, f"Error reading request: message id {msg_id}: {e}")
        except Exception as e:
            # A simulator bug must cost one request, not the client's session.
            log.exception("%r: request %d failed", session, msg_id)
            session.send_error(-1, 320, f"Error processing request: message id {msg_id}: {e}")

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
        for sub in list(session.mkt_subs.values()):
            msgs = self._tick_messages(sub, now, force=False)
            session.send_many(msgs)
        if is_open:
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
            s.send_error(-1, code, text)

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
        sub = MktDataSub(req.req_id, found[0], generic)
        msgs: list[Any] = [P.msg_market_data_type(req.req_id, s.market_data_type)]
        msgs += self._tick_messages(sub, now, force=True)
        if req.snapshot or req.regulatory_snapshot:
            msgs.append(P.msg_tick_snapshot_end(req.req_id))
        else:
            s.mkt_subs[req.req_id] = sub
        s.send_many(msgs)

    def _h_cancel_mkt_data(self, s: ClientSession, fields: list[str]) -> None:
        s.mkt_subs.pop(P.Reader(fields, 2).int(), None)

    def _tick_messages(self, sub: MktDataSub, now: datetime, force: bool) -> list[Any]:
        c = sub.contract
        try:
            q = self._quote(c, now)
        except (ValueError, KeyError) as e:
            log.debug("no quote for %s: %s", c.local_symbol, e)
            return []
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
                P.msg_tick_price(rid, Tick.BID, q.bid if q.bid > 0 else -1.0, q.bid_size, 1)
            )
        if changed("ask", (q.ask, q.ask_size)):
            msgs.append(
                P.msg_tick_price(rid, Tick.ASK, q.ask if q.ask > 0 else -1.0, q.ask_size, 1)
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
        rows = [_bar_row(b, what, req.format_date, daily) for b in bars]
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
        # Closed bars first with their final values, then the open one: a client never misses a bar.
        s.send_many(
            [
                P.msg_historical_data_update(
                    sub.req_id, _bar_row(b, sub.what, sub.format_date, daily)
                )
                for b in bars
            ]
        )
        sub.last_bar_start = bars[-1].time

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

    def _push_account(self, now: datetime) -> None:
        self._account_dirty = False
        self._last_account_push = now
        targets = [
            s for s in self.sessions if not s.closed and (s.account_updates or s.account_multi)
        ]
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
    if c.exchange == exchange:
        return c
    return SimContract(
        con_id=c.con_id,
        symbol=c.symbol,
        sec_type=c.sec_type,
        expiry=c.expiry,
        strike=c.strike,
        right=c.right,
        multiplier=c.multiplier,
        exchange=exchange,
        primary_exchange=c.primary_exchange,
        currency=c.currency,
        local_symbol=c.local_symbol,
        trading_class=c.trading_class,
    )


def _position_contract(c: SimContract) -> SimContract:
    # IB reports positions without a routing exchange; clients qualify before trading.
    return _with_exchange(c, "")

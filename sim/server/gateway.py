"""The simulated IB Gateway: listening, the handshake, sessions coming and going, and the
simulation step (the clock loop) that matches orders and streams data.

SimServer is assembled from one part per concern (sim/server/<concern>.py); each part owns the
state its class lists and sets up in its _init_ method."""

from __future__ import annotations

import asyncio
import logging
import time as _time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sim import protocol as P
from sim.arrivals import Arrivals
from sim.clock import ScaledClock
from sim.config import SimOptions
from sim.faults import FaultInjector
from sim.latency import Latency
from sim.market import MarketModel, default_spec
from sim.orders import OrderBook
from sim.pacing import Monotonic, Pacing
from sim.protocol import ProtocolError
from sim.server.account import ACCOUNT_REFRESH, AccountMixin
from sim.server.contracts import ContractsMixin
from sim.server.dispatch import DispatchMixin
from sim.server.faults import FaultsMixin
from sim.server.gates import ERR_CLIENT_ID_IN_USE, GatesMixin
from sim.server.history import HistoryMixin
from sim.server.market_data import MarketDataMixin
from sim.server.orders import OrdersMixin
from sim.server.sessions import ClientSession

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0


class SimServer(
    DispatchMixin,
    GatesMixin,
    FaultsMixin,
    ContractsMixin,
    MarketDataMixin,
    HistoryMixin,
    OrdersMixin,
    AccountMixin,
):
    """The simulated IB Gateway: accepts API clients and runs one simulation-step task."""

    host: str
    port: int
    _server: asyncio.Server | None
    _step_task: asyncio.Task | None
    # The tasks serving connections, cancelled by stop().
    _conn_tasks: set[asyncio.Task]
    _conn_no: int
    # The session (open, close) the last step ran in: a change expires the DAY orders.
    _session_bounds: tuple[datetime, datetime] | None

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
        self.latency = Latency(opts.latency, seed=opts.seed)
        if opts.scenario is not None:
            self.faults.load(opts.scenario)
        self.stats = {
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
        self.sessions = set()
        self.by_client = {}
        self._server = None
        self._step_task = None
        self._conn_tasks = set()
        self._conn_no = 0
        self._session_bounds = None
        # Each part sets up the state it owns (see the part's class for what that is).
        self._init_contracts()
        self._init_market_data()
        self._init_account()
        self._init_gates()
        self._init_faults()
        self._init_dispatch()

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

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing():
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
        loop = asyncio.get_running_loop()
        # From here on the socket is read by its own thread (sim/arrivals.py); asyncio's
        # transport only writes. What the transport read before the pause is the first chunk.
        session.writer.transport.pause_reading()
        buf = bytes(session.reader._buffer)  # noqa: SLF001 - no public way to take it back
        session.reader._buffer.clear()  # noqa: SLF001
        arrivals = session.arrivals = Arrivals(
            session.writer.get_extra_info("socket"), loop, self.monotonic
        )
        hs = None
        stamp = self.monotonic()
        deadline = loop.time() + HANDSHAKE_TIMEOUT
        while True:
            try:
                hs = P.parse_handshake(buf) if buf else None
            except ProtocolError as e:
                self.stats["malformed"] += 1
                log.warning("%r: bad handshake: %s", session, e)
                return
            if hs is not None:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.info("%r: no handshake; closing", session)
                return
            try:
                stamp, chunk = await asyncio.wait_for(arrivals.get(), remaining)
            except TimeoutError:
                log.info("%r: handshake timed out", session)
                return
            if not chunk:
                return
            buf += chunk
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
        session.arrived = stamp  # what came with the handshake arrived with it
        while not session.closed:
            if pending:
                data, pending = pending, b""
            else:
                # The Gateway counts messages as they arrive, not as it gets round to them:
                # a chunk carries the time its thread read it off the socket.
                session.arrived, data = await arrivals.get()
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
            if not session.restart_dropped:
                self._remember_close(session.client_id)
        self._drop_held(session)
        self.stats["active_clients"] = len(self.by_client)
        session.mkt_subs.clear()
        session.hist_subs.clear()
        session.rt_subs.clear()

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
        self._forget_quotes()
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
            self._forget_quotes()
            now = self.clock.now()
            is_open = self.market.is_open(now)
            self._session_bounds = self.market.session_open_close(now) if is_open else None
        if self.book.match(now, is_open):
            self._account_changed()
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
        self._send_farm_status(s)

    def _h_req_current_time(self, s: ClientSession, fields: list[str]) -> None:
        s.send(P.msg_current_time(self.clock.now()))

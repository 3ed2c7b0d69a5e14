"""ConnectionActor: owns the ib_async client on its own event loop, the connection machine and pacing."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pykka
from ib_async import IB, LimitOrder, MarketOrder, Option, Stock, StopOrder, Ticker, Trade
from transitions import MachineError

from actors import messages as m
from actors.base import BaseActor
from actors.crash import crashpoint
from actors.metrics import Metrics, error_class
from actors.pacing import (
    CLASS_NAMES,
    ORDERS,
    HistoricalPacer,
    MessageGate,
    bar_seconds,
    gap_duration,
    message_class,
)
from configs.redact import redact
from configs.settings import Settings
from machines.connection import ConnectionModel, ConnState, connection_machine
from storage import MachineStateRepo, open_db
from strategies.bars import Bar
from strategies.sanity import QuoteMark, observe_quote, quote_age_s

log = logging.getLogger("optionsbot.connection")

# Farm outages degrade the connection until the matching "OK" arrives.
FARM_BROKEN = {2103: "farm:market_data", 2105: "farm:historical", 2157: "farm:secdef"}
FARM_OK = {2104: "farm:market_data", 2106: "farm:historical", 2158: "farm:secdef"}
ENTITLEMENT = {354, 10089, 10091, 10168, 10186}
ENTITLEMENT_ADVICE = (
    "the account has no API market data subscription for this contract: buy it in Client Portal, "
    "or set broker.delayed_data_fallback: true (or broker.market_data_type: 3) for delayed data"
)
# Entitlement errors that delayed data cannot help: it is not enabled, or is already in use.
NO_DELAYED = {10168, 10186}


# -- internal messages from the loop thread and timers ----------------------------------


@dataclass(frozen=True, slots=True)
class _Attempt(m.Msg):
    pass


@dataclass(frozen=True, slots=True)
class _ConnectResult(m.Msg):
    ok: bool
    cause: str = ""
    client_id_in_use: bool = False
    probe: bool = False


@dataclass(frozen=True, slots=True)
class _SyncClock(m.Msg):
    pass


@dataclass(frozen=True, slots=True)
class _Lost(m.Msg):
    cause: str


@dataclass(frozen=True, slots=True)
class _IbError(m.Msg):
    req_id: int
    code: int
    text: str


@dataclass(frozen=True, slots=True)
class _CooldownOver(m.Msg):
    pass


@dataclass(frozen=True, slots=True)
class _RequestDone(m.Msg):
    kind: str
    ok: bool
    seconds: float
    timed_out: bool = False
    cause: str = ""


def backoff_delay(
    attempt: int, base: float = 1.0, cap: float = 30.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter in [0.5, 1.0] of the step: attempts never pile up."""
    step = min(cap, base * (2 ** max(0, attempt)))
    return step * (0.5 + 0.5 * (rng or random).random())


def _log_reason(trade: Any) -> str:
    """The last log entry of a trade, with IB's error code first ("201 Order rejected - ...")."""
    if not trade.log:
        return ""
    entry = trade.log[-1]
    return f"{entry.errorCode} {entry.message}".strip() if entry.errorCode else entry.message


def bar_from_ib(b: Any) -> Bar:
    t = b.date
    if isinstance(t, datetime):
        t = t if t.tzinfo else t.replace(tzinfo=UTC)
    else:  # daily bars come as dates
        t = datetime(t.year, t.month, t.day, tzinfo=UTC)
    return Bar(
        t.astimezone(UTC),
        float(b.open),
        float(b.high),
        float(b.low),
        float(b.close),
        float(b.volume),
    )


def _finite(x: Any) -> float:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) and f >= 0 else math.nan


def _price(x: Any) -> float:
    """A bid or ask as sent, negatives included (IB's -1 is "no quote"; ib_async turns it into
    NaN only when the size is 0): the caller rejects it with its reason, never reads it as
    missing."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


class _LineStart:
    """Whether a new line has brought its first bid and ask: until it has, its values are what
    IB held when the line opened (frozen or not), not a change seen as it happened."""

    BID, ASK = frozenset({1, 66}), frozenset({2, 67})  # live and delayed tick types

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def settled(self, t: Ticker) -> bool:
        """True when the line had settled before this update (so a change in it is fresh)."""
        was = len(self.seen) == 2
        for tick in t.ticks:
            if tick.tickType in self.BID:
                self.seen.add("bid")
            elif tick.tickType in self.ASK:
                self.seen.add("ask")
        return was


def install_gate(
    client: Any,
    gate: MessageGate,
    loop: asyncio.AbstractEventLoop,
    sent: Callable[[int], None] = lambda cls: None,
    queued: Callable[[MessageGate], None] = lambda gate: None,
) -> None:
    """Send every request of an ib_async Client through `gate`: IB's message rate, orders first.

    Replaces this one instance's sendMsg (ib_async's own throttle lets its whole quota out at
    once) and reset (what was queued for a closed connection is dropped); both run on `loop`.
    """
    timer: list[asyncio.TimerHandle | None] = [None]
    original_reset = client.reset

    def send(msg: str | None) -> None:
        now = loop.time()
        for raw in gate.offer(msg, now) if msg else gate.take(now):
            client.conn.sendMsg(client._prefix(raw.encode()))
            sent(message_class(raw))
        queued(gate)
        wait = gate.wait()
        if wait is not None and timer[0] is None:
            timer[0] = loop.call_later(wait + 0.001, pump)

    def pump() -> None:
        timer[0] = None
        send(None)

    def reset() -> None:
        if timer[0] is not None:
            timer[0].cancel()
            timer[0] = None
        dropped = gate.clear()
        if dropped:
            log.warning("connection closed: %d queued messages dropped", dropped)
        queued(gate)
        original_reset()

    client.MaxRequests = 0  # ib_async's throttle off: the gate paces
    client.sendMsg = send
    client.reset = reset


# -- memory: a keepUpToDate stream's bar list -------------------------------------------------
STREAM_KEEP = 2


def trim_stream(bar_list: Any, keep: int = STREAM_KEEP) -> None:
    """Drop all but the last `keep` bars of a keepUpToDate stream's BarDataList.

    ib_async appends every new bar to the list for as long as the stream is open, so over weeks
    it holds every minute of every symbol (the whole backfill included). Only the last two are
    ever read: the closed bar (bar_list[-2]) and the forming one, which ib_async's
    historicalDataUpdate compares each update with (bars[-1].date) and which CloseLastBar reads.
    Never fewer than two: ib_async drops updates for an empty list (`if not bars: return`).
    Checked against ib_async 2.x wrapper.historicalDataUpdate.
    """
    if len(bar_list) > keep:
        del bar_list[:-keep]


class ConnectionActor(BaseActor):
    name = "connection"

    """The only owner of `ib_async.IB`. Everything else talks to it by message."""

    def __init__(self, settings: Settings, metrics: Metrics, clock: Any, port: int | None = None):
        super().__init__()
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.host = settings.broker.host
        self.port = port or settings.broker.port
        self.base_client_id = settings.broker.client_id
        self.client_id = self.base_client_id
        self.model = ConnectionModel(failure_threshold=settings.broker.breaker_threshold)
        self.listeners: dict[str, list[Any]] = {"connection": [], "orders": [], "account": []}
        self.attempts = 0
        self.ever_connected = False
        self.stopping = False
        self.pacer = HistoricalPacer()
        self.open_streams: dict[tuple[str, str], Any] = {}  # loop thread only
        self.stream_generation: dict[tuple[str, str], int] = {}  # loop thread only
        # The session's last bar, delivered at the close (loop thread only): not again at the
        # next session's first update.
        self.closed_early: dict[tuple[str, str], datetime] = {}
        self.quote_lines: dict[int, Any] = {}  # conId -> streaming Ticker; loop thread only
        # conId -> what has been seen of its bid/ask, across snapshots and lines (loop thread
        # only): a quote's age is the age of its last change, never of its arrival.
        self.quote_marks: dict[int, QuoteMark] = {}
        # conId -> the latest watch or unwatch asked (loop thread only): a watch still waiting
        # for a line when a newer one, or an unwatch, comes is dropped when its line frees.
        self.watch_seq: dict[int, int] = {}
        self.stock_contracts: dict[str, Any] = {}
        self.timers: list[threading.Timer] = []
        self.cooldown_s = settings.broker.breaker_cooldown_s
        self.entitlement_reported: set[int] = set()
        self.market_data_type = settings.broker.market_data_type
        metrics.market_data_type.set(self.market_data_type)
        self.stale_symbols: set[str] = set()

    # -- lifecycle ----------------------------------------------------------------------
    def on_start(self) -> None:
        self.db = open_db(self.settings.storage.path)
        self.states = MachineStateRepo(self.db)
        stored = self.states.load("connection")
        # Only an open breaker survives a restart: a crash loop must not hammer a failing Gateway.
        initial = (
            ConnState.BREAKER_OPEN
            if stored and stored[0] == ConnState.BREAKER_OPEN
            else ConnState.DISCONNECTED
        )
        connection_machine(self.model, initial)
        self.metrics.connection_state.state(self.model.state)
        self.loop = asyncio.new_event_loop()
        self.loop_thread = threading.Thread(
            target=self.loop.run_forever, name="ib-loop", daemon=True
        )
        self.loop_thread.start()
        self.ib: IB = self._call(self._make_ib())
        if hasattr(self.clock, "sync"):
            self._after(self.settings.broker.clock_sync_s, _SyncClock())
        if initial is ConnState.BREAKER_OPEN:
            log.warning(
                "breaker was open at the last stop; waiting %.0fs before probing", self.cooldown_s
            )
            self._after(self.cooldown_s, _CooldownOver())
        else:
            self.actor_ref.tell(_Attempt())

    def on_stop(self) -> None:
        self.stopping = True
        for t in self.timers:
            t.cancel()
        try:
            self._call(self._flush_orders(3.0), timeout=4)
        except Exception as exc:  # noqa: BLE001
            log.warning("order messages still queued at stop: %s", exc)
        try:
            self._call(self._disconnect(), timeout=5)
        except Exception as exc:  # noqa: BLE001 - stopping must finish whatever the socket does
            log.warning("disconnect at stop failed: %s", exc)
        self._fire("stop", cause="service stopping")
        try:
            self._call(self._cancel_tasks(), timeout=5)
        except Exception as exc:  # noqa: BLE001
            log.debug("cancelling the loop's tasks at stop: %s", exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.loop_thread.join(timeout=5)
        self.loop.close()
        self.db.close()

    async def _flush_orders(self, limit_s: float) -> None:
        """Order messages still waiting for the rate limit go out before the socket closes: a
        bracket must not reach the Gateway with a leg missing. (Queued data is dropped.)"""
        deadline = time.monotonic() + limit_s
        while self.gate.depth(ORDERS) and self.ib.isConnected() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.gate.depth(ORDERS):
            log.warning("%d order messages not sent before the stop", self.gate.depth(ORDERS))

    @staticmethod
    async def _cancel_tasks() -> None:
        """Requests still waiting (for pacing, a slot, an answer) end with the loop, quietly."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- plumbing -----------------------------------------------------------------------
    def _call(self, coro: Awaitable[Any], timeout: float | None = 15) -> Any:
        """Run a coroutine on the ib loop and wait (only for start-up and stop)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    def _after(self, delay: float, msg: m.Msg) -> None:
        def fire() -> None:
            try:
                self.actor_ref.tell(msg)
            except pykka.ActorDeadError:
                pass

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        self.timers = [t for t in self.timers if t.is_alive()] + [timer]
        timer.start()

    def _tell_self(self, msg: m.Msg) -> None:
        try:
            self.actor_ref.tell(msg)
        except pykka.ActorDeadError:
            pass

    @staticmethod
    def _tell(ref: Any, msg: m.Msg) -> None:
        try:
            ref.tell(msg)
        except pykka.ActorDeadError:
            pass

    async def _make_ib(self) -> IB:
        self.hist_slots = asyncio.Semaphore(self.settings.broker.max_open_historical)
        self.lines = asyncio.Semaphore(self.settings.broker.max_market_data_lines)
        ib = IB()
        ib.RequestTimeout = 0  # our own per-kind timeouts decide
        self._install_gate(ib.client)
        ib.errorEvent += lambda req_id, code, text, *_: self._tell_self(
            _IbError(req_id=req_id, code=code, text=text)
        )
        ib.disconnectedEvent += lambda: self._tell_self(_Lost(cause="socket closed"))
        ib.orderStatusEvent += self._on_trade_status
        ib.execDetailsEvent += self._on_exec
        ib.accountValueEvent += self._on_account_value
        ib.commissionReportEvent += self._on_commission
        return ib

    def _install_gate(self, client: Any) -> None:
        b = self.settings.broker
        self.gate = MessageGate(b.max_messages_per_second, b.message_burst)

        def sent(cls: int) -> None:
            self.metrics.messages_sent.labels(CLASS_NAMES[cls]).inc()

        def queued(gate: MessageGate) -> None:
            for cls, name in enumerate(CLASS_NAMES):
                self.metrics.send_queue_depth.labels(name).set(gate.depth(cls))

        install_gate(client, self.gate, asyncio.get_running_loop(), sent, queued)

    async def _disconnect(self) -> None:
        if self.ib.isConnected():
            self.ib.disconnect()

    # -- the machine ----------------------------------------------------------------------
    def _fire(self, trigger: str, **kw: Any) -> bool:
        before = self.model.state
        try:
            getattr(self.model, trigger)(**kw)
        except MachineError:
            log.debug("connection: %s ignored in %s", trigger, before)
            return False
        after = self.model.state
        self.metrics.connection_transitions.labels(trigger, after).inc()
        self.metrics.connection_state.state(after)
        if after != before:
            level = (
                logging.WARNING
                if after in ("breaker_open", "degraded", "disconnected") and trigger != "stop"
                else logging.INFO
            )
            log.log(
                level, "connection %s -> %s (%s: %s)", before, after, trigger, kw.get("cause", "")
            )
            self.states.save(
                "connection", after, {"cause": self.model.last_cause, "client_id": self.client_id}
            )
            if after == ConnState.BREAKER_OPEN:
                self.metrics.breaker_trips.inc()
        intents = self.model.drain_intents()
        for intent in intents:
            self._do(intent)
        if after != before and "resync" not in intents:
            self._broadcast(resync=False)
        return True

    def _broadcast(self, resync: bool) -> None:
        msg = m.ConnectionChanged(
            state=self.model.state,
            may_trade=self.model.may_trade,
            resync=resync,
            cause=self.model.last_cause,
        )
        for ref in self.listeners["connection"]:
            self._tell(ref, msg)

    def _do(self, intent: str) -> None:
        if intent == "resync":
            # The clock first: every reaction to the resync reads it.
            if hasattr(self.clock, "sync") and not self.stopping:
                self._call(self._sync_clock(), timeout=self._timeout("probe") + 1)
            self._broadcast(resync=True)
            if not self.stopping:
                self._spawn(self._push_account())
            return
        if self.stopping:
            return  # no new timers once stopping
        if intent == "reconnect":
            delay = backoff_delay(self.attempts)
            log.info("reconnecting in %.1fs (attempt %d)", delay, self.attempts + 1)
            self._after(delay, _Attempt())
        elif intent == "cooldown":
            log.warning("breaker open: no requests for %.0fs", self.cooldown_s)
            self._after(self.cooldown_s, _CooldownOver())
        elif intent == "probe":
            self._tell_self(_Attempt())

    # -- handlers -------------------------------------------------------------------------

    def on_Subscribe(self, msg: m.Subscribe) -> None:
        for topic in msg.topics:
            self.listeners.setdefault(topic, []).append(msg.listener)
        if "account" in msg.topics and self.ib.isConnected():
            # The start-up sync may have delivered the account before this listener came.
            self._spawn(self._push_account())
        if "connection" in msg.topics:
            self._tell(
                msg.listener,
                m.ConnectionChanged(
                    state=self.model.state,
                    may_trade=self.model.may_trade,
                    resync=self.model.may_send,
                    cause=self.model.last_cause,
                ),
            )

    def on_Attempt(self, msg: _Attempt) -> None:
        if self.stopping:
            return
        state = self.model.conn_state
        probe = state is ConnState.HALF_OPEN
        if state is ConnState.DISCONNECTED:
            self._fire("connect", cause=f"{self.host}:{self.port} client {self.client_id}")
        elif not probe:
            return
        if probe and self.ib.isConnected():
            self._spawn(self._probe_request())
            return
        if self.attempts:
            self.metrics.reconnects.inc()
        self.attempts += 1
        self._spawn(self._connect(probe))

    async def _connect(self, probe: bool) -> None:
        in_use = asyncio.Event()

        def watch(req_id: int, code: int, *_: Any) -> None:
            if code == 326:
                in_use.set()

        self.ib.errorEvent += watch
        b = self.settings.broker
        try:
            await self.ib.connectAsync(
                self.host,
                self.port,
                clientId=self.client_id,
                timeout=b.connect_timeout_s,
                readonly=b.readonly,
                account=b.account.get_secret_value(),
            )
            if self.market_data_type != 1:
                self.ib.reqMarketDataType(self.market_data_type)
            self._tell_self(_ConnectResult(ok=True, probe=probe))
        except Exception as exc:  # noqa: BLE001 - every connect failure is a breaker failure
            self.ib.disconnect()
            cause = "client id in use (326)" if in_use.is_set() else f"{type(exc).__name__}: {exc}"
            self._tell_self(
                _ConnectResult(ok=False, cause=cause, client_id_in_use=in_use.is_set(), probe=probe)
            )
        finally:
            self.ib.errorEvent -= watch

    async def _probe_request(self) -> None:
        try:
            await asyncio.wait_for(self.ib.reqCurrentTimeAsync(), self._timeout("probe"))
            self._tell_self(_ConnectResult(ok=True, probe=True))
        except Exception as exc:  # noqa: BLE001
            self._tell_self(_ConnectResult(ok=False, cause=f"probe failed: {exc}", probe=True))

    def on_ConnectResult(self, msg: _ConnectResult) -> None:
        if msg.ok:
            self.attempts = 0
            self.ever_connected = True
            self.metrics.client_id.set(self.client_id)
            log.info("connected to %s:%d as client %d", self.host, self.port, self.client_id)
            self._fire("probe_ok" if msg.probe else "connect_ok", cause="connected")
            return
        if msg.client_id_in_use:
            # The Gateway still holds our id (a quick restart): rotate through the pool.
            pool = self.settings.broker.client_id_pool
            self.client_id = self.base_client_id + (self.client_id - self.base_client_id + 1) % pool
            log.warning("client id in use (326); next attempt uses client id %d", self.client_id)
        else:
            log.warning(
                "connect to %s:%d failed: %s (check that the API is enabled, the port, and Trusted IPs)",
                self.host,
                self.port,
                msg.cause,
            )
        self._fire("probe_failed" if msg.probe else "connect_failed", cause=msg.cause)

    def on_Lost(self, msg: _Lost) -> None:
        if self.stopping:
            return
        self._spawn(self._drop_streams())
        self._fire("connection_lost", cause=msg.cause)

    def on_SymbolStale(self, msg: m.SymbolStale) -> None:
        """Stale data everywhere is a connection problem; one stale symbol is that symbol's."""
        (self.stale_symbols.add if msg.stale else self.stale_symbols.discard)(msg.symbol)
        if len(self.stale_symbols) >= len(self.settings.symbols):
            self._fire("degrade", cause="stale_data")
        elif "stale_data" in self.model.causes:
            self._fire("recover", cause="stale_data")

    async def _sync_clock(self) -> None:
        try:
            t = await asyncio.wait_for(self.ib.reqCurrentTimeAsync(), self._timeout("probe"))
        except Exception as exc:  # noqa: BLE001 - keep the last anchor; try again later
            log.warning("could not read the Gateway's clock: %s", exc)
            return
        skew = self.clock.sync(t)
        if abs(skew) > 2 * getattr(self.clock, "scale", 1.0):
            log.warning("our clock was %+.0fs off the Gateway's; following the Gateway", skew)

    def on_SyncClock(self, msg: _SyncClock) -> None:
        if self.model.may_send and self.ib.isConnected():
            self._spawn(self._sync_clock())
        if not self.stopping:
            self._after(self.settings.broker.clock_sync_s, _SyncClock())

    def on_CooldownOver(self, msg: _CooldownOver) -> None:
        self._fire("cooldown_elapsed", cause="cooldown over")

    def on_IbError(self, msg: _IbError) -> None:
        code = msg.code
        self.metrics.ib_errors.labels(error_class(code)).inc()
        if code == 1100:
            self._fire("degrade", cause="1100")
        elif code in (1101, 1102):
            self._fire("recover", cause="1100")
            if code == 1101:  # data lost: everything must be requested again
                self._broadcast(resync=True)
        elif code in FARM_BROKEN:
            self._fire("degrade", cause=FARM_BROKEN[code])
        elif code in FARM_OK:
            self._fire("recover", cause=FARM_OK[code])
        elif code in ENTITLEMENT:
            if code not in self.entitlement_reported:
                self.entitlement_reported.add(code)
                log.error("IB %d: %s; %s", code, msg.text, ENTITLEMENT_ADVICE)
            self._fall_back_to_delayed(code)
        elif code in (2107, 2108, 2119, 366, 10167):
            log.debug("IB %d: %s", code, msg.text)
        else:
            log.info("IB %d (req %d): %s", code, msg.req_id, msg.text)

    def _fall_back_to_delayed(self, code: int) -> None:
        """Live quotes are not entitled: switch to delayed ones, once, when the settings allow."""
        if (
            not self.settings.broker.delayed_data_fallback
            or self.market_data_type != 1
            or code in NO_DELAYED
        ):
            return
        self.market_data_type = 3
        self.metrics.market_data_type.set(3)
        log.warning(
            "IB %d: switching to delayed market data (broker.delayed_data_fallback): quotes are"
            " 15-20 minutes old from now on, until the service restarts",
            code,
        )
        if self.ib.isConnected():
            self._spawn(self._request_market_data_type(3))

    async def _request_market_data_type(self, kind: int) -> None:
        self.ib.reqMarketDataType(kind)

    def on_RequestDone(self, msg: _RequestDone) -> None:
        self.metrics.requests.labels(msg.kind).inc()
        self.metrics.request_seconds.labels(msg.kind).observe(msg.seconds)
        if msg.timed_out:
            self.metrics.request_timeouts.labels(msg.kind).inc()
        if msg.ok:
            if self.model.conn_state is ConnState.DEGRADED:
                self._fire("request_ok", cause=msg.kind)
            else:
                self.model.failures = 0
        elif msg.timed_out:
            self._fire("request_failed", cause=f"{msg.kind} timed out")

    # -- requests ---------------------------------------------------------------------------
    def _refuse(self) -> str | None:
        if self.model.may_send and self.ib.isConnected():
            return None
        return f"not connected (connection {self.model.state})"

    def _timeout(self, kind: str) -> float:
        b = self.settings.broker
        return b.timeouts_s.get(kind, b.request_timeout_s)

    async def _timed(self, kind: str, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        """Run one request with its timeout; the breaker hears about every outcome."""
        timeout = timeout or self._timeout(kind)
        t0 = time.monotonic()
        try:
            result = await asyncio.wait_for(coro, timeout)
        except TimeoutError:
            self._tell_self(
                _RequestDone(kind=kind, ok=False, seconds=time.monotonic() - t0, timed_out=True)
            )
            raise
        except Exception as exc:
            self._tell_self(
                _RequestDone(kind=kind, ok=False, seconds=time.monotonic() - t0, cause=str(exc))
            )
            raise
        self._tell_self(_RequestDone(kind=kind, ok=True, seconds=time.monotonic() - t0))
        return result

    async def _stock(self, symbol: str) -> Any:
        contract = self.stock_contracts.get(symbol)
        if contract is None:
            details = await self._timed(
                "contract_details",
                self.ib.qualifyContractsAsync(Stock(symbol, "SMART", "USD")),
            )
            contract = details[0] if details and details[0] is not None else None
            if contract is None or not contract.conId:
                raise LookupError(f"{symbol}: no security definition (200); check the symbol")
            self.stock_contracts[symbol] = contract
        return contract

    def on_StreamBars(self, msg: m.StreamBars) -> None:
        self._request_history(msg, stream=True)

    def on_FetchBars(self, msg: m.FetchBars) -> None:
        self._request_history(msg, stream=False)

    def _request_history(self, msg: m.StreamBars | m.FetchBars, stream: bool) -> None:
        """Book a pacing slot and send one historical request; the requester always hears back."""
        refusal = self._refuse()
        if refusal:
            self._tell(
                msg.reply_to,
                m.StreamFailed(symbol=msg.symbol, bar_size=msg.bar_size, reason=refusal),
            )
            return
        # The identical-request key leaves out the duration: it is only known at send time
        # (`since`), so any two requests for one series are kept 15 s apart.
        delay = self.pacer.reserve(
            (msg.symbol, msg.bar_size, stream),
            (msg.symbol, "TRADES"),
            time.monotonic(),
            small_bars=bar_seconds(msg.bar_size) <= 30,
        )
        self.metrics.pacing_wait.observe(delay)
        self._spawn(self._history(msg, delay, stream))

    # -- open historical requests (loop thread only) ------------------------------------------
    # IB allows about broker.max_open_historical requests open at once, and a keepUpToDate
    # stream holds its request open for good. Requests beyond the limit wait here for a slot
    # (the wait is not part of their timeout) instead of queueing, or failing, at the Gateway.

    async def _end_stream(self, key: tuple[str, str]) -> None:
        bars = self.open_streams.pop(key, None)
        if bars is not None:
            if self.ib.isConnected():
                self.ib.cancelHistoricalData(bars)
            self.hist_slots.release()

    async def _drop_streams(self) -> None:
        """The socket closed: the Gateway forgot every stream and quote line: all free again."""
        for _ in range(len(self.open_streams)):
            self.hist_slots.release()
        self.open_streams.clear()
        for _ in range(len(self.quote_lines)):
            self.lines.release()
        self.quote_lines.clear()
        self.metrics.market_data_lines.set(0)

    async def _history(self, msg: m.StreamBars | m.FetchBars, delay: float, stream: bool) -> None:
        key = (msg.symbol, msg.bar_size)
        if stream:
            # Requests for one stream can overlap (a resync and a stale resubscribe): only the
            # newest may register; an older one that answers later is cancelled, not leaked.
            generation = self.stream_generation[key] = self.stream_generation.get(key, 0) + 1
            await self._end_stream(key)
        queued = delay > 0 or self.hist_slots.locked()
        if queued:
            self.metrics.pacing_queue_depth.inc()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.hist_slots.acquire()
        if queued:
            self.metrics.pacing_queue_depth.dec()
        if not self.ib.isConnected():
            self.hist_slots.release()
            self._tell(
                msg.reply_to,
                m.StreamFailed(
                    symbol=msg.symbol,
                    bar_size=msg.bar_size,
                    reason="not connected (lost while queued)",
                ),
            )
            return
        try:
            contract = await self._stock(msg.symbol)
            # Computed now, not when queued: the wait must not open a hole in the history.
            # The Gateway answers up to the historical timeout later, its clock running at the
            # clock's scale meanwhile (120x in a fast simulation): ask for that much more.
            slack = self._timeout("historical") * getattr(self.clock, "scale", 1.0)
            duration = (
                msg.duration
                if msg.since is None
                else gap_duration(msg.since, self.clock.now(), msg.bar_size, msg.duration, slack)
            )
            timeout = self._timeout("historical")
            bars = await self._timed(
                "historical",
                self._history_request(contract, duration, msg.bar_size, stream, timeout),
                timeout + 5.0,  # a backstop: ib_async's own timeout comes first
            )
        except Exception as exc:  # noqa: BLE001 - the requester always gets an answer
            self.hist_slots.release()
            reason = (
                "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            )
            self._tell(
                msg.reply_to,
                m.StreamFailed(symbol=msg.symbol, bar_size=msg.bar_size, reason=reason),
            )
            return
        if not stream:
            self.hist_slots.release()
        # The last bar of a keepUpToDate answer is still forming, unless the market has closed
        # (no newer bar a minute after it ended). A plain answer may end with a forming bar
        # too; DataActor drops that one by its end time.
        history = list(bars)
        if stream and history and not self._final(history[-1], msg.bar_size):
            history.pop()
        self._tell(
            msg.reply_to,
            m.BarsBackfilled(
                symbol=msg.symbol,
                bar_size=msg.bar_size,
                bars=tuple(bar_from_ib(b) for b in history),
            ),
        )
        if not stream:
            return
        reply_to, symbol, size = msg.reply_to, msg.symbol, msg.bar_size

        def on_update(bar_list: Any, has_new_bar: bool) -> None:
            if has_new_bar and len(bar_list) >= 2:
                bar = bar_from_ib(bar_list[-2])
                trim_stream(bar_list)
                if self.closed_early.pop(key, None) == bar.time:
                    return
                self._tell(reply_to, m.BarStreamed(symbol=symbol, bar_size=size, bar=bar))

        if self.stream_generation.get(key) != generation:
            if self.ib.isConnected():
                self.ib.cancelHistoricalData(bars)
            self.hist_slots.release()
            return
        await self._end_stream(key)
        trim_stream(bars)  # the backfill was delivered above, from its own copy
        bars.updateEvent += on_update
        self.open_streams[key] = bars  # keeps its slot until cancelled or the socket closes

    def _final(self, ib_bar: Any, bar_size: str) -> bool:
        """A stream's last bar is final a minute after it ended: by then a newer one would have
        started, had the market been open."""
        end = bar_from_ib(ib_bar).time + timedelta(seconds=bar_seconds(bar_size) + 60)
        return end <= self.clock.now()

    async def _history_request(
        self, contract: Any, duration: str, bar_size: str, stream: bool, timeout: float
    ) -> Any:
        """One historical request; raises TimeoutError when no answer came in `timeout` seconds.

        The timeout is ib_async's own, because on a timeout it also cancels the request at the
        Gateway. A request cancelled only here would stay open there, holding one of the ~50
        open-request slots for good (a stalled HMDS would use them all up).
        """
        t0 = time.monotonic()
        bars = await self.ib.reqHistoricalDataAsync(
            contract,
            endDateTime="",
            durationStr=duration,
            barSizeSetting=bar_size,
            whatToShow=self.settings.data.what_to_show,
            useRTH=True,
            formatDate=2,
            keepUpToDate=stream,
            timeout=timeout,
        )
        if not bars and time.monotonic() - t0 >= timeout - 0.05:
            # ib_async timed out: it cancelled at the Gateway and returned the list emptied.
            if stream:
                self.ib.wrapper.endSubscription(bars)
            raise TimeoutError(f"no answer in {timeout:g}s")
        return bars

    def on_CloseLastBar(self, msg: m.CloseLastBar) -> None:
        self._spawn(self._close_last_bar(msg))

    async def _close_last_bar(self, msg: m.CloseLastBar) -> None:
        key = (msg.symbol, msg.bar_size)
        bars = self.open_streams.get(key)
        bar = bar_from_ib(bars[-1]) if bars else None
        if bar is None or bar.time != msg.bar_time:
            # The next (re)subscription's history brings it.
            log.info(
                "%s: the session's last bar %s is not in the stream (its last: %s)",
                msg.symbol,
                msg.bar_time.isoformat(),
                bar.time.isoformat() if bar else "no stream",
            )
            return
        self.closed_early[key] = bar.time
        self._tell(msg.reply_to, m.BarStreamed(symbol=msg.symbol, bar_size=msg.bar_size, bar=bar))

    def on_FetchChain(self, msg: m.FetchChain) -> None:
        refusal = self._refuse()
        if refusal:
            self._tell(
                msg.reply_to,
                m.ChainFetched(symbol=msg.symbol, chain=None, spot=math.nan, reason=refusal),
            )
            return
        self._spawn(self._chain(msg))

    async def _chain(self, msg: m.FetchChain) -> None:
        try:
            stock = await self._stock(msg.symbol)
            rows = await self._timed(
                "sec_def",
                self.ib.reqSecDefOptParamsAsync(msg.symbol, "", "STK", stock.conId),
            )
        except Exception as exc:  # noqa: BLE001
            self._tell(
                msg.reply_to,
                m.ChainFetched(symbol=msg.symbol, chain=None, spot=math.nan, reason=str(exc)),
            )
            return
        smart = [r for r in rows if r.exchange == "SMART"] or list(rows)
        # The weekly class carries the symbol's own name (SPY, not SPYW); prefer it, then the richest row.
        smart.sort(key=lambda r: (r.tradingClass != msg.symbol, -len(r.expirations)))
        if not smart or not smart[0].expirations or not smart[0].strikes:
            self._tell(
                msg.reply_to,
                m.ChainFetched(
                    symbol=msg.symbol, chain=None, spot=math.nan, reason="empty option chain"
                ),
            )
            return
        row = smart[0]
        chain = m.Chain(
            symbol=msg.symbol,
            con_id=stock.conId,
            trading_class=row.tradingClass,
            multiplier=int(float(row.multiplier or 100)),
            expirations=tuple(sorted(row.expirations)),
            strikes=tuple(sorted(row.strikes)),
        )
        self._tell(msg.reply_to, m.ChainFetched(symbol=msg.symbol, chain=chain, spot=math.nan))

    def _ib_option(self, c: m.OptionContract) -> Option:
        opt = Option(
            c.symbol,
            c.expiry,
            c.strike,
            c.right,
            c.exchange,
            tradingClass=c.trading_class,
            multiplier=str(c.multiplier),
            currency="USD",
        )
        if c.con_id:
            opt.conId = c.con_id
        return opt

    @staticmethod
    def _option_value(contract: Any, c: m.OptionContract) -> m.OptionContract:
        return m.OptionContract(
            symbol=c.symbol,
            expiry=c.expiry,
            strike=c.strike,
            right=c.right,
            con_id=contract.conId,
            local_symbol=contract.localSymbol,
            trading_class=contract.tradingClass or c.trading_class,
            multiplier=int(float(contract.multiplier or c.multiplier)),
            exchange=c.exchange,
        )

    def on_FetchQuotes(self, msg: m.FetchQuotes) -> None:
        refusal = self._refuse()
        if refusal:
            self._tell(
                msg.reply_to,
                m.QuotesFetched(
                    quotes=(), missing=tuple((c, refusal) for c in msg.contracts), tag=msg.tag
                ),
            )
            return
        self._spawn(self._quotes(msg))

    async def _quotes(self, msg: m.FetchQuotes) -> None:
        missing: list[tuple[m.OptionContract, str]] = []
        quotes: list[m.OptionQuote] = []
        try:
            contracts = [self._ib_option(c) for c in msg.contracts]
            qualified = await self._timed(
                "contract_details",
                self.ib.qualifyContractsAsync(*contracts),
            )
            pairs = [
                (c, q)
                for c, q in zip(msg.contracts, qualified, strict=False)
                if q is not None and q.conId
            ]
            missing += [
                (c, "no such contract (200)")
                for c, q in zip(msg.contracts, qualified, strict=False)
                if q is None or not q.conId
            ]
            tickers = (
                await self._timed(
                    "snapshot", self.ib.reqTickersAsync(*[q for _, q in pairs]), msg.wait_s + 8.0
                )
                if pairs
                else []
            )
        except Exception as exc:  # noqa: BLE001
            reason = "quote request timed out" if isinstance(exc, TimeoutError) else str(exc)
            self._tell(
                msg.reply_to,
                m.QuotesFetched(
                    quotes=(), missing=tuple((c, reason) for c in msg.contracts), tag=msg.tag
                ),
            )
            return
        by_con = {t.contract.conId: t for t in tickers}
        self._mark_snapshot(by_con)
        recheck = self.settings.options.quote_recheck_s
        scale = getattr(self.clock, "scale", 1.0)
        unproven = [
            q
            for _, q in pairs
            if (mark := self.quote_marks.get(q.conId)) is not None
            and quote_age_s(mark, self.clock.now(), scale) > self.settings.options.max_quote_age_s
        ]
        if unproven:
            # Seen for the first time, or not since long ago: watch them for a moment. A live
            # quote moves meanwhile and the line says exactly when; a frozen one does not.
            await self._watch_briefly(unproven, recheck)
            # ib_async keeps one Ticker per contract: the snapshot's now holds the line's last.
        now = self.clock.now()
        for c, q in pairs:
            t: Ticker | None = by_con.get(q.conId)
            value = self._option_value(q, c)
            bid, ask = (_price(t.bid), _price(t.ask)) if t else (math.nan, math.nan)
            if t is None or math.isnan(bid) or math.isnan(ask):
                missing.append(
                    (value, "no quote (NaN): no entitlement, market closed, or no market")
                )
                continue
            mark = self.quote_marks.get(q.conId)
            quotes.append(
                m.OptionQuote(
                    contract=value,
                    bid=bid,
                    ask=ask,
                    last=_finite(t.last),
                    volume=_finite(t.volume),
                    time=(mark.since or mark.seen) if mark else now,
                    age_known=mark is not None and mark.since is not None,
                )
            )
        self._tell(
            msg.reply_to, m.QuotesFetched(quotes=tuple(quotes), missing=tuple(missing), tag=msg.tag)
        )

    async def _watch_briefly(self, contracts: list[Any], seconds: float) -> None:
        """Open a line on each contract for `seconds` and mark every bid/ask change it brings.

        A line, not a second snapshot: IB may take up to 11 s to end a snapshot, which would
        age the quote it was meant to prove fresh. A contract already watched is skipped (its
        line marks it all along); with every line in use, the rest keep their first look.
        """
        opened: list[tuple[Any, Ticker, Callable[[Ticker], None]]] = []
        try:
            for q in contracts:
                if q.conId in self.quote_lines or not self.ib.isConnected():
                    continue
                try:
                    await asyncio.wait_for(self.lines.acquire(), timeout=seconds)
                except TimeoutError:
                    break
                ticker = self.ib.reqMktData(q, "", False, False)
                start = _LineStart()

                def on_tick(t: Ticker, con_id: int = q.conId, start: _LineStart = start) -> None:
                    watched = start.settled(t)
                    bid, ask = _price(t.bid), _price(t.ask)
                    if not (math.isnan(bid) or math.isnan(ask)):
                        self._mark(con_id, bid, ask, self.clock.now(), watched)

                ticker.updateEvent += on_tick
                opened.append((q, ticker, on_tick))
            if opened:
                await asyncio.sleep(seconds)
        finally:
            for q, ticker, on_tick in opened:
                ticker.updateEvent -= on_tick
                if self.ib.isConnected() and q.conId not in self.quote_lines:
                    self.ib.cancelMktData(q)
                self.lines.release()

    def _mark_snapshot(self, by_con: dict[int, Ticker]) -> None:
        now = self.clock.now()
        for con_id, t in by_con.items():
            self._mark(con_id, _price(t.bid), _price(t.ask), now, watched=False)

    def _mark(self, con_id: int, bid: float, ask: float, now: datetime, watched: bool) -> QuoteMark:
        mark = self.quote_marks[con_id] = observe_quote(
            self.quote_marks.get(con_id), bid, ask, now, watched
        )
        if len(self.quote_marks) > 5000:
            # Marks of contracts not looked at for long are worth nothing: the next look is a
            # first sight anyway. Oldest first.
            for key in sorted(self.quote_marks, key=lambda k: self.quote_marks[k].seen)[:1000]:
                self.quote_marks.pop(key, None)
        return mark

    def on_WatchQuotes(self, msg: m.WatchQuotes) -> None:
        if self._refuse():
            return  # resubscribed by the watcher on the next resync
        self._spawn(self._watch(msg))

    async def _watch(self, msg: m.WatchQuotes) -> None:
        c = msg.contract
        contract = self._ib_option(c)
        if not c.con_id:
            q = await self.ib.qualifyContractsAsync(contract)
            if not q or q[0] is None:
                log.warning("%s: cannot watch quotes, no such contract (200)", c.symbol)
                return
            contract = q[0]
        seq = self._next_watch(contract.conId)
        # A watch asked again (after a resync) replaces the old line instead of taking another.
        await self._unwatch(contract.conId)
        if self.lines.locked():
            log.warning(
                "%s waits for a market data line (all %d in use)",
                c.symbol,
                self.settings.broker.max_market_data_lines,
            )
        await self.lines.acquire()
        if not self.ib.isConnected() or self.watch_seq.get(contract.conId) != seq:
            self.lines.release()  # lost while waiting (resubscribed on resync), or superseded
            return
        ticker = self.ib.reqMktData(contract, "", False, False)
        self.quote_lines[contract.conId] = ticker
        self.metrics.market_data_lines.set(len(self.quote_lines))
        reply_to = msg.reply_to
        last: list[tuple[float, float]] = [(math.nan, math.nan)]
        con_id = contract.conId

        start = _LineStart()

        def on_tick(t: Ticker) -> None:
            # A line's first values are whatever IB holds, frozen or not; after that every
            # change comes as a tick, so a change is known to be fresh.
            watched = start.settled(t)
            bid, ask = _price(t.bid), _price(t.ask)
            if (bid, ask) == last[0] or math.isnan(bid) or math.isnan(ask):
                return
            last[0] = (bid, ask)
            mark = self._mark(con_id, bid, ask, self.clock.now(), watched)
            self._tell(
                reply_to,
                m.QuoteUpdated(
                    quote=m.OptionQuote(
                        contract=c,
                        bid=bid,
                        ask=ask,
                        last=_finite(t.last),
                        volume=_finite(t.volume),
                        time=mark.since or mark.seen,
                        age_known=mark.since is not None,
                    )
                ),
            )

        ticker.updateEvent += on_tick

    def on_UnwatchQuotes(self, msg: m.UnwatchQuotes) -> None:
        self._spawn(self._stop_watching(msg.contract.con_id))

    def _next_watch(self, con_id: int) -> int:
        seq = self.watch_seq[con_id] = self.watch_seq.get(con_id, 0) + 1
        return seq

    async def _stop_watching(self, con_id: int) -> None:
        self._next_watch(con_id)  # a watch still waiting for a line gives it back unused
        await self._unwatch(con_id)

    async def _unwatch(self, con_id: int) -> None:
        ticker = self.quote_lines.pop(con_id, None)
        if ticker is None:
            return
        if self.ib.isConnected():
            self.ib.cancelMktData(ticker.contract)
        self.lines.release()
        self.metrics.market_data_lines.set(len(self.quote_lines))

    # -- orders (live mode) -------------------------------------------------------------------
    def on_PlaceBracket(self, msg: m.PlaceBracket) -> None:
        refusal = self._refuse()
        if refusal:
            for leg in msg.legs:
                self._tell(
                    msg.reply_to,
                    m.BrokerOrderStatus(
                        order_ref=leg.order_ref,
                        status="Inactive",
                        filled=0,
                        remaining=leg.quantity,
                        avg_fill_price=0,
                        order_id=0,
                        perm_id=0,
                        reason=f"not sent: {refusal}",
                    ),
                )
            return
        self._spawn(self._place(msg))

    async def _place(self, msg: m.PlaceBracket) -> None:
        contract = self._ib_option(msg.contract)
        ids: dict[str, int] = {}
        for leg in msg.legs:
            if leg.order_type == "LMT":
                order = LimitOrder(leg.action, leg.quantity, leg.limit_price)
            elif leg.order_type == "STP":
                order = StopOrder(leg.action, leg.quantity, leg.aux_price)
            else:
                order = MarketOrder(leg.action, leg.quantity)
            order.orderId = self.ib.client.getReqId()
            order.orderRef = leg.order_ref
            order.transmit = leg.transmit
            order.tif = leg.tif or "DAY"
            if leg.parent_ref:
                order.parentId = ids[leg.parent_ref]
            if leg.oca_group:
                order.ocaGroup, order.ocaType = leg.oca_group, 1
            if self.settings.broker.account.get_secret_value():
                order.account = self.settings.broker.account.get_secret_value()
            ids[leg.order_ref] = order.orderId
            self.ib.placeOrder(contract, order)
            crashpoint("between_legs" if not leg.transmit else "after_send_before_ack")
        self._tell_self(_RequestDone(kind="place_order", ok=True, seconds=0.0))

    def on_CancelOrder(self, msg: m.CancelOrder) -> None:
        self._spawn(self._cancel(msg.order_ref))

    async def _cancel(self, order_ref: str) -> None:
        for trade in self.ib.openTrades():
            if trade.order.orderRef == order_ref:
                self.ib.cancelOrder(trade.order)

    def on_FetchBrokerState(self, msg: m.FetchBrokerState) -> None:
        refusal = self._refuse()
        if refusal:
            # No answer would leave OrderActor unreconciled; it asks again on the next resync.
            log.warning("reconciliation postponed: %s", refusal)
            return
        self._spawn(self._broker_state(msg))

    async def _broker_state(self, msg: m.FetchBrokerState) -> None:
        """Ask afresh: open orders of every client id (ours may have rotated), today's completed
        orders and executions. The start-up sync only saw this client id's open orders."""
        try:
            open_trades = await self._timed("broker_state", self.ib.reqAllOpenOrdersAsync())
            done = await self._timed("broker_state", self.ib.reqCompletedOrdersAsync(False))
            fills = await self._timed("broker_state", self.ib.reqExecutionsAsync())
            held = await self._timed("broker_state", self.ib.reqPositionsAsync())
        except Exception as exc:  # noqa: BLE001 - stay unreconciled (no new orders) and retry
            log.warning("reconciliation request failed (%s); retrying in 5s", exc)
            await asyncio.sleep(5)
            self._tell_self(msg)
            return
        seen: dict[str, m.BrokerOrderStatus] = {}
        for trade in [*done, *open_trades, *self.ib.trades()]:
            status = self._status_msg(trade)
            if status.order_ref and status.order_ref not in seen:
                seen[status.order_ref] = status
        execs = {f.execution.execId: self._exec_msg(f) for f in [*fills, *self.ib.fills()]}
        options = [p for p in held if p.contract.secType == "OPT" and p.position]
        positions = tuple((p.contract.conId, float(p.position)) for p in options)
        account = self.settings.broker.account.get_secret_value() or next(
            iter(self.ib.managedAccounts()), ""
        )
        pnl = await self._account_pnl(account)
        net_liq = math.nan
        for value in self.ib.accountValues():
            if value.tag == "NetLiquidation" and value.currency in ("USD", "BASE"):
                try:
                    net_liq = float(value.value)
                except ValueError:
                    pass
        self._tell(
            msg.reply_to,
            m.BrokerState(
                statuses=tuple(seen.values()),
                executions=tuple(execs.values()),
                positions=positions,
                holdings=tuple(
                    m.BrokerPosition(
                        con_id=p.contract.conId,
                        symbol=p.contract.symbol,
                        local_symbol=p.contract.localSymbol,
                        expiry=p.contract.lastTradeDateOrContractMonth,
                        strike=float(p.contract.strike),
                        right=p.contract.right,
                        quantity=float(p.position),
                        avg_cost=float(p.avgCost),
                    )
                    for p in options
                ),
                working=tuple(self._working_msg(t) for t in open_trades),
                pnl=pnl,
                net_liquidation=net_liq,
                account=account,
            ),
        )

    async def _account_pnl(self, account: str) -> m.BrokerPnL | None:
        """Today's P&L of the account (reqPnL), or None when the broker does not answer in time.

        ib_async's IB.reqPnL returns a PnL object that its wrapper fills from each PNL message
        (decoder.py: msg 94 = reqId, dailyPnL, unrealizedPnL, realizedPnL) and keeps live: the
        subscription stays open and later reconciliations read the current figures."""
        if not account:
            return None
        found = self.ib.pnl(account)
        pnl = found[0] if found else self.ib.reqPnL(account)
        if math.isnan(pnl.dailyPnL):
            answered = asyncio.get_running_loop().create_future()

            def on_pnl(p: Any) -> None:
                if p is pnl and not answered.done():
                    answered.set_result(True)

            self.ib.pnlEvent += on_pnl
            try:
                await asyncio.wait_for(answered, self._timeout("broker_state"))
            except TimeoutError:
                log.warning("the broker sent no P&L (reqPnL) in time; the loss guard keeps its own")
                return None
            finally:
                self.ib.pnlEvent -= on_pnl
        return m.BrokerPnL(
            daily=float(pnl.dailyPnL),
            unrealized=float(pnl.unrealizedPnL),
            realized=float(pnl.realizedPnL),
        )

    @staticmethod
    def _working_msg(trade: Trade) -> m.BrokerWorkingOrder:
        o, c = trade.order, trade.contract
        return m.BrokerWorkingOrder(
            order_ref=o.orderRef or "",
            perm_id=int(o.permId or 0),
            order_id=int(o.orderId or 0),
            status=trade.orderStatus.status,
            con_id=c.conId,
            symbol=c.symbol,
            local_symbol=c.localSymbol,
            expiry=c.lastTradeDateOrContractMonth,
            strike=float(c.strike or 0.0),
            right=c.right,
            sec_type=c.secType,
            action=o.action,
            order_type=o.orderType,
            quantity=float(o.totalQuantity),
            limit_price=float(o.lmtPrice) if o.lmtPrice < 1e300 else 0.0,
            aux_price=float(o.auxPrice) if o.auxPrice < 1e300 else 0.0,
            oca_group=o.ocaGroup or "",
            parent_id=int(o.parentId or 0),
        )

    def _status_msg(self, trade: Trade) -> m.BrokerOrderStatus:
        s = trade.orderStatus
        return m.BrokerOrderStatus(
            order_ref=trade.order.orderRef,
            status=s.status,
            filled=float(s.filled),
            remaining=float(s.remaining),
            avg_fill_price=float(s.avgFillPrice or 0),
            order_id=trade.order.orderId,
            perm_id=trade.order.permId,
            # Broker text can name the account (201 "Invalid account code ..."): masked here,
            # before it reaches a log line, an order row or an event.
            reason=redact(_log_reason(trade), (self.settings.broker.account.get_secret_value(),)),
        )

    def _exec_msg(self, fill: Any) -> m.BrokerExecution:
        e = fill.execution
        t = e.time if isinstance(e.time, datetime) else self.clock.now()
        return m.BrokerExecution(
            order_ref=e.orderRef,
            exec_id=e.execId,
            side=e.side,
            quantity=float(e.shares),
            price=float(e.price),
            time=t,
            commission=float(getattr(fill.commissionReport, "commission", 0.0) or 0.0),
        )

    def _on_trade_status(self, trade: Trade) -> None:
        msg = self._status_msg(trade)
        for ref in self.listeners["orders"]:
            self._tell(ref, msg)

    def _on_exec(self, trade: Trade, fill: Any) -> None:
        msg = self._exec_msg(fill)
        if not msg.order_ref:
            msg = m.BrokerExecution(
                **{
                    **{
                        f: getattr(msg, f)
                        for f in ("exec_id", "side", "quantity", "price", "time", "commission")
                    },
                    "order_ref": trade.order.orderRef,
                }
            )
        for ref in self.listeners["orders"]:
            self._tell(ref, msg)

    def _on_commission(self, trade: Trade, fill: Any, report: Any) -> None:
        msg = m.BrokerCommission(exec_id=report.execId, commission=float(report.commission or 0.0))
        for ref in self.listeners["orders"]:
            self._tell(ref, msg)

    async def _push_account(self) -> None:
        for value in self.ib.accountValues():
            self._on_account_value(value)

    def _on_account_value(self, value: Any) -> None:
        if value.tag == "NetLiquidation" and value.currency in ("USD", "BASE"):
            try:
                nl = float(value.value)
            except ValueError:
                return
            for ref in self.listeners["account"]:
                self._tell(ref, m.AccountValues(net_liquidation=nl))

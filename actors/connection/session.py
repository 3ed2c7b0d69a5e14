"""The loop thread's side of the connection: the `ib_async.IB`, its asyncio loop, the send gate.

Everything in this module, and in history, quotes and broker, runs on the loop thread, and
everything they keep (the IB client, its tickers, quote lines, streams, the gate, request
bookkeeping) is theirs alone. The actor thread reaches in only through `submit`, `call` and
`later`, which schedule a coroutine or a callback on the loop: a message. The loop reaches the
actor only by `tell`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ib_async import IB, Stock

from actors import messages as m
from actors.base import tell
from actors.connection.broker import Broker
from actors.connection.history import History
from actors.connection.quotes import Quotes
from actors.ibcodes import CLIENT_ID_IN_USE, MESSAGE_RATE
from actors.metrics import Metrics
from actors.pacing import CLASS_NAMES, ORDERS, MessageGate, message_class
from configs.settings import Settings

log = logging.getLogger("optionsbot.connection")

# How long the gate sends at half rate after IB's error 100: long enough that a Gateway reading
# late has caught up, short enough that a cold start is not slowed for good.
RATE_BACK_OFF_S = 60.0
RATE_SILENCE_S = 1.0  # MessageGate.back_off's second without a message


# -- what the loop tells the actor ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Dialing(m.Msg):
    """A new socket is being opened (not a probe over the open one): an attempt to count."""


@dataclass(frozen=True, slots=True)
class _ConnectResult(m.Msg):
    ok: bool
    cause: str = ""
    client_id_in_use: bool = False
    probe: bool = False


@dataclass(frozen=True, slots=True)
class _Lost(m.Msg):
    cause: str


@dataclass(frozen=True, slots=True)
class _IbError(m.Msg):
    req_id: int
    code: int
    text: str


@dataclass(frozen=True, slots=True)
class _RequestDone(m.Msg):
    kind: str
    ok: bool
    seconds: float
    timed_out: bool = False
    cause: str = ""


def request_timeout(settings: Settings, kind: str) -> float:
    b = settings.broker
    return b.timeouts_s.get(kind, b.request_timeout_s)


@dataclass(frozen=True, slots=True)
class Target:
    """Where and as whom to connect: the actor's choice, sent with each attempt."""

    host: str
    port: int
    client_id: int


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


def back_off_on_error_100(ib: Any, gate: MessageGate, loop: asyncio.AbstractEventLoop) -> None:
    """IB's error 100 (over 50 messages a second, as the Gateway counted them) slows `gate` at
    once, on the loop that sends: the next message already waits for the back-off."""

    def on_error(req_id: int, code: int, *_: Any) -> None:
        if code == MESSAGE_RATE:
            gate.back_off(loop.time(), RATE_BACK_OFF_S)

    ib.errorEvent += on_error


class Session:
    """Owns `ib_async.IB` and the loop it runs on; history, quotes and broker work through it."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        clock: Any,
        actor: Any,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.actor = actor  # told, never called
        self.market_data_type = settings.broker.market_data_type
        self.stock_contracts: dict[str, Any] = {}
        # A symbol's qualification in flight: its 1-minute and 1-hour history start together at
        # a cold start, and the second waits for the first's answer instead of asking again.
        self.stock_pending: dict[str, asyncio.Future] = {}
        # When the Gateway last said error 100 (monotonic): what was in flight then may be lost.
        self.rate_violation_at = float("-inf")
        self.timers: set[asyncio.TimerHandle] = set()
        self.history = History(self)
        self.quotes = Quotes(self)
        self.broker = Broker(self)
        self.ib: IB
        self.gate: MessageGate
        self.loop: asyncio.AbstractEventLoop
        self.thread: threading.Thread

    # -- the actor thread's doors: each one schedules work on the loop ----------------------
    def start(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ib-loop", daemon=True)
        self.thread.start()
        self.call(self._make_ib())

    def submit(self, coro: Coroutine[Any, Any, Any]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float | None = 15) -> Any:
        """Run a coroutine on the loop and wait (only for start-up, the resync clock and stop)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def later(self, delay: float, msg: m.Msg) -> None:
        """Tell the actor `msg` in `delay` seconds: a timer on the loop, not a thread."""
        self.loop.call_soon_threadsafe(self._later, delay, msg)

    def stop(self) -> None:
        """Stop the loop and wait for its thread (the actor's last step)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()

    # -- the loop thread ------------------------------------------------------------------------
    def _later(self, delay: float, msg: m.Msg) -> None:
        def fire() -> None:
            self.timers.discard(handle)
            tell(self.actor, msg)

        handle = self.loop.call_later(delay, fire)
        self.timers.add(handle)

    def tell_actor(self, msg: m.Msg) -> None:
        tell(self.actor, msg)

    def connected(self) -> bool:
        return self.ib.isConnected()

    async def _make_ib(self) -> None:
        ib = self.ib = IB()
        ib.RequestTimeout = 0  # our own per-kind timeouts decide
        self._install_gate(ib.client)
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += lambda: self.tell_actor(_Lost(cause="socket closed"))
        self.broker.listen(ib)

    def _on_error(self, req_id: int, code: int, text: str, *_: Any) -> None:
        if code == MESSAGE_RATE:
            self.rate_violation_at = time.monotonic()
            self.history.on_rate_violation(RATE_SILENCE_S)
        self.tell_actor(_IbError(req_id=req_id, code=code, text=text))

    def _install_gate(self, client: Any) -> None:
        b = self.settings.broker
        self.gate = MessageGate(b.max_messages_per_second, b.message_burst)

        def sent(cls: int) -> None:
            self.metrics.messages_sent.labels(CLASS_NAMES[cls]).inc()

        def queued(gate: MessageGate) -> None:
            for cls, name in enumerate(CLASS_NAMES):
                self.metrics.send_queue_depth.labels(name).set(gate.depth(cls))

        loop = asyncio.get_running_loop()
        install_gate(client, self.gate, loop, sent, queued)
        back_off_on_error_100(self.ib, self.gate, loop)

    async def guarded(
        self, refusal: str, refuse: Callable[[str], None], work: Callable[[], Awaitable[Any]]
    ) -> None:
        """Start `work` if the socket is open, else `refuse` it with the actor's `refusal`: the
        actor knows the machine's state, only the loop knows the socket's."""
        if not self.ib.isConnected():
            refuse(refusal)
            return
        await work()

    async def attempt(self, probe: bool, target: Target) -> None:
        """A half-open breaker over an open socket probes with one request; otherwise connect."""
        if probe and self.ib.isConnected():
            await self._probe_request()
            return
        self.tell_actor(_Dialing())
        await self._connect(probe, target)

    async def _connect(self, probe: bool, target: Target) -> None:
        in_use = asyncio.Event()

        def watch(req_id: int, code: int, *_: Any) -> None:
            if code == CLIENT_ID_IN_USE:
                in_use.set()

        self.ib.errorEvent += watch
        b = self.settings.broker
        try:
            await self.ib.connectAsync(
                target.host,
                target.port,
                clientId=target.client_id,
                timeout=b.connect_timeout_s,
                readonly=b.readonly,
                account=b.account.get_secret_value(),
            )
            if self.market_data_type != 1:
                self.ib.reqMarketDataType(self.market_data_type)
            self.tell_actor(_ConnectResult(ok=True, probe=probe))
        except Exception as exc:  # noqa: BLE001 - every connect failure is a breaker failure
            self.ib.disconnect()
            cause = "client id in use (326)" if in_use.is_set() else f"{type(exc).__name__}: {exc}"
            self.tell_actor(
                _ConnectResult(ok=False, cause=cause, client_id_in_use=in_use.is_set(), probe=probe)
            )
        finally:
            self.ib.errorEvent -= watch

    async def _probe_request(self) -> None:
        try:
            await asyncio.wait_for(self.ib.reqCurrentTimeAsync(), self.timeout("probe"))
            self.tell_actor(_ConnectResult(ok=True, probe=True))
        except Exception as exc:  # noqa: BLE001
            self.tell_actor(_ConnectResult(ok=False, cause=f"probe failed: {exc}", probe=True))

    async def recheck(self) -> None:
        """One timed request after a timeout: the actor hears how it went (request_ok or
        request_failed), as for any request."""
        if not self.ib.isConnected():
            return
        try:
            await self.timed("probe", self.ib.reqCurrentTimeAsync())
        except Exception:  # noqa: BLE001, S110 - timed told the actor; the actor decides
            pass

    async def sync_clock(self, only_if_connected: bool = False) -> None:
        if only_if_connected and not self.ib.isConnected():
            return
        try:
            t = await asyncio.wait_for(self.ib.reqCurrentTimeAsync(), self.timeout("probe"))
        except Exception as exc:  # noqa: BLE001 - keep the last anchor; try again later
            log.warning("could not read the Gateway's clock: %s", exc)
            return
        skew = self.clock.sync(t)
        if abs(skew) > 2 * getattr(self.clock, "scale", 1.0):
            log.warning("our clock was %+.0fs off the Gateway's; following the Gateway", skew)

    async def use_market_data_type(self, kind: int) -> None:
        """From now on, and at every connect: delayed quotes after an entitlement error."""
        self.market_data_type = kind
        if self.ib.isConnected():
            self.ib.reqMarketDataType(kind)

    async def lost(self) -> None:
        """The socket closed: the Gateway forgot every stream and quote line: all free again."""
        self.history.drop()
        self.quotes.drop()

    async def close(self, flush_s: float) -> None:
        """The stop: no timer fires any more; queued order messages go out, then the socket
        closes."""
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()
        try:
            await self._flush_orders(flush_s)
        except Exception as exc:  # noqa: BLE001
            log.warning("order messages still queued at stop: %s", exc)
        if self.ib.isConnected():
            self.ib.disconnect()

    async def _flush_orders(self, limit_s: float) -> None:
        """Order messages still waiting for the rate limit go out before the socket closes: a
        bracket must not reach the Gateway with a leg missing. (Queued data is dropped.)"""
        deadline = time.monotonic() + limit_s
        while self.gate.depth(ORDERS) and self.ib.isConnected() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.gate.depth(ORDERS):
            log.warning("%d order messages not sent before the stop", self.gate.depth(ORDERS))

    @staticmethod
    async def cancel_tasks() -> None:
        """Requests still waiting (for pacing, a slot, an answer) end with the loop, quietly."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- what history, quotes and broker share ----------------------------------------------
    def timeout(self, kind: str) -> float:
        return request_timeout(self.settings, kind)

    async def timed(self, kind: str, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        """Run one request with its timeout; the breaker hears about every outcome.

        The timeout starts when the request would leave the message gate: a request queued
        behind a cold start's waits on us, not on the Gateway. A request still unanswered when
        the Gateway said error 100 may have been one it dropped (it answers none of those): its
        timeout is counted, but not held against the Gateway."""
        gate = getattr(self, "gate", None)
        queued = gate.backlog_s(asyncio.get_running_loop().time()) if gate is not None else 0.0
        timeout = (timeout or self.timeout(kind)) + queued
        t0 = time.monotonic()
        try:
            result = await asyncio.wait_for(coro, timeout)
        except TimeoutError:
            if self.rate_violation_at >= t0:
                log.warning(
                    "%s unanswered %.0fs: in flight when the Gateway counted too many messages"
                    " (error 100), so perhaps dropped by it; not counted against the connection",
                    kind,
                    time.monotonic() - t0,
                )
                self.tell_actor(
                    _RequestDone(
                        kind=kind,
                        ok=False,
                        seconds=time.monotonic() - t0,
                        cause="unanswered after error 100",
                    )
                )
                raise
            self.tell_actor(
                _RequestDone(kind=kind, ok=False, seconds=time.monotonic() - t0, timed_out=True)
            )
            raise
        except Exception as exc:
            self.tell_actor(
                _RequestDone(kind=kind, ok=False, seconds=time.monotonic() - t0, cause=str(exc))
            )
            raise
        self.tell_actor(_RequestDone(kind=kind, ok=True, seconds=time.monotonic() - t0))
        return result

    def done(self, kind: str) -> None:
        """A request that has no answer to wait for went out."""
        self.tell_actor(_RequestDone(kind=kind, ok=True, seconds=0.0))

    async def stock(self, symbol: str) -> Any:
        contract = self.stock_contracts.get(symbol)
        if contract is not None:
            return contract
        pending = self.stock_pending.get(symbol)
        if pending is not None:
            # shield: a waiter cancelled (its request timed out) leaves the first one's running.
            return await asyncio.shield(pending)
        pending = self.stock_pending[symbol] = asyncio.get_running_loop().create_future()
        try:
            details = await self.timed(
                "contract_details",
                self.ib.qualifyContractsAsync(Stock(symbol, "SMART", "USD")),
            )
            contract = details[0] if details and details[0] is not None else None
            if contract is None or not contract.conId:
                raise LookupError(f"{symbol}: no security definition (200); check the symbol")
            self.stock_contracts[symbol] = contract
            pending.set_result(contract)
        except BaseException as exc:
            # Every waiter gets the same answer; the next call asks afresh.
            answer = exc
            if not isinstance(exc, Exception):
                answer = LookupError(f"{symbol}: qualification abandoned ({type(exc).__name__})")
            pending.set_exception(answer)
            pending.exception()  # retrieved here, so no waiter-less future warns at exit
            raise
        finally:
            self.stock_pending.pop(symbol, None)
        return contract

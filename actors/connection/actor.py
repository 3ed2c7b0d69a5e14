"""ConnectionActor (actor thread only): the connection machine, its handlers and listeners.

The IB client and all it keeps belong to the session on the loop thread (session.py); this
actor reaches them only by scheduling work there (`session.submit`, `call`, `later`), and hears
back only by message.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from transitions import MachineError

from actors import messages as m
from actors.base import BaseActor, tell
from actors.clock import WallClock
from actors.connection import routines
from actors.connection.broker import bracket_refused, reconciliation_postponed
from actors.connection.history import refused as history_refused
from actors.connection.quotes import chain_refused, quotes_refused
from actors.connection.session import (
    RATE_BACK_OFF_S,
    Session,
    Target,
    _ConnectResult,
    _Dialing,
    _IbError,
    _Lost,
    _RequestDone,
    request_timeout,
)
from actors.ibcodes import (
    CONNECTIVITY_LOST,
    ENTITLEMENT,
    FARM_BROKEN,
    FARM_OK,
    MESSAGE_RATE,
    NO_DELAYED,
    QUIET,
    RESTORED_DATA_KEPT,
    RESTORED_DATA_LOST,
    answers_a_cancel,
    error_class,
)
from actors.metrics import Metrics
from configs.settings import Settings
from machines.connection import TIMEOUT_CAUSE, ConnectionModel, ConnState, connection_machine
from storage import MachineStateRepo, open_db

log = logging.getLogger("optionsbot.connection")

ENTITLEMENT_ADVICE = (
    "the account has no API market data subscription for this contract: buy it in Client Portal, "
    "or set broker.delayed_data_fallback: true (or broker.market_data_type: 3) for delayed data"
)


# -- the actor's own timers (fired on the loop by `session.later`) --------------------------


@dataclass(frozen=True, slots=True)
class _Attempt(m.Msg):
    pass


@dataclass(frozen=True, slots=True)
class _SyncClock(m.Msg):
    pass


@dataclass(frozen=True, slots=True)
class _CooldownOver(m.Msg):
    pass


@dataclass(frozen=True, slots=True)
class _Recheck(m.Msg):
    pass


# How long after a request timed out (the connection degraded, no new entries) the Gateway is
# asked once more whether it answers. Without it the state waited for the next timed request to
# succeed, and a quiet service (bars stream, quotes on lines, and no entry while degraded) makes
# none: one slow snapshot kept the service out of the market for good (bench.latency, issue 17).
RECHECK_S = 5.0


def backoff_delay(
    attempt: int, base: float = 1.0, cap: float = 30.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter in [0.5, 1.0] of the step: attempts never pile up."""
    step = min(cap, base * (2 ** max(0, attempt)))
    return step * (0.5 + 0.5 * (rng or random).random())


class ConnectionActor(BaseActor):
    name = "connection"

    """The only owner of `ib_async.IB`. Everything else talks to it by message."""

    def __init__(self, settings: Settings, metrics: Metrics, clock: Any, port: int | None = None):
        super().__init__()
        self.settings = settings
        self.metrics = metrics
        self.clock = clock if clock is not None else WallClock()
        self.host = settings.broker.host
        self.port = port or settings.broker.port
        self.base_client_id = settings.broker.client_id
        self.client_id = self.base_client_id
        self.model = ConnectionModel(failure_threshold=settings.broker.breaker_threshold)
        self.listeners: list[Any] = []  # of the connection's state; orders and account: broker
        self.attempts = 0
        self.ever_connected = False
        self.stopping = False
        self.cooldown_s = settings.broker.breaker_cooldown_s
        self.recheck_s = min(RECHECK_S, self.cooldown_s)
        self.recheck_due = False  # a _Recheck is on its way
        self.entitlement_reported: set[int] = set()
        # The actor's record of the fallback decision; the session keeps its own copy, set by
        # message, for the connects it makes.
        self.market_data_type = settings.broker.market_data_type
        metrics.market_data_type.set(self.market_data_type)
        self.stale_symbols: set[str] = set()
        self.routine_reported = ""  # the Gateway routine whose first failure was logged
        # Everything the loop thread touches is the session's: reached only by message.
        self.session = Session(settings, metrics, clock, self.actor_ref)

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
        self.session.start()
        if hasattr(self.clock, "sync"):
            self.session.later(self.settings.broker.clock_sync_s, _SyncClock())
        if initial is ConnState.BREAKER_OPEN:
            log.warning(
                "breaker was open at the last stop; waiting %.0fs before probing", self.cooldown_s
            )
            self.session.later(self.cooldown_s, _CooldownOver())
        else:
            self.actor_ref.tell(_Attempt())

    def on_stop(self) -> None:
        self.stopping = True
        try:
            self.session.call(self.session.close(3.0), timeout=9)
        except Exception as exc:  # noqa: BLE001 - stopping must finish whatever the socket does
            log.warning("disconnect at stop failed: %s", exc)
        self._fire("stop", cause="service stopping")
        try:
            self.session.call(self.session.cancel_tasks(), timeout=5)
        except Exception as exc:  # noqa: BLE001
            log.debug("cancelling the loop's tasks at stop: %s", exc)
        self.session.stop()
        self.db.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Work for the loop thread: the only way in."""
        self.session.submit(coro)

    def _send(self, refuse: Callable[[str], None], work: Callable[[], Awaitable[Any]]) -> None:
        """One request for the Gateway, refused with its reason while the machine may not send;
        the loop refuses it the same way if the socket has closed meanwhile."""
        refusal = f"not connected (connection {self.model.state})"
        if not self.model.may_send:
            refuse(refusal)
            return
        self._spawn(self.session.guarded(refusal, refuse, work))

    # -- the machine ----------------------------------------------------------------------
    def _routine(self) -> str:
        """The Gateway routine under way now, or "" (and the gauge that says so)."""
        now = self.clock.now()
        routine = routines.active(self.settings.broker.routines, now)
        for r in self.settings.broker.routines:
            self.metrics.gateway_routine.labels(r.name).set(1 if r is routine else 0)
        if routine is None:
            self.routine_reported = ""
            return ""
        return routine.name

    def _report_routine(self, what: str) -> bool:
        """Log the first failure of a routine once, clearly; True if a routine is under way."""
        name = self.model.expected = self._routine()
        if not name:
            return False
        if self.routine_reported != name:
            self.routine_reported = name
            routine = next(r for r in self.settings.broker.routines if r.name == name)
            log.warning(
                "%s during the Gateway's %s: expected (broker.routines), so the breaker holds and"
                " the service keeps reconnecting quietly; if it lasts past the window, the Gateway"
                " needs a person (a login, a 2FA prompt)",
                what,
                routines.describe(routine, self.clock.now()),
            )
        return True

    def _fire(self, trigger: str, **kw: Any) -> bool:
        self.model.expected = self._routine()
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
                if after in ("breaker_open", "degraded", "disconnected")
                and trigger != "stop"
                and not self.model.expected  # a Gateway routine: expected, said once elsewhere
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
        for ref in self.listeners:
            tell(ref, msg)

    def _do(self, intent: str) -> None:
        if intent == "resync":
            # The clock first: every reaction to the resync reads it.
            if hasattr(self.clock, "sync") and not self.stopping:
                self.session.call(
                    self.session.sync_clock(), timeout=request_timeout(self.settings, "probe") + 1
                )
            self._broadcast(resync=True)
            if not self.stopping:
                self._spawn(self.session.broker.push_account())
            return
        if self.stopping:
            return  # no new timers once stopping
        if intent == "reconnect":
            delay = backoff_delay(self.attempts)
            log.info("reconnecting in %.1fs (attempt %d)", delay, self.attempts + 1)
            self.session.later(delay, _Attempt())
        elif intent == "cooldown":
            log.warning("breaker open: no requests for %.0fs", self.cooldown_s)
            self.session.later(self.cooldown_s, _CooldownOver())
        elif intent == "probe":
            tell(self.actor_ref, _Attempt())

    # -- handlers -------------------------------------------------------------------------

    def on_Subscribe(self, msg: m.Subscribe) -> None:
        if "connection" in msg.topics:
            self.listeners.append(msg.listener)
        others = tuple(t for t in msg.topics if t != "connection")
        if others:
            # Orders and account events start on the loop: their listeners live there.
            self._spawn(self.session.broker.subscribe(others, msg.listener))
        if "connection" in msg.topics:
            tell(
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
        # Over a socket still open a probe is one request; else a connect, told as _Dialing.
        self._spawn(self.session.attempt(probe, Target(self.host, self.port, self.client_id)))

    def on_Dialing(self, msg: _Dialing) -> None:
        if self.attempts:
            self.metrics.reconnects.inc()
        self.attempts += 1

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
        elif self._report_routine(f"connect to {self.host}:{self.port} failed ({msg.cause})"):
            pass
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
        self._spawn(self.session.lost())
        self._report_routine(f"the connection dropped ({msg.cause})")
        self._fire("connection_lost", cause=msg.cause)

    def on_SymbolStale(self, msg: m.SymbolStale) -> None:
        """Stale data everywhere is a connection problem; one stale symbol is that symbol's."""
        (self.stale_symbols.add if msg.stale else self.stale_symbols.discard)(msg.symbol)
        if len(self.stale_symbols) >= len(self.settings.symbols):
            self._fire("degrade", cause="stale_data")
        elif "stale_data" in self.model.causes:
            self._fire("recover", cause="stale_data")

    def on_SyncClock(self, msg: _SyncClock) -> None:
        self.model.expected = self._routine()  # keeps optionsbot_gateway_routine current
        if self.model.may_send:
            self._spawn(self.session.sync_clock(only_if_connected=True))
        if not self.stopping:
            self.session.later(self.settings.broker.clock_sync_s, _SyncClock())

    def on_CooldownOver(self, msg: _CooldownOver) -> None:
        self._fire("cooldown_elapsed", cause="cooldown over")

    def on_IbError(self, msg: _IbError) -> None:
        code = msg.code
        self.metrics.ib_errors.labels(error_class(code, msg.text)).inc()
        if code == CONNECTIVITY_LOST:
            self._fire("degrade", cause="1100")
        elif code in (RESTORED_DATA_LOST, RESTORED_DATA_KEPT):
            self._fire("recover", cause="1100")
            if code == RESTORED_DATA_LOST:  # data lost: everything must be requested again
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
        elif code == MESSAGE_RATE:
            log.warning(
                "IB %d: %s; the Gateway counted more than 50 messages in a second (it may read"
                " them late when busy): silent for a second, then half of"
                " broker.max_messages_per_second for %gs, then two thirds of it until the service"
                " stops. A third violation ends the session; requests it dropped time out.",
                code,
                msg.text,
                RATE_BACK_OFF_S,
            )
        elif code in QUIET or answers_a_cancel(code, msg.text):
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
        # The session asks for it now if connected, and at every connect from now on.
        self._spawn(self.session.use_market_data_type(3))

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
        if not msg.ok:
            self._recheck_later()

    def _recheck_later(self) -> None:
        """Degraded by a timeout: ask the Gateway again in a moment rather than wait for a
        request that may never come (an entry is the usual one, and none starts while degraded).
        Its answer recovers the state; its timeout counts toward the breaker like any other."""
        if (
            self.recheck_due
            or self.stopping
            or self.model.conn_state is not ConnState.DEGRADED
            or TIMEOUT_CAUSE not in self.model.causes
        ):
            return
        self.recheck_due = True
        self.session.later(self.recheck_s, _Recheck())

    def on_Recheck(self, msg: _Recheck) -> None:
        self.recheck_due = False
        if (
            self.stopping
            or self.model.conn_state is not ConnState.DEGRADED
            or TIMEOUT_CAUSE not in self.model.causes
        ):
            return
        self._spawn(self.session.recheck())

    # -- requests: each one is work for the loop ----------------------------------------------
    def on_StreamBars(self, msg: m.StreamBars) -> None:
        history = self.session.history
        if msg.realtime:
            self._send(lambda why: history_refused(msg, why), lambda: history.realtime(msg))
            return
        self._send(lambda why: history_refused(msg, why), lambda: history.request(msg, True))

    def on_FetchBars(self, msg: m.FetchBars) -> None:
        history = self.session.history
        self._send(lambda why: history_refused(msg, why), lambda: history.request(msg, False))

    def on_CloseLastBar(self, msg: m.CloseLastBar) -> None:
        self._spawn(self.session.history.close_last_bar(msg))

    def on_FetchChain(self, msg: m.FetchChain) -> None:
        quotes = self.session.quotes
        self._send(lambda why: chain_refused(msg, why), lambda: quotes.chain(msg))

    def on_FetchQuotes(self, msg: m.FetchQuotes) -> None:
        quotes = self.session.quotes
        self._send(lambda why: quotes_refused(msg, why), lambda: quotes.fetch(msg))

    def on_WarmQuotes(self, msg: m.WarmQuotes) -> None:
        # Refused quietly: warming is an optimisation, asked again with the next bar.
        self._send(lambda why: None, lambda: self.session.quotes.warm(msg))

    def on_WatchQuotes(self, msg: m.WatchQuotes) -> None:
        quotes = self.session.quotes
        # Refused quietly: the watcher subscribes again on the next resync.
        self._send(lambda why: None, lambda: quotes.watch(msg))

    def on_UnwatchQuotes(self, msg: m.UnwatchQuotes) -> None:
        self._spawn(self.session.quotes.stop_watching(msg.contract.con_id))

    def on_PlaceBracket(self, msg: m.PlaceBracket) -> None:
        broker = self.session.broker
        self._send(lambda why: bracket_refused(msg, why), lambda: broker.place(msg))

    def on_CancelOrder(self, msg: m.CancelOrder) -> None:
        self._spawn(self.session.broker.cancel(msg.order_ref))

    def on_FetchBrokerState(self, msg: m.FetchBrokerState) -> None:
        broker = self.session.broker
        self._send(reconciliation_postponed, lambda: broker.state(msg))

    def open_stream_count(self) -> int:
        """How many keepUpToDate streams are open (the soak's report, through a proxy): asked of
        the loop, which owns them."""
        return self.session.call(self.session.history.stream_count(), timeout=5)

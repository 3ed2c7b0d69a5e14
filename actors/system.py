"""Builds, starts (in dependency order), supervises and stops (in reverse) the actor system."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pykka

from actors import messages as m
from actors.base import Ping
from actors.clock import GatewayClock, WallClock
from actors.connection import ConnectionActor
from actors.data import DataActor
from actors.data_quotes import QuoteRecorder, QuoteTap
from actors.failures import FAILURES, describe
from actors.hours import MarketHours
from actors.metrics import Metrics, new_registry, prime, serve
from actors.orders import OrderActor
from actors.risk import RiskActor
from actors.strategy import StrategyActor
from configs.redact import register
from configs.settings import Settings
from storage import KeyValueRepo, open_db

log = logging.getLogger("optionsbot.system")

START_TIMEOUT_S = 20.0
# Actors whose death costs records, not safety: the service trades on without them.
OPTIONAL_ACTORS = frozenset({"quotes"})


class StartupError(Exception):
    """The service could not start; the message names the cause in one line."""


def sim_start(
    settings: Settings, stored: str | None, hours: MarketHours, wall: datetime
) -> datetime:
    """Where the simulated clock starts: the setting, else where the last run stopped, else the latest open."""
    if settings.sim.start is not None:
        return settings.sim.start.astimezone(UTC)
    if stored:
        try:
            return datetime.fromisoformat(stored)
        except ValueError:
            log.warning("stored simulated clock %r unreadable; starting at the latest open", stored)
    session = hours.last_session(wall)
    return session.open if session else wall


@dataclass
class System:
    """The whole service. `start()` returns once every actor answered its ping."""

    settings: Settings
    metrics: Metrics | None = None
    serve_metrics: bool = True
    clock: Any = None
    tick_interval_s: float = 0.25
    actors: list[tuple[str, Any]] = field(default_factory=list)
    failed: threading.Event = field(default_factory=threading.Event)
    failure: str = ""

    def __post_init__(self) -> None:
        # Every text the service stores or logs is masked for the account from here on.
        register(self.settings.broker.account.get_secret_value())
        self.metrics = self.metrics or Metrics(new_registry())
        self.hours = MarketHours(cache=self.settings.storage.path.parent / "market-hours.json")
        self.sim = None
        self.exporter = None
        self._stop_ticker = threading.Event()
        self._lost: set[str] = set()
        self._ticker: threading.Thread | None = None
        self._backuper: threading.Thread | None = None
        from storage.backup import next_run

        # When the next nightly backup is due (a test makes it sooner).
        self.backup_schedule = next_run
        self.broker_port = self.settings.broker.port
        self.metrics_port: int | None = None
        self.lock = None

    # -- start ------------------------------------------------------------------------------
    def start(self) -> System:
        """Start everything, or stop what started and raise StartupError naming the cause."""
        try:
            return self._start()
        except Exception as exc:
            self.stop()
            if isinstance(exc, StartupError):
                raise
            log.debug("start-up failed", exc_info=True)  # the traceback, for the JSON log
            raise StartupError(describe(exc, self.settings.storage.path)) from exc

    def _start(self) -> System:
        s = self.settings
        if str(s.storage.path) != ":memory:":
            from storage.lock import InstanceLock, Locked

            try:
                self.lock = InstanceLock(s.storage.path).acquire()
            except Locked as exc:
                raise StartupError(str(exc)) from None
        db = open_db(s.storage.path)  # migrate once, before any actor opens its own connection
        stored_clock = KeyValueRepo(db).get("clock")
        db.close()
        if s.broker.mode == "embedded":
            self._start_sim(stored_clock)
        elif self.clock is None:
            b = s.broker
            self.clock = GatewayClock(b.clock_scale) if b.clock == "gateway" else WallClock()
        prime(self.metrics, s.symbols)
        self.metrics.build_info.info(
            {
                "version": _version(),
                "dry_run": str(s.dry_run).lower(),
                "broker_mode": s.broker.mode,
                "symbols": ",".join(s.symbols),
            }
        )
        if self.serve_metrics and s.metrics.enabled:
            self.exporter, _ = serve(self.metrics.registry, s.metrics.host, s.metrics.port)
            self.metrics_port = self.exporter.server_port
            log.info("metrics on http://%s:%d/metrics", s.metrics.host, self.metrics_port)
        self._start_actors()
        self._ticker = threading.Thread(target=self._tick_loop, name="ticker", daemon=True)
        self._ticker.start()
        if s.storage.backup_dir is not None and str(s.storage.path) != ":memory:":
            self._backuper = threading.Thread(target=self._backup_loop, name="backups", daemon=True)
            self._backuper.start()
        mode = "DRY-RUN (no real orders)" if s.dry_run else "LIVE ORDERS"
        log.info(
            "optionsbot started: %s, %s, broker %s:%d, symbols %s, database %s",
            mode,
            s.broker.mode,
            s.broker.host,
            self.broker_port,
            ",".join(s.symbols),
            s.storage.path,
        )
        return self

    def _start_sim(self, stored_clock: str | None) -> None:
        from sim.clock import ScaledClock
        from sim.config import SimOptions
        from sim.runner import EmbeddedSim

        s = self.settings
        start = sim_start(s, stored_clock, self.hours, datetime.now(UTC))
        clock = self.clock or ScaledClock(start, scale=s.sim.time_scale)
        options = SimOptions(
            seed=s.sim.seed,
            time_scale=s.sim.time_scale,
            start=start,
            skip_closed=s.sim.skip_closed,
            symbols=tuple(s.symbols),
            bar_update_interval=s.sim.bar_update_s,
        )
        if not s.sim.pacing:
            from sim.config import PacingOptions

            options = replace(options, pacing=PacingOptions.off())
        if s.sim.latency != "instant":
            from sim.latency import LatencyOptions

            options = replace(options, latency=LatencyOptions(profile=s.sim.latency))
        if s.sim.scenario is not None:
            from sim.faults import Scenario

            # The service's own settings (start, speed, symbols) win over the scenario's.
            options = Scenario.load(s.sim.scenario).apply(
                options, start=start, time_scale=s.sim.time_scale, symbols=tuple(s.symbols)
            )
        self.sim = EmbeddedSim(options, clock=clock)
        self.broker_port = self.sim.start(host="127.0.0.1", port=0)
        self.clock = self.sim.clock
        log.info(
            "embedded IB Gateway simulator on 127.0.0.1:%d, simulated time %s (x%g)",
            self.broker_port,
            self.clock.now().isoformat(timespec="seconds"),
            s.sim.time_scale,
        )

    def _started(self, name: str, ref: Any) -> Any:
        try:
            ref.ask(Ping(), timeout=START_TIMEOUT_S)
        except pykka.ActorDeadError as exc:
            cause = FAILURES.pop(ref.actor_urn, exc)
            raise StartupError(
                f"{name} could not start: {describe(cause, self.settings.storage.path)}"
            ) from cause
        except pykka.Timeout as exc:
            ref.stop(block=False)
            raise StartupError(
                f"{name} did not answer within {START_TIMEOUT_S:.0f}s of starting"
            ) from exc
        self.actors.append((name, ref))
        return ref

    def _launch(self, name: str, cls: Any, *args: Any, **kwargs: Any) -> Any:
        """Start one actor on its own thread and wait for its ping (a backtest overrides this
        to run the same actors on its deterministic pump instead)."""
        return self._started(name, cls.start(*args, **kwargs))

    def _connection(self) -> tuple[Any, dict[str, Any]]:
        """The market side: the IB connection (a backtest replaces it with its replay)."""
        return ConnectionActor, {"port": self.broker_port}

    def _link(self, risk: Any, orders: Any) -> None:
        risk.proxy().set_order_actor(orders).get(timeout=START_TIMEOUT_S)

    def _start_actors(self) -> None:
        s, mt, clock = self.settings, self.metrics, self.clock
        risk = self._launch("risk", RiskActor, s, mt, clock, self.hours)
        connection_cls, connection_kw = self._connection()
        connection = self._launch("connection", connection_cls, s, mt, clock, **connection_kw)
        # data.record_quotes: OrderActor's quote answers are teed to the recorder on the way.
        quotes = (
            self._launch("quotes", QuoteRecorder, s, mt, clock) if s.data.record_quotes else None
        )
        to_connection = connection if quotes is None else QuoteTap(connection, quotes, clock)
        orders = self._launch("orders", OrderActor, s, mt, clock, to_connection, risk, self.hours)
        self._link(risk, orders)
        strategies = {
            sym: self._launch(f"strategy:{sym}", StrategyActor, sym, s, mt, risk)
            for sym in s.symbols
        }
        data = self._launch(
            "data",
            DataActor,
            s,
            mt,
            clock,
            self.hours,
            connection,
            strategies,
            stale_listeners=(risk, connection),
            spot_listeners=(orders,),
        )
        connection.tell(m.Subscribe(listener=risk, topics=("connection", "account")))
        self.refs = {
            "risk": risk,
            "connection": connection,
            "orders": orders,
            "data": data,
            **strategies,
        }
        if quotes is not None:
            self.refs["quotes"] = quotes

    # -- running ------------------------------------------------------------------------------
    def _tick_loop(self) -> None:
        targets = [self.refs[n] for n in ("data", "risk", "orders", "quotes") if n in self.refs]
        while not self._stop_ticker.wait(self.tick_interval_s):
            now = self.clock.now()
            self.metrics.sim_time.set(now.timestamp())
            for name, ref in self.actors:
                if not ref.is_alive():
                    cause = FAILURES.pop(ref.actor_urn, None)
                    why = describe(cause, self.settings.storage.path) if cause else "no cause"
                    if name in OPTIONAL_ACTORS:
                        # Losing its records is no reason to stop trading: said once, and left.
                        if name not in self._lost:
                            self._lost.add(name)
                            log.error("%s stopped (%s); trading goes on without it", name, why)
                        continue
                    self._fail(f"actor {name} stopped: {why}")
                    return
            for ref in targets:
                try:
                    ref.tell(m.Tick(now=now))
                except pykka.ActorDeadError:
                    pass

    def waiting_for(self, timeout: float = 5.0) -> str | None:
        """None once the service is ready to trade (connected, and in live mode reconciled with
        the broker: OrderActor has matched SQLite with the broker's orders and positions), else
        what it is waiting for, in a few words (systemd's STATUS=)."""
        refs = getattr(self, "refs", None)
        if not refs:
            return "starting the actors"
        try:
            state = refs["connection"].proxy().model.get(timeout=timeout).state
            if state not in ("connected", "degraded"):
                return f"the broker connection is {state}"
            if not refs["orders"].proxy().reconciled.get(timeout=timeout):
                return "reconciling orders and positions with the broker"
        except (pykka.Timeout, pykka.ActorDeadError):
            return "an actor did not answer"
        return None

    def _backup_loop(self) -> None:
        """The nightly backup, on this machine's wall clock (not the simulated one): it is about
        the file on this disk. A failed backup is logged and tried again the next night; it
        never stops the trading."""
        from storage.backup import backup

        st = self.settings.storage
        while True:
            now = datetime.now().astimezone()
            wait = (self.backup_schedule(now, st.backup_at) - now).total_seconds()
            if self._stop_ticker.wait(wait):
                return
            try:
                path = backup(st.path, st.backup_dir, st.backup_keep)
                log.info("nightly backup written: %s (keeping %d)", path, st.backup_keep)
            except Exception as exc:  # noqa: BLE001 - one line; the next night tries again
                log.error("nightly backup to %s failed: %s", st.backup_dir, describe(exc, st.path))

    def _fail(self, why: str) -> None:
        # Conservative: a dead actor stops the whole service; a restart resumes from SQLite.
        self.failure = why
        log.error("%s: stopping the service safely", why)
        self.failed.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until an actor fails (True) or the timeout passes (False)."""
        return self.failed.wait(timeout)

    # -- stop -----------------------------------------------------------------------------------
    def _drain(self, timeout: float = 5.0) -> None:
        """No new entries, then a few seconds for sent orders to be acknowledged, so a clean stop
        leaves nothing pending_submit behind (a crash still does, and reconciliation settles it)."""
        refs = getattr(self, "refs", {})
        for name in ("risk", "orders"):
            if name in refs:
                try:
                    refs[name].tell(m.Shutdown())
                except pykka.ActorDeadError:
                    pass
        orders = refs.get("orders")
        if orders is None:  # nothing was started that could have sent an order
            return
        deadline = time.monotonic() + timeout
        while orders is not None and time.monotonic() < deadline:
            try:
                if orders.proxy().in_flight().get(timeout=1) == 0:
                    return
            except (pykka.ActorDeadError, pykka.Timeout):
                return
            time.sleep(0.1)
        log.warning(
            "stopping with orders still awaiting the broker's acknowledgement; the next start reconciles them"
        )

    def stop(self, timeout: float = 10.0) -> None:
        self._drain()
        self._stop_ticker.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(timeout)
        if self._backuper is not None:
            self._backuper.join(timeout)
        for name, ref in reversed(self.actors):
            try:
                ref.stop(timeout=timeout)
            except pykka.Timeout:
                log.error("actor %s did not stop within %.0fs", name, timeout)
            except pykka.ActorDeadError:
                pass
        self.actors.clear()
        leftovers = pykka.ActorRegistry.get_all()
        if leftovers:
            log.error("actors left running at stop (a bug): %s", leftovers)
            pykka.ActorRegistry.stop_all(timeout=timeout)
        if self.sim is not None:
            self.sim.stop()
            self.sim = None
        if self.exporter is not None:
            self.exporter.shutdown()
            self.exporter.server_close()
            self.exporter = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        log.info("optionsbot stopped")

    def run_for(self, sim_span: timedelta, real_timeout: float) -> None:
        """Let simulated time pass (tests and benchmarks); returns early if an actor failed."""
        end = self.clock.now() + sim_span
        deadline = time.monotonic() + real_timeout
        while self.clock.now() < end and time.monotonic() < deadline:
            if self.failed.wait(0.1):
                return


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("optionsbot")
    except Exception:  # noqa: BLE001 - an uninstalled checkout still runs
        return "0+unknown"

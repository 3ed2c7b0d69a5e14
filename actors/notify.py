"""systemd's notify protocol: READY=1 once reconciled, WATCHDOG=1 only while every actor answers.

Under a `Type=notify` unit with `WatchdogSec=`, systemd passes NOTIFY_SOCKET and WATCHDOG_USEC
and restarts the service when the heartbeats stop. A heartbeat that a timer thread sent on its
own would prove only that the timer runs; here each one follows a round in which every actor
answered a Ping within the timeout, so one deadlocked actor (a blocked ask, a call that never
returns) stops the heartbeats and systemd restarts the service, which resumes from SQLite.

Before READY=1 the heartbeats carry EXTEND_TIMEOUT_USEC instead (sd_notify(3), systemd >= 236):
a Gateway that is down at boot keeps the unit "activating" with a STATUS saying why, for as
long as it takes, while a hung start-up still runs out of time. Outside systemd (no
NOTIFY_SOCKET) nothing is sent and nothing runs.

The protocol is sent by the `sdnotify` package (pure Python: one datagram per message to the
socket, the abstract namespace included), not by code of our own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pykka

from actors.base import Ping

log = logging.getLogger("optionsbot.notify")

# Without WatchdogSec= the readiness is still polled this often.
DEFAULT_INTERVAL_S = 5.0
# An actor has this long to answer a Ping (capped by the heartbeat interval).
PING_TIMEOUT_S = 5.0


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of WATCHDOG_USEC in seconds (sd_watchdog_enabled(3)'s advice), or None when systemd
    asked for no watchdog or asked it of another process (WATCHDOG_PID)."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2e6


def unanswered(refs: Iterable[tuple[str, Any]], timeout: float) -> list[str]:
    """The names of the actors that did not answer a Ping within `timeout` seconds, all asked
    at once so one slow actor does not eat the others' time."""
    asked = []
    for name, ref in refs:
        try:
            asked.append((name, ref.ask(Ping(), block=False)))
        except pykka.ActorDeadError:
            asked.append((name, None))
    deadline = time.monotonic() + timeout
    silent = []
    for name, future in asked:
        if future is None:
            silent.append(name)
            continue
        try:
            future.get(timeout=max(0.0, deadline - time.monotonic()))
        except (pykka.Timeout, pykka.ActorDeadError):
            silent.append(name)
    return silent


class Heartbeat:
    """Tells systemd how the service is doing, from a thread of its own."""

    def __init__(
        self,
        actors: Callable[[], list[tuple[str, Any]]],
        ready: Callable[[], str | None],
        environ: Mapping[str, str] | None = None,
        send: Callable[[str], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ):
        """`actors`: the (name, ref) pairs to ping; `ready`: None once the service is ready,
        else what it waits for (said in STATUS=); `send`: the notifier (sdnotify by default)."""
        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self.watchdog = watchdog_interval(env)
        self.interval = self.watchdog or DEFAULT_INTERVAL_S
        self.actors = actors
        self.ready_check = ready
        self.on_ready = on_ready
        self.is_ready = False
        self.silent: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if send is None and self.enabled:
            from sdnotify import SystemdNotifier

            send = SystemdNotifier().notify
        self.send = send or (lambda _text: None)

    def start(self) -> Heartbeat:
        if not self.enabled:
            return self
        log.info(
            "systemd notify: %s",
            f"watchdog every {self.interval:g}s" if self.watchdog else "no watchdog asked for",
        )
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def beat(self) -> bool:
        """One round: ping every actor, then READY=1 / WATCHDOG=1 / nothing. True if all answered."""
        silent = unanswered(self.actors(), min(PING_TIMEOUT_S, self.interval))
        if silent:
            if silent != self.silent:
                log.error(
                    "%s did not answer within %gs: no watchdog heartbeat, so systemd restarts the"
                    " service",
                    ", ".join(silent),
                    min(PING_TIMEOUT_S, self.interval),
                )
                self.send(f"STATUS=not answering: {', '.join(silent)}")
            self.silent = silent
            return False
        self.silent = []
        if not self.is_ready:
            waiting = self.ready_check()
            if waiting is None:
                self.is_ready = True
                self.send("READY=1\nSTATUS=running: reconciled with the broker")
                log.info("systemd notified: ready")
                if self.on_ready is not None:
                    self.on_ready()
            else:
                # Two intervals: the next heartbeat extends it again before it runs out.
                usec = int(self.interval * 2 * 1e6)
                self.send(f"EXTEND_TIMEOUT_USEC={usec}\nSTATUS=starting: {waiting}")
        if self.watchdog:
            self.send("WATCHDOG=1")
        return True

    def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a failed round sends nothing; systemd decides
                log.exception("heartbeat round failed")
            if self._stop.wait(max(0.0, self.interval - (time.monotonic() - started))):
                return

    def stop(self) -> None:
        """STOPPING=1 first, so a slow clean stop is not taken for a hang."""
        if not self.enabled:
            return
        self.send("STOPPING=1\nSTATUS=stopping")
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(PING_TIMEOUT_S + 1)

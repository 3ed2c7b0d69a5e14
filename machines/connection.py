"""The connection state machine: connected, degraded, breaker-open and half-open, as a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from transitions import EventData, Machine

from machines.base import Row, build


class ConnState(StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DEGRADED = "degraded"
    BREAKER_OPEN = "breaker_open"
    HALF_OPEN = "half_open"


S = ConnState
LIVE = [S.CONNECTED, S.DEGRADED]
ALL = list(S)

# (trigger, sources, dest, conditions). For a trigger with several rows the first row
# whose conditions hold wins, so the guarded row always comes first.
TABLE: list[Row] = [
    ("connect", S.DISCONNECTED, S.CONNECTING),
    ("connect_ok", S.CONNECTING, S.CONNECTED),
    ("connect_failed", S.CONNECTING, S.BREAKER_OPEN, "breaker_due"),
    ("connect_failed", S.CONNECTING, S.DISCONNECTED),
    # A degradation cause (1100, a broken farm, stale data, timeouts) is remembered until
    # the matching recovery; the state returns to connected only when none is left.
    ("degrade", LIVE, S.DEGRADED),
    ("recover", S.DEGRADED, S.CONNECTED, "healthy"),
    ("recover", S.DEGRADED, S.DEGRADED),
    # Farm-OK messages arrive at every connect: recovering while healthy is normal.
    ("recover", S.CONNECTED, S.CONNECTED),
    ("request_failed", LIVE, S.BREAKER_OPEN, "breaker_due"),
    ("request_failed", LIVE, S.DEGRADED),
    ("request_ok", S.CONNECTED, S.CONNECTED),
    ("request_ok", S.DEGRADED, S.CONNECTED, "healthy"),
    ("request_ok", S.DEGRADED, S.DEGRADED),
    ("cooldown_elapsed", S.BREAKER_OPEN, S.HALF_OPEN),
    ("probe_ok", S.HALF_OPEN, S.CONNECTED),
    ("probe_failed", S.HALF_OPEN, S.BREAKER_OPEN),
    ("connection_lost", [S.CONNECTED, S.DEGRADED, S.HALF_OPEN], S.DISCONNECTED),
    # While the breaker is open nothing is sent; a lost socket does not shorten the cooldown.
    ("connection_lost", S.BREAKER_OPEN, S.BREAKER_OPEN),
    ("stop", ALL, S.DISCONNECTED),
]

TIMEOUT_CAUSE = "request_timeouts"


@dataclass
class ConnectionModel:
    """What the connection machine knows; its callbacks only change this and queue intents.

    Intents are plain strings the owning actor drains after each trigger and turns into
    I/O: "reconnect" (after backoff), "cooldown" (breaker timer), "probe" (one request or
    connect attempt), "resync" (resubscribe, reconcile, re-read the account).
    """

    failure_threshold: int = 3
    failures: int = 0
    # The Gateway routine under way (its nightly reset, daily restart, weekly re-login), or "":
    # a failure inside one is expected and does not count toward the breaker.
    expected: str = ""
    trips: int = 0
    causes: set[str] = field(default_factory=set)
    last_cause: str = ""
    intents: list[str] = field(default_factory=list)
    state: str = ConnState.DISCONNECTED.value

    # -- conditions -------------------------------------------------------------
    def breaker_due(self, event: EventData) -> bool:
        return self.failures >= self.failure_threshold

    def healthy(self, event: EventData) -> bool:
        return not self.causes

    # -- callbacks ----------------------------------------------------------------
    def prepare_event(self, event: EventData) -> None:
        """Count before the conditions are read, once per event (not once per row)."""
        name = event.event.name
        cause = str(event.kwargs.get("cause", "")) or name
        self.last_cause = cause
        if name in ("connect_failed", "request_failed", "probe_failed"):
            if not self.expected:
                self.failures += 1
            if name == "request_failed":
                self.causes.add(TIMEOUT_CAUSE)
        elif name in ("connect_ok", "probe_ok"):
            self.failures = 0
            self.causes.clear()
        elif name == "request_ok":
            self.failures = 0
            self.causes.discard(TIMEOUT_CAUSE)
        elif name == "degrade":
            self.causes.add(cause)
        elif name == "recover":
            self.causes.discard(cause)
        elif name in ("connection_lost", "stop"):
            self.causes.clear()

    def on_enter_breaker_open(self, event: EventData) -> None:
        self.trips += 1
        self.intents.append("cooldown")

    def on_enter_half_open(self, event: EventData) -> None:
        self.intents.append("probe")

    def on_enter_disconnected(self, event: EventData) -> None:
        if event.event.name != "stop":
            self.intents.append("reconnect")

    def on_enter_connected(self, event: EventData) -> None:
        if event.event.name in ("connect_ok", "probe_ok"):
            self.intents.append("resync")

    # -- queries --------------------------------------------------------------------
    @property
    def conn_state(self) -> ConnState:
        return ConnState(self.state)

    @property
    def may_trade(self) -> bool:
        """New entries only on a healthy connection: never degraded, breaker or half-open."""
        return self.conn_state is ConnState.CONNECTED

    @property
    def may_send(self) -> bool:
        return self.conn_state in (ConnState.CONNECTED, ConnState.DEGRADED)

    def drain_intents(self) -> list[str]:
        out, self.intents = self.intents, []
        return out


def connection_machine(
    model: ConnectionModel,
    initial: ConnState = ConnState.DISCONNECTED,
    **kwargs: Any,
) -> Machine:
    return build(
        model,
        ConnState,
        TABLE,
        initial,
        name="connection",
        prepare_event="prepare_event",
        **kwargs,
    )

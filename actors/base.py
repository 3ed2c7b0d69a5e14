"""The base all actors share: dispatch by message type, a ping barrier, and failure accounting."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pykka

from actors import messages as m


@dataclass(frozen=True, slots=True)
class Ping(m.Msg):
    """Answered by every actor once it has started: the start-up barrier."""


def tell(ref: Any, msg: m.Msg) -> None:
    """Tell an actor that may have stopped meanwhile (a reply, a timer, an event from a loop)."""
    try:
        ref.tell(msg)
    except pykka.ActorDeadError:
        pass


class BaseActor(pykka.ThreadingActor):
    """Routes a message `Foo` (or `_Foo`) to `on_Foo`; an unknown message is logged, not fatal."""

    name = "actor"
    log = logging.getLogger("optionsbot")

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Ping):
            return "pong"
        handler = getattr(self, f"on_{type(message).__name__.lstrip('_')}", None)
        if handler is None:
            self.log.warning("%s: unexpected message %r", self.name, type(message).__name__)
            return None
        return handler(message)

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.actor_restarts.labels(self.name).inc()
        self.log.error(
            "%s failed: %s: %s",
            self.name,
            getattr(exception_type, "__name__", exception_type),
            exception_value,
            exc_info=(exception_type, exception_value, traceback),
        )

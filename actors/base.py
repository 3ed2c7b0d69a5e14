"""The base all actors share: dispatch by message type, a ping barrier, and failure accounting."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

import pykka

from actors import messages as m
from actors.failures import FAILURES, describe


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Pykka logs an on_start exception with a traceback and answers the waiting ask only
        # with "stopped before handling the message"; keep the cause so start-up can name it.
        super().__init_subclass__(**kwargs)
        start = cls.__dict__.get("on_start")
        if start is None or getattr(start, "_records_failure", False):
            return

        @functools.wraps(start)
        def on_start(self: BaseActor) -> None:
            try:
                start(self)
            except Exception as exc:
                FAILURES[self.actor_urn] = exc
                self.log.error(
                    "%s could not start: %s", self.name, describe(exc, _db(self)), exc_info=True
                )
                raise

        on_start._records_failure = True  # type: ignore[attr-defined]
        cls.on_start = on_start  # type: ignore[method-assign]

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Ping):
            return "pong"
        if isinstance(message, m.DebugHang):
            return self._debug_hang(message)
        handler = getattr(self, f"on_{type(message).__name__.lstrip('_')}", None)
        if handler is None:
            self.log.warning("%s: unexpected message %r", self.name, type(message).__name__)
            return None
        return handler(message)

    def _debug_hang(self, msg: m.DebugHang) -> None:
        # Only where no money is at stake: a hung actor against a Gateway could leave an order
        # half-handled. The CLI refuses the variable outside embedded mode too.
        mode = getattr(getattr(getattr(self, "settings", None), "broker", None), "mode", None)
        if mode != "embedded":
            self.log.error("%s: DebugHang refused: only on the embedded simulator", self.name)
            return
        self.log.warning("%s: hanging for %.0fs (test hook)", self.name, msg.seconds)
        time.sleep(msg.seconds)

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.actor_restarts.labels(self.name).inc()
        if exception_value is not None:
            FAILURES[self.actor_urn] = exception_value
        self.log.error(
            "%s failed: %s",
            self.name,
            describe(exception_value, _db(self)) if exception_value is not None else exception_type,
            exc_info=(exception_type, exception_value, traceback),
        )


def _db(actor: Any) -> Any:
    storage = getattr(getattr(actor, "settings", None), "storage", None)
    return getattr(storage, "path", None)

"""The deterministic scheduler: the service's own actor classes, run on one thread from one queue.

Live, each Pykka actor has a thread, and when two strategies signal on the same minute the
order their ideas reach RiskActor is a race. A backtest must make one choice and make it every
time, so here every `tell` lands in one FIFO queue and the driver handles the messages one by
one, in the order they were sent. The actors are constructed, started and fed exactly as Pykka
does it (`on_start`, `_handle_receive`, `on_failure`, `on_stop`); only the threads are gone.
Time moves when the queue is empty: the driver's quiescence is `run()` returning.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import Any

from pykka import ActorRef

from actors.failures import describe


class PumpFailure(Exception):
    """An actor raised while handling a message: live, the service would stop; so does the run."""


class _Inbox:
    """Stands in for an actor's queue.Queue: a put goes to the pump's one queue."""

    def __init__(self, pump: Pump, actor: Any) -> None:
        self.pump = pump
        self.actor = actor

    def put(self, envelope: Any, block: bool = True, timeout: float | None = None) -> None:
        self.pump.queue.append((self.actor, envelope))

    def empty(self) -> bool:
        return not any(a is self.actor for a, _ in self.pump.queue)

    def qsize(self) -> int:
        return sum(1 for a, _ in self.pump.queue if a is self.actor)


class Pump:
    def __init__(self) -> None:
        self.queue: deque[tuple[Any, Any]] = deque()
        self.actors: list[Any] = []
        self.objects: dict[str, Any] = {}  # actor urn -> the actor itself (the driver's view)
        self.handled = 0

    def spawn(self, cls: type, *args: Any, **kwargs: Any) -> ActorRef:
        """Construct and start an actor as `cls.start()` would, minus its thread."""
        actor = cls(*args, **kwargs)
        actor.actor_inbox = _Inbox(self, actor)
        actor._actor_ref = ActorRef(actor)  # the ref reads the inbox once, at construction
        self.actors.append(actor)
        self.objects[actor.actor_urn] = actor
        try:
            actor.on_start()
        except Exception as exc:
            actor.actor_stopped.set()
            name = getattr(actor, "name", cls.__name__)
            raise PumpFailure(f"{name} could not start: {describe(exc)}") from exc
        return actor.actor_ref

    def actor(self, ref: ActorRef) -> Any:
        return self.objects[ref.actor_urn]

    def run(self) -> int:
        """Handle messages until none is left (the actors are idle); returns how many."""
        done = 0
        queue = self.queue
        while queue:
            actor, envelope = queue.popleft()
            if actor.actor_stopped.is_set():
                continue
            try:
                result = actor._handle_receive(envelope.message)
            except Exception as exc:
                info = sys.exc_info()
                actor.on_failure(*info)
                actor.actor_stopped.set()
                if envelope.reply_to is not None:
                    envelope.reply_to.set_exception(info)
                raise PumpFailure(
                    f"{getattr(actor, 'name', type(actor).__name__)} failed on "
                    f"{type(envelope.message).__name__}: {describe(exc)}"
                ) from exc
            if envelope.reply_to is not None:
                envelope.reply_to.set(result)
            done += 1
        self.handled += done
        return done

    def stop(self) -> None:
        """Stop the actors in reverse order of their start, as the service does."""
        for actor in reversed(self.actors):
            if actor.actor_stopped.is_set():
                continue
            actor.actor_stopped.set()
            actor.on_stop()
        self.actors.clear()
        self.queue.clear()

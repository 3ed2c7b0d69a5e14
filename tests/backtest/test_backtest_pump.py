"""The deterministic scheduler (backtest/pump.py): one FIFO queue, a failure stops the run."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from actors import messages as m
from actors.base import BaseActor
from backtest.pump import Pump, PumpFailure


@dataclass(frozen=True, slots=True)
class Hello(m.Msg):
    text: str


class Echo(BaseActor):
    """Tells each Hello on to `to`, and logs what it saw in `seen`."""

    name = "echo"

    def __init__(self, seen: list, to=None, fail_on: str = ""):
        super().__init__()
        self.seen, self.to, self.fail_on = seen, to, fail_on
        self.started = self.stopped = False

    def on_start(self) -> None:
        self.started = True

    def on_stop(self) -> None:
        self.stopped = True

    def on_Hello(self, msg: Hello) -> None:
        if msg.text == self.fail_on:
            raise RuntimeError(f"cannot take {msg.text}")
        self.seen.append((self.name, msg.text))
        if self.to is not None:
            self.to.tell(Hello(text=msg.text + "'"))


def test_messages_are_handled_in_the_order_they_were_sent_across_actors():
    pump, seen = Pump(), []
    c = pump.spawn(Echo, seen)
    b = pump.spawn(Echo, seen, to=c)
    a = pump.spawn(Echo, seen, to=b)
    for ref, name in ((a, "a"), (b, "b"), (c, "c")):
        pump.actor(ref).name = name
    a.tell(Hello(text="1"))
    b.tell(Hello(text="2"))
    a.tell(Hello(text="3"))
    assert pump.run() == 3 + 3 + 2  # every hop, in one call: run() returns when all are idle
    assert seen == [
        ("a", "1"), ("b", "2"), ("a", "3"),      # what the driver sent, in its order
        ("b", "1'"), ("c", "2'"), ("b", "3'"),   # then what those sent, in theirs
        ("c", "1''"), ("c", "3''"),
    ]  # fmt: skip
    assert all(pump.actor(r).started for r in (a, b, c))
    pump.stop()
    assert all(pump.actor(r).stopped for r in (a, b, c))


def test_an_actor_that_raises_stops_the_run_with_its_name_and_the_cause():
    pump, seen = Pump(), []
    ref = pump.spawn(Echo, seen, fail_on="boom")
    ref.tell(Hello(text="boom"))
    with pytest.raises(PumpFailure, match="echo failed on Hello: .*cannot take boom"):
        pump.run()
    assert not ref.is_alive()

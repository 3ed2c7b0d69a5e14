"""The heartbeat's rules, with real Pykka actors and a recording notifier (the protocol on a real
socket with the real service is in tests/e2e/test_systemd.py)."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.base import BaseActor, Ping
from actors.notify import Heartbeat, unanswered, watchdog_interval


class Quiet(BaseActor):
    name = "quiet"

    def __init__(self, gate: threading.Event | None = None):
        super().__init__()
        self.gate = gate

    def on_Block(self, msg) -> None:  # a handler that never returns until the test says so
        self.gate.wait(30)


class Block:
    pass


@pytest.fixture
def actors():
    gate = threading.Event()
    refs = [("a", Quiet.start(gate)), ("b", Quiet.start(gate))]
    yield refs, gate
    gate.set()
    for _, ref in refs:
        ref.stop()


def beat_with(refs, waiting=None):
    sent: list[str] = []
    hb = Heartbeat(
        lambda: refs,
        lambda: waiting,
        environ={"NOTIFY_SOCKET": "/dev/null", "WATCHDOG_USEC": "400000"},
        send=sent.append,
    )
    return hb, sent


def test_ready_once_then_a_watchdog_each_round(actors):
    refs, _ = actors
    hb, sent = beat_with(refs)
    assert hb.beat() and hb.beat()
    assert sent[0].startswith("READY=1") and sent[1] == "WATCHDOG=1" and sent[2] == "WATCHDOG=1"
    assert sum(m.startswith("READY") for m in sent) == 1


def test_not_ready_extends_the_start_timeout_and_says_why(actors):
    refs, _ = actors
    hb, sent = beat_with(refs, waiting="the broker connection is connecting")
    assert hb.beat()
    assert sent[0].startswith("EXTEND_TIMEOUT_USEC=400000\n")
    assert "STATUS=starting: the broker connection is connecting" in sent[0]
    assert not any(m.startswith("READY") for m in sent)


def test_a_blocked_actor_stops_the_heartbeat_and_is_named(actors):
    refs, gate = actors
    hb, sent = beat_with(refs)
    hb.beat()
    sent.clear()
    refs[1][1].tell(Block())
    assert not hb.beat()
    assert "WATCHDOG=1" not in sent and "EXTEND" not in "".join(sent)
    assert sent == ["STATUS=not answering: b"]
    assert not hb.beat() and sent == ["STATUS=not answering: b"]  # said once per incident
    gate.set()
    assert hb.beat() and sent[-1] == "WATCHDOG=1"


def test_a_dead_actor_counts_as_silent(actors):
    refs, _ = actors
    refs[0][1].stop()
    assert unanswered(refs, 0.5) == ["a"]


def test_nothing_runs_outside_systemd():
    hb = Heartbeat(lambda: [], lambda: None, environ={})
    assert not hb.enabled
    hb.start()
    assert hb._thread is None
    hb.stop()


@given(st.integers(min_value=1, max_value=10**12))
def test_watchdog_interval_is_half_of_watchdog_usec(usec):
    assert watchdog_interval({"WATCHDOG_USEC": str(usec)}) == usec / 2e6


@pytest.mark.parametrize(
    "env",
    [{}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "x"}, {"WATCHDOG_USEC": "-5"}],
)
def test_no_watchdog_asked(env):
    assert watchdog_interval(env) is None


def test_a_watchdog_asked_of_another_process_is_not_ours():
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}) is None


def test_debug_hang_is_refused_outside_the_embedded_simulator(make_settings):
    from actors import messages as m

    class WithSettings(BaseActor):
        def __init__(self, settings):
            super().__init__()
            self.settings = settings

    ref = WithSettings.start(make_settings(broker={"mode": "gateway"}))
    try:
        ref.tell(m.DebugHang(seconds=30))
        assert ref.ask(Ping(), timeout=5) == "pong"
    finally:
        ref.stop()

"""Every (state, trigger) pair of the connection machine, plus the breaker's arithmetic."""

import pytest
from transitions import MachineError

from machines.base import allowed_pairs, destinations, triggers
from machines.connection import TABLE, ConnectionModel, ConnState, connection_machine

PAIRS = allowed_pairs(TABLE)
S = ConnState


def at(state: ConnState, **kw) -> ConnectionModel:
    model = ConnectionModel(**kw)
    connection_machine(model, state)
    return model


@pytest.mark.parametrize("state", list(S), ids=lambda s: s.value)
@pytest.mark.parametrize("trigger", triggers(TABLE))
def test_every_pair_is_allowed_or_raises(state, trigger):
    model = at(state)
    if (state.value, trigger) in PAIRS:
        getattr(model, trigger)()
        assert model.state in destinations(TABLE, state.value, trigger)
    else:
        with pytest.raises(MachineError):
            getattr(model, trigger)()
        assert model.state == state.value


def test_no_auto_transitions():
    model = at(S.CONNECTED)
    assert not hasattr(model, "to_breaker_open")


def test_connect_failures_open_the_breaker_at_the_threshold():
    model = at(S.DISCONNECTED, failure_threshold=3)
    for expected in (S.DISCONNECTED, S.DISCONNECTED, S.BREAKER_OPEN):
        model.connect()
        model.connect_failed(cause="502")
        assert model.state == expected.value
    assert model.trips == 1
    assert model.drain_intents() == ["reconnect", "reconnect", "cooldown"]


@pytest.mark.parametrize("failures", [3, 10, 50])
def test_a_gateway_routine_never_trips_the_breaker_and_the_count_resumes_after(failures):
    """The nightly reset or the weekly re-login refuse connections for minutes or hours: that
    is expected, so the breaker stays shut and reconnects go on; outside it, failures count."""
    model = at(S.DISCONNECTED, failure_threshold=3, expected="weekly_reauth")
    for _ in range(failures):
        model.connect()
        model.connect_failed(cause="refused")
        assert model.state == S.DISCONNECTED.value
    assert model.trips == 0 and model.failures == 0
    model.connect()
    model.connect_ok()
    model.request_failed(cause="historical timeout")  # degraded, not counted
    assert model.state == S.DEGRADED.value and model.failures == 0
    model.expected = ""
    for _ in range(2):
        model.request_failed(cause="historical timeout")
    assert model.state == S.DEGRADED.value
    model.request_failed(cause="historical timeout")
    assert model.state == S.BREAKER_OPEN.value and model.trips == 1


def test_half_open_probe_decides():
    model = at(S.BREAKER_OPEN, failures=3)
    model.cooldown_elapsed()
    assert model.drain_intents() == ["probe"]
    model.probe_failed(cause="timeout")
    assert model.state == S.BREAKER_OPEN.value and model.trips == 1
    model.cooldown_elapsed()
    model.probe_ok()
    assert model.state == S.CONNECTED.value
    assert model.failures == 0
    assert model.drain_intents() == ["cooldown", "probe", "resync"]


def test_request_timeouts_degrade_then_trip():
    model = at(S.CONNECTED, failure_threshold=3)
    model.request_failed(cause="historical timeout")
    assert model.state == S.DEGRADED.value and not model.may_trade
    model.request_failed(cause="historical timeout")
    assert model.state == S.DEGRADED.value
    model.request_failed(cause="historical timeout")
    assert model.state == S.BREAKER_OPEN.value and not model.may_send


def test_success_resets_the_count_and_heals_timeouts():
    model = at(S.CONNECTED, failure_threshold=3)
    model.request_failed()
    model.request_failed()
    model.request_ok()
    assert model.state == S.CONNECTED.value and model.failures == 0
    model.request_failed()
    assert model.state == S.DEGRADED.value


def test_degraded_until_every_cause_recovers():
    model = at(S.CONNECTED)
    model.degrade(cause="1100")
    model.degrade(cause="2103")
    model.recover(cause="2103")
    assert model.state == S.DEGRADED.value
    model.recover(cause="1100")
    assert model.state == S.CONNECTED.value and model.may_trade


def test_a_request_success_does_not_hide_a_farm_outage():
    model = at(S.CONNECTED)
    model.degrade(cause="2105")
    model.request_ok()
    assert model.state == S.DEGRADED.value


def test_restore_fires_no_callbacks():
    model = at(S.BREAKER_OPEN)
    assert model.drain_intents() == [] and model.trips == 0


def test_stop_does_not_ask_for_a_reconnect():
    model = at(S.CONNECTED)
    model.stop()
    assert model.drain_intents() == []
    model2 = at(S.CONNECTED)
    model2.connection_lost(cause="socket closed")
    assert model2.drain_intents() == ["reconnect"]

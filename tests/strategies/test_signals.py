"""Signal: HOLD semantics, validation, journal view."""

from datetime import UTC, datetime

import pytest

from strategies.signals import Direction, Signal

T = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def test_hold_and_direction():
    hold = Signal("scalp", "SPY", None, 0.0, ("warming up: 1/30 bars",), T, 500.0)
    call = Signal("whale", "SPY", Direction.CALL, 0.7, ("x",), T, 500.0)
    assert hold.is_hold and not call.is_hold
    assert Direction.CALL == "call" and Direction("put") is Direction.PUT


@pytest.mark.parametrize(
    ("kind", "confidence"), [("swing", 0.5), ("scalp", 1.5), ("scalp", float("nan"))]
)
def test_validation(kind, confidence):
    with pytest.raises(ValueError):
        Signal(kind, "SPY", None, confidence, (), T, 1.0)


def test_to_dict():
    d = Signal("scalp", "SPY", Direction.PUT, 0.25, ("a", "b"), T, float("nan")).to_dict()
    assert d == {
        "kind": "scalp",
        "symbol": "SPY",
        "direction": "put",
        "confidence": 0.25,
        "reasons": ["a", "b"],
        "bar_time": "2024-03-01T14:30:00+00:00",
        "price": None,
    }

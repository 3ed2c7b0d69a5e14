"""Review of the quote recorder's wiring (actors/system.py): the module promises that "a
recorder that fails loses quotes, never a trade", but the tick loop stops the whole service
when any started actor is not alive, the recorder included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from actors.metrics import Metrics, new_registry
from actors.system import System

START = datetime(2026, 11, 18, 14, 30, tzinfo=UTC)


def test_a_stopped_recorder_does_not_stop_the_trading(make_settings):
    live = make_settings(
        symbols=["SPY"],
        sim={"seed": 5, "time_scale": 60, "start": START.isoformat()},
        data={"record_quotes": True},
    )
    system = System(live, metrics=Metrics(new_registry()), serve_metrics=False)
    system.start()
    try:
        # Whatever ends it (a bug on an odd quote, an error that is not sqlite3's): recording
        # is over, and the tee already swallows the dead actor's error.
        system.refs["quotes"].stop()
        system.run_for(timedelta(minutes=3), real_timeout=30)
        assert not system.failed.is_set(), system.failure
    finally:
        system.stop()

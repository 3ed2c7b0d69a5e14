"""The round trip: the service records the option quotes it receives (data.record_quotes) while
it trades the simulator, and a backtest over its database prices options from them.

Live, a watched position's line brings a quote every few simulated seconds; the backtest asks
once a minute and takes the newest recorded quote known by then if it is at most
options.max_quote_age_s old. Both runs start at the open over the same bars, so they choose
the same first contracts (tests/backtest/test_backtest_vs_live.py), and while both hold one,
the backtest's quotes for it come from the recording."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from actors.metrics import Metrics, new_registry
from actors.system import System
from backtest import cli
from storage.repos import recorded_option_quotes

START = datetime(2026, 11, 18, 14, 30, tzinfo=UTC)  # a Wednesday's open
SYMBOLS = ("SPY", "QQQ")


def test_a_backtest_over_a_recording_service_database_uses_its_quotes(make_settings, tmp_path):
    live = make_settings(
        symbols=list(SYMBOLS),
        sim={"seed": 5, "time_scale": 60, "start": START.isoformat()},
        data={"record_bars": True, "record_quotes": True},
        orders={"entry_timeout_s": 900},
    )
    config = tmp_path / "settings.yaml"  # make_settings' file, as the user would pass it
    system = System(live, metrics=Metrics(new_registry()), serve_metrics=False)
    system.start()
    try:
        system.run_for(timedelta(minutes=30), real_timeout=150)
        assert not system.failed.is_set(), system.failure
        stopped = system.clock.now()
    finally:
        system.stop()

    rows = recorded_option_quotes(live.storage.path)
    assert len(rows) > 50, len(rows)
    for r in rows:
        received = datetime.fromisoformat(r.received_at)
        assert START <= received <= stopped + timedelta(seconds=5), r
        assert datetime.fromisoformat(r.quote_time) <= received, r
        assert r.symbol in SYMBOLS and r.right in ("C", "P") and len(r.expiry) == 8, r
        assert r.con_id and r.local_symbol and 0 < r.bid <= r.ask, r

    day = START.date().isoformat()
    argv = ["--config", str(config), "--from", day, "--to", day, "--bars", str(live.storage.path)]
    assert cli.main([*argv, "--out", str(tmp_path / "bt"), "--quiet"]) == 0
    report = json.loads((tmp_path / "bt" / "report.json").read_text())
    counts = report["option_quotes"]
    assert counts["recorded"] > 0, counts
    assert "options from recorded quotes (bot.sqlite)" in report["market"]

    # The same database with its quotes turned off: every option from the model.
    assert cli.main([*argv, "--no-recorded-quotes", "--out", str(tmp_path / "m"), "--quiet"]) == 0
    off = json.loads((tmp_path / "m" / "report.json").read_text())
    assert off["option_quotes"]["recorded"] == 0 and off["option_quotes"]["model"] > 0
    assert "by the simulator's model" in off["market"] and "recorded quotes" not in off["market"]

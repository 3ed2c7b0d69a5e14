"""The backtest end to end: the service's actors over a replayed market, deterministic, and
blind to the future."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest

from actors.hours import MarketHours
from backtest.bars import load
from backtest.engine import run
from backtest.market import BarsMarket, SimMarket
from storage import open_db

DAY1, DAY2 = date(2026, 11, 17), date(2026, 11, 18)
SYMBOLS = ("SPY", "QQQ")


@pytest.fixture
def settings(make_settings):
    return make_settings(symbols=list(SYMBOLS), sim={"seed": 7})


def test_the_same_inputs_give_byte_identical_trades(settings, tmp_path):
    a = run(settings, SimMarket(7, SYMBOLS), DAY1, DAY1, tmp_path / "a")
    run(settings, SimMarket(7, SYMBOLS), DAY1, DAY1, tmp_path / "b")
    first = (tmp_path / "a" / "trades.csv").read_bytes()
    assert a.report["trades"] > 5, a.report  # a test of nothing would pass too
    assert first == (tmp_path / "b" / "trades.csv").read_bytes()
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    for key in (
        "trades", "wins", "losses", "net_pnl", "commissions", "max_drawdown", "sharpe",
        "by_symbol", "by_rule", "signals", "skips_by_reason", "bars_processed", "seconds",
    ):  # fmt: skip
        assert key in report, key
    assert report["bars_processed"] == 390 * len(SYMBOLS)
    assert report["trades"] == report["wins"] + report["losses"] == len(first.splitlines()) - 1
    # Another seed is another market: the file is not the same whatever the input.
    c = run(settings, SimMarket(8, SYMBOLS), DAY1, DAY1, tmp_path / "c")
    assert c.csv != a.csv


def write_bars(path, market, start, end, until=None):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["symbol", "time", "open", "high", "low", "close", "volume"])
        for s in SYMBOLS:
            for b in market.minute_bars(s, start, end):
                if until is None or b.time < until:
                    w.writerow([s, b.time.isoformat(), b.open, b.high, b.low, b.close, b.volume])


def decisions(db_path, before):
    db = open_db(db_path)
    try:
        cut = before.isoformat()
        # A signal is decided when its bar closes: a minute, or an hour, after the stamped start.
        closes = {"scalp": timedelta(minutes=1), "whale": timedelta(hours=1)}
        signals = [
            (r["bar_time"], r["symbol"], r["strategy"], r["direction"], round(r["price"], 4))
            for r in db["signals"].rows_where(order_by="bar_time, symbol, strategy")
            if datetime.fromisoformat(r["bar_time"]) + closes[r["strategy"]] <= before
        ]
        orders = [
            (
                r["created_at"],
                r["symbol"],
                r["role"],
                r["local_symbol"],
                r["quantity"],
                r["limit_price"],
                r["aux_price"],
            )  # fmt: skip
            for r in db["orders"].rows_where(
                "created_at < ?", [cut], order_by="created_at, symbol, role"
            )
        ]
        fills = [
            (r["at"], r["symbol"], r["side"], r["quantity"], r["price"])
            for r in db["fills"].rows_where("at < ?", [cut], order_by="at, symbol, side")
        ]
    finally:
        db.close()
    return signals, orders, fills


def tables(db_path):
    """Every signal, order and fill, in the order they were written."""
    db = open_db(db_path)
    try:
        return (
            [
                (r["bar_time"], r["symbol"], r["strategy"], r["direction"], r["price"])
                for r in db["signals"].rows_where(order_by="id")
            ],
            [
                (
                    r["created_at"],
                    r["symbol"],
                    r["role"],
                    r["local_symbol"],
                    r["quantity"],
                    r["limit_price"],
                    r["aux_price"],
                    r["state"],
                )  # fmt: skip
                for r in db["orders"].rows_where(order_by="created_at, symbol, role")
            ],
            [
                (r["at"], r["symbol"], r["side"], r["quantity"], r["price"])
                for r in db["fills"].rows_where(order_by="at, symbol, side")
            ],
        )
    finally:
        db.close()


@pytest.mark.parametrize("cut", [datetime(2026, 11, 18, 17, 7, tzinfo=UTC)])
def test_no_lookahead_cutting_off_the_future_changes_no_past_decision(settings, tmp_path, cut):
    """Bars after T removed from the file: every signal, order and fill up to T is the same.

    Twice: stopped at T, the two runs must have written exactly the same rows (a bar or a
    price from after T, read even one step early, would add or change one); run on to the
    end, every decision before T is still the same."""
    hours = MarketHours(cache=tmp_path / "hours.json")
    sim = SimMarket(7, SYMBOLS)
    first = hours.session_at(datetime(2026, 11, 13, 15, 0, tzinfo=UTC)).open  # history before
    end = hours.sessions[[s.date for s in hours.sessions].index(DAY2)].close
    write_bars(tmp_path / "all.csv", sim, first, end)
    write_bars(tmp_path / "cut.csv", sim, first, end, until=cut)
    everything = BarsMarket(load(tmp_path / "all.csv").bars, hours)
    truncated = BarsMarket(load(tmp_path / "cut.csv").bars, hours)

    run(settings, everything, DAY1, DAY2, tmp_path / "a", until=cut)
    run(settings, truncated, DAY1, DAY2, tmp_path / "b", until=cut)
    signals, orders, fills = tables(tmp_path / "a" / "backtest.sqlite")
    assert len(signals) > 100 and len(orders) > 10 and len(fills) > 5, (len(signals), len(orders))
    assert tables(tmp_path / "b" / "backtest.sqlite") == (signals, orders, fills)

    full = run(settings, everything, DAY1, DAY2, tmp_path / "full")
    part = run(settings, truncated, DAY1, DAY2, tmp_path / "part")
    assert decisions(tmp_path / "part" / "backtest.sqlite", cut) == decisions(
        tmp_path / "full" / "backtest.sqlite", cut
    )
    assert full.report["bars_processed"] > part.report["bars_processed"]  # the cut was real


def test_cli_writes_the_report_and_a_bad_argument_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage: {{path: {tmp_path / 'live.sqlite'}}}\nsymbols: [SPY]\n")
    base = [sys.executable, "-m", "actors.cli", "backtest", "--config", str(cfg)]
    ok = subprocess.run(
        [*base, "--from", "2026-11-17", "--to", "2026-11-17", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "trades" in ok.stdout and "bars/s" in ok.stdout
    for name in ("report.json", "trades.csv", "equity.png", "report.html"):
        assert (tmp_path / "o" / name).stat().st_size > 0, name
    page = (tmp_path / "o" / "report.html").read_text()
    assert '<img src="equity.png"' in page and "net P&amp;L" in page
    assert (tmp_path / "o" / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "live.sqlite").exists()  # the service's own database is not touched
    bars = tmp_path / "bars.csv"
    bars.write_text(
        "symbol,time,open,high,low,close,volume\nSPY,2026-11-17T14:30:00+00:00,1,2,0.5,1.5,10\n"
    )
    for args, needle in (
        (["--from", "2026-11-31", "--to", "2026-12-01"], "not a date"),
        (["--from", "2026-11-21", "--to", "2026-11-22"], "no trading session"),
        (["--from", "2026-11-17", "--to", "2026-11-17", "--bars", str(tmp_path / "x.csv")], "cannot read bars"),
        (["--from", "2026-11-17", "--to", "2026-11-16"], "before --from"),
        (["--from", "2026-11-10", "--to", "2026-11-10", "--bars", str(bars)], "no bars from"),
        (["--from", "2026-11-17", "--to", "2026-11-17", "--bars", str(bars), "--symbols", "QQQ"], "no usable bars for QQQ"),
    ):  # fmt: skip
        bad = subprocess.run(
            [*base, *args, "--out", str(tmp_path / "bad")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode == 2, (args, bad.stderr)
        assert needle in bad.stderr and "Traceback" not in bad.stderr, bad.stderr

"""The backtest: the service's actors over a replayed market, on a manual clock.

`BacktestSystem` is `actors.system.System` with three things swapped: the ConnectionActor for
the replay (replay.py), the wall-clock ticker for a driver that moves a ManualClock one minute
at a time, and Pykka's threads for the deterministic pump (pump.py). Everything else (the
wiring, the settings, DataActor, the StrategyActors, RiskActor, OrderActor and its paper book,
SQLite) is the service's own. Each minute the driver ticks the actors, lets the watched quotes
through, then the bars that closed, and waits for the actors to go idle before moving on.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from actors import messages as m
from actors.hours import MarketHours, Session
from actors.metrics import Metrics, new_registry, prime
from actors.risk import reason_code
from actors.system import System
from backtest import report as rpt
from backtest.market import Market
from backtest.pump import Pump
from backtest.replay import Advance, ReplayConnection
from configs.settings import Settings
from sim.clock import ManualClock
from storage import open_db

log = logging.getLogger("optionsbot.backtest")

MINUTE = timedelta(minutes=1)
DB_NAME = "backtest.sqlite"


class BacktestError(Exception):
    """A backtest cannot run as asked; the message names the cause and the fix."""


@dataclass
class BacktestSystem(System):
    """The service, wired by System, on the pump and the replay."""

    market: Any = None
    pump: Pump = field(default_factory=Pump)

    def _start(self) -> BacktestSystem:
        db = open_db(self.settings.storage.path)  # migrate once, as the service does
        db.close()
        prime(self.metrics, self.settings.symbols)
        self._start_actors()
        self.pump.run()  # subscriptions, backfills and warm-up
        return self

    def _launch(self, name: str, cls: Any, *args: Any, **kwargs: Any) -> Any:
        ref = self.pump.spawn(cls, *args, **kwargs)
        self.actors.append((name, ref))
        return ref

    def _connection(self) -> tuple[Any, dict[str, Any]]:
        return ReplayConnection, {"market": self.market, "hours": self.hours}

    def _link(self, risk: Any, orders: Any) -> None:
        self.pump.actor(risk).set_order_actor(orders)

    def step(self, now: datetime) -> None:
        """One minute: tick, quotes (fills on working orders), then the bars closed by now."""
        self.clock.set(now)
        for name in ("data", "risk", "orders"):
            self.refs[name].tell(m.Tick(now=now))
        self.pump.run()
        if self.hours.is_open(now):  # quotes freeze outside the session: nothing fills there
            self.refs["connection"].tell(Advance(now=now, quotes=True, bars=False))
            self.pump.run()
        self.refs["connection"].tell(Advance(now=now, quotes=False, bars=True))
        self.pump.run()

    def stop(self, timeout: float = 10.0) -> None:
        refs = getattr(self, "refs", {})
        for name in ("risk", "orders"):
            if name in refs:
                refs[name].tell(m.Shutdown())
        self.pump.run()
        self.pump.stop()
        self.actors.clear()


def backtest_settings(settings: Settings, out: Path) -> Settings:
    """The user's settings, with what a backtest must own: dry-run (paper fills), its own
    database in `out`, no kill switch file of the live service's, no bar or quote recording."""
    return settings.model_copy(
        update={
            "dry_run": True,
            "storage": settings.storage.model_copy(update={"path": out / DB_NAME}),
            "risk": settings.risk.model_copy(update={"kill_switch_file": out / "KILL"}),
            "data": settings.data.model_copy(update={"record_bars": False, "record_quotes": False}),
        }
    )


def sessions_between(hours: MarketHours, start: date, end: date) -> list[Session]:
    return [s for s in hours.sessions if start <= s.date <= end]


def step_times(sessions: list[Session]) -> list[datetime]:
    """Every minute from each open to one minute past its close (the close's Tick expires DAY
    orders; the minute after it settles the session's last bar)."""
    out: list[datetime] = []
    for s in sessions:
        t = s.open
        while t <= s.close + MINUTE:
            out.append(t)
            t += MINUTE
    return out


@dataclass
class Result:
    report: dict
    trades: list[rpt.Trade]
    curve: list[tuple[datetime, float]]
    csv: str
    files: list[str] = field(default_factory=list)


def run(
    settings: Settings,
    market: Market,
    start: date,
    end: date,
    out: Path,
    progress: Callable[[int, int, int], None] | None = None,
    extra: dict | None = None,
    until: datetime | None = None,
) -> Result:
    """Run the backtest; write DIR/report.json and DIR/trades.csv; return the figures.
    `until` stops the clock early (the no-lookahead test stops two runs at the same moment)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        (out / f"{DB_NAME}{suffix}").unlink(missing_ok=True)
    bs = backtest_settings(settings, out)
    hours = MarketHours(cache=out / "market-hours.json")
    sessions = sessions_between(hours, start, end)
    if not sessions:
        raise BacktestError(
            f"no trading session between {start} and {end}: widen --from/--to (weekends and "
            "holidays have none)"
        )
    times = [t for t in step_times(sessions) if until is None or t <= until]
    clock = ManualClock(sessions[0].open)
    wall = time.monotonic()
    system = BacktestSystem(
        bs,
        metrics=Metrics(new_registry(process=False)),
        serve_metrics=False,
        clock=clock,
        market=market,
    )
    system.hours = hours
    system.start()
    replay = system.pump.actor(system.refs["connection"])
    try:
        for i, now in enumerate(times):
            system.step(now)
            if progress is not None and (i % 97 == 0 or i == len(times) - 1):
                progress(i + 1, len(times), replay.streamed)
    finally:
        system.stop()
    seconds = time.monotonic() - wall
    result = collect(bs, sessions, market, replay.streamed, seconds, replay.backfilled)
    counts = getattr(market, "quote_counts", None)
    result.report["option_quotes"] = (
        counts()
        if counts is not None
        else {"recorded": 0, "model": replay.quotes_given, "model_recorded_stale": 0}
    )
    result.report.update(extra or {})
    # Bad recorded quotes are skips like any other: one table of reasons in the report.
    skips = result.report["skips_by_reason"]
    for reason, n in (extra or {}).get("quotes_skipped", {}).items():
        skips[f"recorded_quotes: {reason}"] = n
    result.report["skips_by_reason"] = dict(sorted(skips.items()))
    (out / "trades.csv").write_text(result.csv)
    (out / "report.json").write_text(json.dumps(result.report, indent=2, sort_keys=True) + "\n")
    result.files = ["report.json", "trades.csv"]
    from backtest.cli import summary_lines
    from backtest.plot import equity_png, report_html

    drawn = equity_png(result.curve, sessions[0].open, bs.risk.paper_equity, out / "equity.png")
    if drawn:
        result.files.append("equity.png")
    page = report_html(
        result.report, result.trades, "equity.png" if drawn else None, summary_lines(result.report)
    )
    (out / "report.html").write_text(page)
    result.files.append("report.html")
    return result


def collect(
    settings: Settings,
    sessions: list[Session],
    market: Market,
    bars: int,
    seconds: float,
    warmup: int,
) -> Result:
    db = open_db(settings.storage.path)
    try:
        submitted = {
            e["order_ref"]: _reason(e["detail"])
            for e in db["order_events"].rows_where("event = ?", ["submit"])
        }
        orders = [
            rpt.OrderInfo(
                order_ref=o["order_ref"],
                bracket_ref=o["bracket_ref"] or "",
                role=o["role"] or "",
                strategy=o["strategy"] or "",
                symbol=o["symbol"],
                contract=o["local_symbol"] or "",
                multiplier=float(o["multiplier"] or 100),
                reason=submitted.get(o["order_ref"], ""),
            )
            for o in db["orders"].rows
        ]
        fills = [
            rpt.FillInfo(
                order_ref=f["order_ref"],
                at=datetime.fromisoformat(f["at"]),
                side=f["side"],
                quantity=float(f["quantity"]),
                price=float(f["price"]),
                commission=float(f["commission"] or 0.0),
            )
            for f in db["fills"].rows
        ]
        signals = [
            s
            for s in db["signals"].rows_where("direction != ?", ["hold"], select="symbol, strategy")
        ]
        skips = Counter(
            f"{d['stage']}: {reason_code(d['reason'])}"
            for d in db["decisions"].rows_where("outcome = ?", ["skipped"], select="stage, reason")
        )
        placed = db["orders"].count_where("role = ?", ["entry"])
        ideas = db["decisions"].count_where("stage = ?", ["risk_gate"])
    finally:
        db.close()
    trades, still_open = rpt.round_trips(orders, fills)
    start_equity = settings.risk.paper_equity
    days = [s.date for s in sessions]
    summary = rpt.summarize(trades, days, MarketHours.trading_date, start_equity)
    minutes = seconds / 60.0
    summary.update(
        {
            "from": days[0].isoformat(),
            "to": days[-1].isoformat(),
            "sessions": len(days),
            "symbols": list(settings.symbols),
            "market": market.description,
            "signals": len(signals),
            "signals_by_symbol": dict(sorted(Counter(s["symbol"] for s in signals).items())),
            "signals_by_rule": dict(sorted(Counter(s["strategy"] for s in signals).items())),
            "ideas": ideas,  # signals out of their cooldown, sent to RiskActor
            "entries_placed": placed,
            "skips_by_reason": dict(sorted(skips.items())),
            "open_at_end": still_open,
            "bars_processed": bars,
            "warmup_bars": warmup,
            "seconds": round(seconds, 3),
            "bars_per_second": round(bars / seconds, 1) if seconds > 0 else 0.0,
            "days_per_minute": round(len(days) / minutes, 2) if minutes > 0 else 0.0,
        }
    )
    return Result(
        report=summary,
        trades=trades,
        curve=rpt.equity_curve(trades, start_equity),
        csv=rpt.trades_csv(trades),
    )


def _reason(detail: str | None) -> str:
    try:
        return str(json.loads(detail or "{}").get("reason", ""))
    except (ValueError, AttributeError):
        return ""

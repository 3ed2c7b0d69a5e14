"""RiskActor: the account view, the daily loss guard, caps, market hours and the kill switch."""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any

from actors import messages as m
from actors.base import BaseActor
from actors.hours import MarketHours
from actors.metrics import Metrics
from configs.settings import Settings
from storage import FillRepo, JournalRepo, TradingDayRepo, open_db
from strategies.risk import (
    GateInputs,
    RiskLimits,
    count_day_trades,
    daily_loss_reason,
    flattens_due,
    gate_idea,
    guard_newly_tripped,
    kill_file_flatten,
    latched_loss_reason,
    pdt_window_start,
    size_reason,
)
from strategies.sizing import size_position

log = logging.getLogger("optionsbot.risk")


def reason_code(reason: str) -> str:
    """The fixed label part of a reason ("max_open_positions: 3 open >= 3" -> "max_open_positions")."""
    return reason.split(":", 1)[0].strip().replace(" ", "_")[:40] or "unknown"


class RiskActor(BaseActor):
    name = "risk"

    def __init__(self, settings: Settings, metrics: Metrics, clock: Any, hours: MarketHours):
        super().__init__()
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.hours = hours
        r = settings.risk
        self.limits = RiskLimits(
            max_daily_loss_pct=r.max_daily_loss_pct,
            max_open_positions=r.max_open_positions,
            max_contracts_per_order=r.max_contracts_per_order,
            max_premium_per_trade=r.max_premium_per_trade,
            max_exposure_per_symbol=r.max_exposure_per_symbol,
        )
        self.equity = r.paper_equity if settings.dry_run else math.nan
        self.open_positions = 0
        self.pending_entries = 0  # placed entries not filled yet (OrderActor's figure)
        self.exposure: dict[str, float] = {}
        # The approvals this actor issued and OrderActor has not finished: correlation id ->
        # symbol. OrderActor owns the entry itself; this is only what the gate counts.
        self.in_flight: dict[int, str] = {}
        self.stale: set[str] = set()
        self.may_trade = False
        self.connection_state = "disconnected"
        self.kill = False
        self.day = None
        self.start_equity = math.nan
        self.order_actor: Any = None
        self.flattened_on: dict[str, Any] = {}  # strategy -> the trading date it was flattened
        self.stopping = False
        self.unvouched = ""

    def on_start(self) -> None:
        self.db = open_db(self.settings.storage.path)
        self.days = TradingDayRepo(self.db)
        self.journal = JournalRepo(self.db)
        self.fills = FillRepo(self.db)
        self.kill = self.settings.risk.kill_switch_file.exists()
        self.metrics.kill_switch.set(1 if self.kill else 0)
        self._roll_day(self.clock.now())

    def on_stop(self) -> None:
        self.db.close()

    # -- state ------------------------------------------------------------------------------
    def set_order_actor(self, ref: Any) -> None:
        self.order_actor = ref

    def _roll_day(self, now) -> None:
        day = MarketHours.trading_date(now)
        if day == self.day or not math.isfinite(self.equity):
            return
        row = self.days.start_day(day, self.equity)
        self.day, self.start_equity = day, row.start_equity
        self.metrics.start_equity.set(self.start_equity)
        log.info(
            "trading day %s: start-of-day equity $%.2f%s",
            day,
            self.start_equity,
            " (restored)" if abs(self.start_equity - self.equity) > 1e-9 else "",
        )

    def _loss_reason(self) -> str | None:
        reason = daily_loss_reason(self.start_equity, self.equity, self.limits.max_daily_loss_pct)
        row = self.days.get(self.day) if self.day is not None else None
        if row is not None and guard_newly_tripped(reason, row.guard_tripped):
            self.days.trip_guard(self.day)
            log.error(
                "daily loss guard tripped: %s; no new entries until the next trading day",
                reason,
            )
        reason = latched_loss_reason(reason, row is not None and row.guard_tripped)
        self.metrics.loss_guard.set(1 if reason else 0)
        return reason

    def on_Tick(self, msg: m.Tick) -> None:
        self._roll_day(msg.now)
        self.metrics.market_open.set(1 if self.hours.is_open(msg.now) else 0)
        self._flatten_before_close(msg.now)
        path = self.settings.risk.kill_switch_file
        engaged = path.exists()
        if engaged != self.kill:
            # The file is the switch: `optionsbot kill` writes it, `optionsbot resume` removes it.
            flatten = False
            if engaged:
                try:
                    flatten = kill_file_flatten(path.read_text())
                except OSError:
                    flatten = False
            self.on_KillSwitch(
                m.KillSwitch(engaged=engaged, flatten=flatten, reason=f"file {path}")
            )

    def _flatten_before_close(self, now: datetime) -> None:
        """Close a strategy's positions a set number of minutes before the close, once a day.

        0 for a strategy means hold its positions overnight: their take-profit and stop are GTC
        orders at the broker, so they stay protected over the close and a weekend (whales by
        default; scalps when `flatten_scalps_before_close_minutes` is 0).
        """
        if self.order_actor is None:
            return
        left = self.hours.minutes_to_close(now)
        r = self.settings.risk
        day = MarketHours.trading_date(now)
        minutes_by_strategy = (
            ("scalp", r.flatten_scalps_before_close_minutes),
            ("whale", r.flatten_whales_before_close_minutes),
        )
        for strategy, minutes in flattens_due(left, minutes_by_strategy, self.flattened_on, day):
            self.flattened_on[strategy] = day
            log.info("%.0f minutes to the close: flattening %s positions", left, strategy)
            self.order_actor.tell(
                m.Flatten(reason=f"{minutes} min before the close", strategy=strategy)
            )

    def on_Shutdown(self, msg: m.Shutdown) -> None:
        self.stopping = True

    def on_KillSwitch(self, msg: m.KillSwitch) -> None:
        self.kill = msg.engaged
        self.metrics.kill_switch.set(1 if msg.engaged else 0)
        log.warning(
            "kill switch %s%s",
            "ENGAGED" if msg.engaged else "released",
            f": {msg.reason}" if msg.reason else "",
        )
        if msg.engaged and msg.flatten and self.order_actor is not None:
            self.order_actor.tell(m.Flatten(reason="kill switch", positions=True))

    def on_ConnectionChanged(self, msg: m.ConnectionChanged) -> None:
        self.may_trade = msg.may_trade
        self.connection_state = msg.state

    def on_BrokerVouch(self, msg: m.BrokerVouch) -> None:
        self.unvouched = msg.reason
        if math.isfinite(msg.start_equity):
            # OrderActor stored it (raised from the broker's P&L when the database knew less).
            day = MarketHours.trading_date(self.clock.now())
            if self.day in (None, day):
                self.day, self.start_equity = day, msg.start_equity
                self.metrics.start_equity.set(self.start_equity)

    def on_SymbolStale(self, msg: m.SymbolStale) -> None:
        (self.stale.add if msg.stale else self.stale.discard)(msg.symbol)

    def on_AccountValues(self, msg: m.AccountValues) -> None:
        if not self.settings.dry_run:
            self.equity = msg.net_liquidation
            self.metrics.equity.set(self.equity)
            self._roll_day(self.clock.now())

    def on_PositionsChanged(self, msg: m.PositionsChanged) -> None:
        self.open_positions = msg.open_positions
        self.pending_entries = msg.pending_entries
        self.exposure = dict(msg.exposure_by_symbol)
        if self.settings.dry_run:
            self.equity = msg.equity
            self.metrics.equity.set(self.equity)
        self._loss_reason()

    def on_EntryFinished(self, msg: m.EntryFinished) -> None:
        if self.in_flight.pop(msg.corr, None) is not None:
            return
        # Transitional, until OrderActor echoes the approval's correlation id on EntryFinished
        # (its `_finish`: corr=entry.idea.corr): a reply this actor cannot match releases the
        # oldest approval for its symbol, as the symbol-keyed `pending` set did.
        for corr, symbol in self.in_flight.items():
            if symbol == msg.symbol:
                del self.in_flight[corr]
                return

    def _open_or_pending(self) -> int:
        """Open positions and the placed entries still working: once OrderActor has placed an
        approval it is no longer in flight here, yet it may fill at any moment."""
        return self.open_positions + self.pending_entries

    def _day_trades(self) -> int:
        """Round trips in the last five sessions, from the fills SQLite holds (paper or broker)."""
        now = self.clock.now()
        since = pdt_window_start(x.date for x in self.hours.sessions if x.open <= now)
        if since is None:
            return 0
        fills = [
            (f.con_id, f.side, MarketHours.trading_date(datetime.fromisoformat(f.at)))
            for f in self.fills.since(since)
        ]
        return count_day_trades(fills, since)

    # -- decisions ----------------------------------------------------------------------------
    def _decide(self, symbol: str, stage: str, reason: str | None, detail: dict[str, Any]) -> None:
        outcome = "skipped" if reason else "approved"
        code = reason_code(reason) if reason else "ok"
        self.metrics.decisions.labels(stage, outcome, code).inc()
        self.journal.decision(
            symbol=symbol,
            stage=stage,
            outcome=outcome,
            reason=reason or "ok",
            detail=detail,
            at=self.clock.now(),  # the service's clock, as every other decision row
        )
        if reason:
            log.info("%s %s skipped: %s", symbol, stage, reason)

    def on_TradeIdea(self, msg: m.TradeIdea) -> None:
        sig = msg.signal
        now = self.clock.now()
        self._roll_day(now)
        inputs = GateInputs(
            symbol=sig.symbol,
            stopping=self.stopping,
            kill_switch=self.kill,
            unvouched=self.unvouched,
            may_trade=self.may_trade,
            connection_state=self.connection_state,
            minutes_since_open=self.hours.minutes_since_open(now),
            minutes_to_close=self.hours.minutes_to_close(now),
            stale=sig.symbol in self.stale,
            loss_reason=self._loss_reason(),
            in_flight_symbols=tuple(self.in_flight.values()),
            exposure=self.exposure.get(sig.symbol, 0.0),
            open_positions=self._open_or_pending(),
        )
        r = self.settings.risk
        reason = gate_idea(inputs, self.limits, r.no_entry_first_minutes, r.no_entry_last_minutes)
        detail = {
            "strategy": sig.kind,
            "direction": sig.direction and sig.direction.value,
            "confidence": sig.confidence,
            "bar_time": sig.bar_time.isoformat(),
        }
        self._decide(sig.symbol, "risk_gate", reason, detail)
        if reason is None and self.order_actor is not None:
            # The approval carries the idea's correlation id, and so does every later message of
            # this entry: EntryFinished is matched by it, never by symbol.
            self.in_flight[msg.corr] = sig.symbol
            self.order_actor.tell(m.EntryApproved(idea=msg, equity=self.equity, corr=msg.corr))

    def on_SizeRequest(self, msg: m.SizeRequest) -> None:
        sig = msg.idea.signal
        o = self.settings.orders
        sizing = size_position(
            equity=self.equity,
            risk_per_trade=self.settings.risk.risk_per_trade,
            premium=msg.premium,
            multiplier=msg.contract.multiplier,
            stop_loss_pct=o.stop_loss_pct,
            max_contracts=self.limits.max_contracts_per_order,
            max_premium=self.limits.max_premium_per_trade,
        )
        reason = size_reason(
            self.limits,
            contracts=sizing.contracts,
            sizing_reason=sizing.reason,
            premium=msg.premium,
            multiplier=msg.contract.multiplier,
            open_positions=self._open_or_pending(),
            symbol_exposure=self.exposure.get(sig.symbol, 0.0),
            equity=self.equity,
            start_of_day_equity=self.start_equity,
            day_trades_5d=self._day_trades() if sizing.contracts > 0 else 0,
        )
        contracts = 0 if reason else sizing.contracts
        detail = {
            "premium": msg.premium,
            "multiplier": msg.contract.multiplier,
            "equity": self.equity,
            "contracts": contracts,
            "sizing": sizing.reason,
            "contract": msg.contract.local_symbol,
        }
        self._decide(sig.symbol, "sizing", reason, detail)
        msg.reply_to.tell(
            m.SizeDecision(request=msg, contracts=contracts, reason=reason or sizing.reason)
        )

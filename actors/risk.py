"""RiskActor: the account view, the daily loss guard, caps, market hours and the kill switch."""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime
from typing import Any

from actors import messages as m
from actors.base import BaseActor
from actors.hours import MarketHours
from actors.metrics import Metrics
from configs.settings import Settings
from storage import JournalRepo, TradingDayRepo, open_db
from strategies.risk import RiskLimits, check_entry, count_day_trades, daily_loss_reason
from strategies.sizing import size_position

log = logging.getLogger("optionsbot.risk")


def reason_code(reason: str) -> str:
    """The fixed label part of a reason ("max_open_positions: 3 open >= 3" -> "max_open_positions")."""
    return reason.split(":", 1)[0].strip().replace(" ", "_")[:40] or "unknown"


def entry_gate(
    *,
    kill_switch: bool,
    may_trade: bool,
    connection_state: str,
    minutes_since_open: float | None,
    minutes_to_close: float | None,
    no_entry_first: int,
    no_entry_last: int,
    stale: bool,
    loss_reason: str | None,
    busy: bool,
    unvouched: str = "",
) -> str | None:
    """The pre-trade checks that need no option price, in order; None means go on.

    `unvouched`: why the database cannot vouch for the broker's state (actors.adoption)."""
    if kill_switch:
        return "kill_switch: entries paused (remove the kill file or run `optionsbot resume`)"
    if unvouched:
        return unvouched
    if not may_trade:
        return f"connection: {connection_state}, no new entries"
    if minutes_since_open is None or minutes_to_close is None:
        return "market_closed: outside regular trading hours"
    if minutes_since_open < no_entry_first:
        return f"opening_window: {minutes_since_open:.0f} min after the open < {no_entry_first}"
    if minutes_to_close < no_entry_last:
        return f"closing_window: {minutes_to_close:.0f} min before the close < {no_entry_last}"
    if stale:
        return "stale_data: no fresh bars for this symbol"
    if loss_reason:
        return loss_reason
    if busy:
        return "busy: an entry for this symbol is already in progress or open"
    return None


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
        self.exposure: dict[str, float] = {}
        self.pending: set[str] = set()
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
        self.day, self.start_equity = day, float(row["start_equity"])
        self.metrics.start_equity.set(self.start_equity)
        log.info(
            "trading day %s: start-of-day equity $%.2f%s",
            day,
            self.start_equity,
            " (restored)" if abs(self.start_equity - self.equity) > 1e-9 else "",
        )

    def _loss_reason(self) -> str | None:
        reason = daily_loss_reason(self.start_equity, self.equity, self.limits.max_daily_loss_pct)
        self.metrics.loss_guard.set(1 if reason else 0)
        if reason and self.day is not None:
            row = self.days.get(self.day)
            if row and not row["guard_tripped"]:
                self.days.trip_guard(self.day)
                log.error(
                    "daily loss guard tripped: %s; no new entries until the next trading day",
                    reason,
                )
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
                    flatten = bool(json.loads(path.read_text() or "{}").get("flatten"))
                except (ValueError, OSError, AttributeError):
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
        if left is None:
            return
        r = self.settings.risk
        day = MarketHours.trading_date(now)
        for strategy, minutes in (
            ("scalp", r.flatten_scalps_before_close_minutes),
            ("whale", r.flatten_whales_before_close_minutes),
        ):
            if not minutes or left > minutes or self.flattened_on.get(strategy) == day:
                continue
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
        self.exposure = dict(msg.exposure_by_symbol)
        if self.settings.dry_run:
            self.equity = msg.equity
            self.metrics.equity.set(self.equity)
        self._loss_reason()

    def on_EntryFinished(self, msg: m.EntryFinished) -> None:
        self.pending.discard(msg.symbol)

    def _day_trades(self) -> int:
        """Round trips in the last five sessions, from the fills SQLite holds (paper or broker)."""
        now = self.clock.now()
        sessions = [x for x in self.hours.sessions if x.open <= now][-5:]
        if not sessions:
            return 0
        since = sessions[0].date
        rows = self.db.query(
            "select con_id, side, at from fills where at >= ?", [since.isoformat()]
        )
        fills = [
            (r["con_id"], r["side"], MarketHours.trading_date(datetime.fromisoformat(r["at"])))
            for r in rows
        ]
        return count_day_trades(fills, since)

    # -- decisions ----------------------------------------------------------------------------
    def _decide(self, symbol: str, stage: str, reason: str | None, detail: dict[str, Any]) -> None:
        outcome = "skipped" if reason else "approved"
        code = reason_code(reason) if reason else "ok"
        self.metrics.decisions.labels(stage, outcome, code).inc()
        self.journal.decision(
            symbol=symbol, stage=stage, outcome=outcome, reason=reason or "ok", detail=detail
        )
        if reason:
            log.info("%s %s skipped: %s", symbol, stage, reason)

    def on_TradeIdea(self, msg: m.TradeIdea) -> None:
        sig = msg.signal
        now = self.clock.now()
        self._roll_day(now)
        reason = (
            "stopping: the service is shutting down"
            if self.stopping
            else entry_gate(
                kill_switch=self.kill,
                may_trade=self.may_trade,
                connection_state=self.connection_state,
                minutes_since_open=self.hours.minutes_since_open(now),
                minutes_to_close=self.hours.minutes_to_close(now),
                no_entry_first=self.settings.risk.no_entry_first_minutes,
                no_entry_last=self.settings.risk.no_entry_last_minutes,
                stale=sig.symbol in self.stale,
                loss_reason=self._loss_reason(),
                busy=sig.symbol in self.pending or self.exposure.get(sig.symbol, 0.0) > 0,
                unvouched=self.unvouched,
            )
        )
        if (
            reason is None
            and self.open_positions + len(self.pending) >= self.limits.max_open_positions
        ):
            reason = (
                f"max_open_positions: {self.open_positions} open + {len(self.pending)} pending "
                f">= {self.limits.max_open_positions}"
            )
        detail = {
            "strategy": sig.kind,
            "direction": sig.direction and sig.direction.value,
            "confidence": sig.confidence,
            "bar_time": sig.bar_time.isoformat(),
        }
        self._decide(sig.symbol, "risk_gate", reason, detail)
        if reason is None and self.order_actor is not None:
            self.pending.add(sig.symbol)
            self.order_actor.tell(m.EntryApproved(idea=msg, equity=self.equity))

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
        reason = None if sizing.contracts > 0 else sizing.reason
        if reason is None:
            reason = check_entry(
                self.limits,
                open_positions=self.open_positions,
                symbol_exposure=self.exposure.get(sig.symbol, 0.0),
                new_premium_total=sizing.contracts * msg.premium * msg.contract.multiplier,
                equity=self.equity,
                day_trades_5d=self._day_trades(),
                contracts=sizing.contracts,
                start_of_day_equity=self.start_equity,
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

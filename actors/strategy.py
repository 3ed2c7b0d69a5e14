"""StrategyActor: one per symbol; feeds closed bars to the scalp and whale rules and emits trade ideas."""

from __future__ import annotations

import logging
import time
from typing import Any

from actors import messages as m
from actors.base import BaseActor
from actors.hours import MarketHours
from actors.metrics import Metrics
from configs.settings import Settings
from storage import JournalRepo, WhaleRepo, open_db
from strategies.scalp import Cooldown, ScalpParams, ScalpStrategy
from strategies.signals import Signal
from strategies.whale import WhaleParams, WhaleStrategy

log = logging.getLogger("optionsbot.strategy")


def scalp_params(settings: Settings) -> ScalpParams:
    s = settings.scalp
    return ScalpParams(
        rsi_period=s.rsi_period,
        ema_fast=s.ema_fast,
        ema_slow=s.ema_slow,
        rsi_buy_min=s.rsi_buy_min,
        rsi_buy_max=s.rsi_buy_max,
        rsi_sell_below=s.rsi_sell_below,
        min_bars=s.min_bars,
    )


def whale_params(settings: Settings) -> WhaleParams:
    w = settings.whale
    return WhaleParams(
        lookback_days=w.lookback_days,
        volume_multiple=w.volume_multiple,
        debounce_days=w.debounce_days,
    )


class StrategyActor(BaseActor):
    name = "strategy"

    def __init__(self, symbol: str, settings: Settings, metrics: Metrics, risk: Any):
        super().__init__()
        self.symbol = symbol
        self.settings = settings
        self.metrics = metrics
        self.risk = risk
        self.scalp = ScalpStrategy(symbol, scalp_params(settings))
        self.cooldown = Cooldown(settings.scalp.cooldown_bars)

    def on_start(self) -> None:
        self.db = open_db(self.settings.storage.path)
        self.journal = JournalRepo(self.db)
        self.whale_repo = WhaleRepo(self.db)
        self.whale = WhaleStrategy(
            self.symbol,
            whale_params(self.settings),
            last_fired=self.whale_repo.last_fired(self.symbol),
        )

    def on_stop(self) -> None:
        self.db.close()

    def on_BarClosed(self, msg: m.BarClosed) -> Signal | None:
        session = MarketHours.trading_date(msg.bar.time)
        if msg.bar_size == "1 min":
            if not self.settings.scalp.enabled:
                return None
            signal = self.scalp.on_bar(msg.bar, session)
            self.cooldown.on_bar()
        else:
            if not self.settings.whale.enabled:
                return None
            signal = self.whale.on_bar(msg.bar, session, live=msg.live)
            if signal.direction is not None and msg.live:
                self.whale_repo.fired(self.symbol, msg.bar.time)
        if not msg.live:
            return signal
        self.metrics.cycles.labels(self.symbol).inc()
        direction = signal.direction.value if signal.direction else "hold"
        self.metrics.signals.labels(self.symbol, signal.kind, direction).inc()
        self.journal.signal(
            symbol=self.symbol,
            strategy=signal.kind,
            direction=signal.direction and signal.direction.value,
            confidence=signal.confidence,
            price=signal.price,
            reasons=signal.reasons,
            bar_time=signal.bar_time,
        )
        self.metrics.bar_to_decision.labels(signal.kind).observe(
            max(0.0, time.monotonic() - msg.received_mono)
        )
        if signal.direction is None:
            log.debug("%s %s HOLD: %s", self.symbol, signal.kind, "; ".join(signal.reasons))
            return signal
        if signal.kind == "scalp" and not self.cooldown.admit():
            log.debug(
                "%s scalp %s within cooldown (%d/%d bars)",
                self.symbol,
                direction,
                self.cooldown.since_idea,
                self.cooldown.bars,
            )
            return signal
        log.info(
            "%s %s signal %s (confidence %.2f): %s",
            self.symbol,
            signal.kind,
            direction.upper(),
            signal.confidence,
            "; ".join(signal.reasons),
        )
        self.risk.tell(m.TradeIdea(signal=signal, received_mono=msg.received_mono))
        return signal

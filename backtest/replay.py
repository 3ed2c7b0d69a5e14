"""ReplayConnection: answers the messages the ConnectionActor answers, from a `Market`.

It is the one actor a backtest swaps: DataActor, the StrategyActors, RiskActor and OrderActor
are the service's own, talking to it by the same messages. A keepUpToDate stream becomes a
cursor that the driver moves (`Advance`): a bar is streamed only once the clock has passed its
close, and watched option quotes are priced at the driver's time, never later.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from actors import messages as m
from actors.base import BaseActor, tell
from actors.connection.broker import bracket_refused
from actors.hours import MarketHours
from backtest.market import Market
from strategies.bars import Bar

log = logging.getLogger("optionsbot.backtest")

MINUTE, HOUR = "1 min", "1 hour"
_UNIT_SESSIONS = {"D": 1, "W": 5, "M": 21, "Y": 252}


@dataclass(frozen=True, slots=True)
class Advance(m.Msg):
    """The driver's clock reached `now`: deliver the quotes, then the bars closed by now."""

    now: datetime
    quotes: bool = True
    bars: bool = True


def history_start(duration: str, now: datetime, hours: MarketHours) -> datetime:
    """Where IB's `durationStr` reaches back from `now`: "N S" in seconds; "N D/W/M/Y" in
    trading sessions (IB counts days of history, so "2 D" on a Monday morning is Thursday's and
    Friday's bars, not the weekend's)."""
    number, unit = duration.split()
    n = int(number)
    if unit == "S":
        return now - timedelta(seconds=n)
    sessions = n * _UNIT_SESSIONS[unit]
    past = [s for s in hours.sessions if s.open <= now]
    if not past:
        return now
    return past[max(0, len(past) - sessions)].open


class ReplayConnection(BaseActor):
    name = "connection"

    def __init__(
        self,
        settings: Any,
        metrics: Any,
        clock: Any,
        market: Market,
        hours: MarketHours,
        port: int | None = None,
    ):
        super().__init__()
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.market = market
        self.hours = hours
        self.listeners: list[Any] = []
        # symbol -> (reply_to, the start of the last bar streamed)
        self.streams: dict[str, tuple[Any, datetime | None]] = {}
        self.watched: dict[int, tuple[m.OptionContract, Any]] = {}
        self.chains: dict[tuple[str, Any], m.Chain | None] = {}
        self.quote_requests = 0
        self.quotes_given = 0  # option quotes answered or streamed (the report's count)
        self.streamed = 0  # minute bars streamed: the backtest's bars_processed
        self.backfilled = 0  # minute bars given as history (warm-up)

    def on_Subscribe(self, msg: m.Subscribe) -> None:
        if "connection" not in msg.topics:
            return  # orders and account events come from a broker; a backtest has none
        self.listeners.append(msg.listener)
        tell(
            msg.listener,
            m.ConnectionChanged(state="connected", may_trade=True, resync=True, cause="replay"),
        )

    def _history(
        self, symbol: str, bar_size: str, duration: str, since: datetime | None
    ) -> list[Bar]:
        now = self.clock.now()
        start = since if since is not None else history_start(duration, now, self.hours)
        if bar_size == MINUTE:
            bars = self.market.minute_bars(symbol, start, now)
            self.backfilled += len(bars)
            return bars
        return self.market.hour_bars(symbol, start, now)

    def on_StreamBars(self, msg: m.StreamBars) -> None:
        bars = self._history(msg.symbol, msg.bar_size, msg.duration, msg.since)
        tell(
            msg.reply_to,
            m.BarsBackfilled(symbol=msg.symbol, bar_size=msg.bar_size, bars=tuple(bars)),
        )
        last = bars[-1].time if bars else msg.since
        self.streams[msg.symbol] = (msg.reply_to, last)

    def on_FetchBars(self, msg: m.FetchBars) -> None:
        bars = self._history(msg.symbol, msg.bar_size, msg.duration, msg.since)
        tell(
            msg.reply_to,
            m.BarsBackfilled(symbol=msg.symbol, bar_size=msg.bar_size, bars=tuple(bars)),
        )

    def on_CloseLastBar(self, msg: m.CloseLastBar) -> None:
        # The stream delivers every bar at its close; a session's last bar is no exception.
        log.debug("%s: last bar of the session asked for; streamed already", msg.symbol)

    def on_FetchChain(self, msg: m.FetchChain) -> None:
        now = self.clock.now()
        key = (msg.symbol, MarketHours.trading_date(now))
        if key not in self.chains:
            # A chain is fetched once per symbol per day; earlier days are never asked again.
            for old in [k for k in self.chains if k[0] == msg.symbol and k[1] != key[1]]:
                del self.chains[old]
            self.chains[key] = self.market.chain(msg.symbol, now)
        chain = self.chains[key]
        tell(
            msg.reply_to,
            m.ChainFetched(
                symbol=msg.symbol,
                chain=chain,
                spot=math.nan,
                reason="" if chain is not None else "no price for the underlying yet",
            ),
        )

    def on_FetchQuotes(self, msg: m.FetchQuotes) -> None:
        now = self.clock.now()
        quotes: list[m.OptionQuote] = []
        missing: list[tuple[m.OptionContract, str]] = []
        for c in msg.contracts:
            self.quote_requests += 1
            q = self.market.option_quote(c, now)
            if isinstance(q, str):
                missing.append((c, q))
            else:
                quotes.append(q)
                self.quotes_given += 1
        tell(
            msg.reply_to, m.QuotesFetched(quotes=tuple(quotes), missing=tuple(missing), tag=msg.tag)
        )

    def on_WatchQuotes(self, msg: m.WatchQuotes) -> None:
        self.watched[msg.contract.con_id] = (msg.contract, msg.reply_to)
        # A streaming line opens with the current quote, as IB's does.
        self._send_quote(msg.contract, msg.reply_to, self.clock.now())

    def on_WarmQuotes(self, msg: m.WarmQuotes) -> None:
        """Warm lines make a live entry's quotes wait less; the replay answers at once anyway."""

    def on_UnwatchQuotes(self, msg: m.UnwatchQuotes) -> None:
        self.watched.pop(msg.contract.con_id, None)

    def on_PlaceBracket(self, msg: m.PlaceBracket) -> None:
        # A backtest is dry-run by construction: a bracket here is a bug, refused as unsent.
        log.error("backtest: a bracket reached the replay connection; refused")
        bracket_refused(msg, "backtest: there is no broker")

    def on_CancelOrder(self, msg: m.CancelOrder) -> None:
        log.error("backtest: cancel for %s reached the replay connection", msg.order_ref)

    def on_FetchBrokerState(self, msg: m.FetchBrokerState) -> None:
        log.error("backtest: reconciliation asked of the replay connection; no broker")

    def on_SymbolStale(self, msg: m.SymbolStale) -> None:
        """Counted by RiskActor; the replay has no connection to degrade."""

    def _send_quote(self, contract: m.OptionContract, reply_to: Any, now: datetime) -> None:
        q = self.market.option_quote(contract, now)
        if isinstance(q, str):
            return
        self.quotes_given += 1
        tell(reply_to, m.QuoteUpdated(quote=q))

    def on_Advance(self, msg: Advance) -> None:
        now = msg.now
        if msg.quotes:
            for con_id in sorted(self.watched):
                contract, reply_to = self.watched[con_id]
                self._send_quote(contract, reply_to, now)
        if msg.bars:
            for symbol in sorted(self.streams):
                reply_to, last = self.streams[symbol]
                start = last + timedelta(minutes=1) if last is not None else now - timedelta(days=1)
                bars = self.market.minute_bars(symbol, start, now)
                for bar in bars:
                    tell(reply_to, m.BarStreamed(symbol=symbol, bar_size=MINUTE, bar=bar))
                if bars:
                    self.streamed += len(bars)
                    self.streams[symbol] = (reply_to, bars[-1].time)

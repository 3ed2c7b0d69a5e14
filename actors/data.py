"""DataActor: one backfill per symbol and bar size, then streamed closed bars, in order, exactly once.

Only the 1-minute bars are streamed (keepUpToDate holds a historical request open, and IB
allows about 50 open at once); live hourly bars are built from the minutes on IB's RTH grid,
and hourly history comes from one plain request at start and after each reconnect's gap.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from actors import messages as m
from actors.base import BaseActor
from actors.hours import MarketHours
from actors.metrics import Metrics
from actors.pacing import gap_duration, stream_kinds
from configs.settings import Settings
from storage import BarRepo, open_db
from strategies.aggregate import HourlyAggregator, hour_bucket
from strategies.bars import Bar, bar_problem
from strategies.sanity import SpikeGuard, SpikeParams, Verdict

log = logging.getLogger("optionsbot.data")

MINUTE, HOUR = "1 min", "1 hour"
BAR_SECONDS = {MINUTE: 60, HOUR: 3600}


@dataclass
class Feed:
    """What DataActor remembers about one (symbol, bar size) series."""

    symbol: str
    bar_size: str
    guard: SpikeGuard = field(default_factory=lambda: SpikeGuard(SpikeParams()))
    ready: bool = False  # its history has been delivered at least once
    last_seen_mono: float = field(default_factory=time.monotonic)
    # Hourly bars built before the hourly history came.
    held: list[tuple[Bar, bool]] = field(default_factory=list)
    # A gap fill is on its way: live minute bars wait here, to be delivered in order.
    filling: bool = False
    pending: list[tuple[Bar, float]] = field(default_factory=list)
    # A first backfill that failed (a timeout, a request the Gateway dropped): asked again at
    # this monotonic time, not only at the next reconnect, or the symbol would have no data
    # all day on a connection that never drops.
    retry_mono: float | None = None

    @property
    def last(self) -> Bar | None:
        """The newest bar taken in, a suspect one included: what the next bar follows."""
        return self.guard.newest

    def accept(self, bar: Bar) -> str | list[Verdict]:
        """Why the bar is dropped; else what the spike guard makes of it (and of a held bar)."""
        problem = bar_problem(bar, self.last)
        if problem is not None:
            return problem
        return self.guard.offer(bar)


# How recent the last minute of a history must be to stand for the spot (see on_BarsBackfilled).
SPOT_FROM_HISTORY = timedelta(minutes=2)


class DataActor(BaseActor):
    name = "data"

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        clock: Any,
        hours: MarketHours,
        connection: Any,
        strategies: dict[str, Any],
        stale_listeners: tuple[Any, ...] = (),
        spot_listeners: tuple[Any, ...] = (),
    ):
        super().__init__()
        self.spot_listeners = spot_listeners
        self.hours = hours
        self.stale_listeners = stale_listeners
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.connection = connection
        self.strategies = strategies
        d = settings.data
        spike = SpikeParams(
            atr_multiple=d.spike_atr_multiple,
            floor_pct=d.spike_floor_pct,
            warmup_pct=d.spike_warmup_pct,
        )
        self.feeds = {
            (s, size): Feed(s, size, SpikeGuard(spike))
            for s in settings.symbols
            for size in (MINUTE, HOUR)
        }
        self.hourly = {s: HourlyAggregator() for s in settings.symbols}
        # Which symbols' minutes come from real-time bars (a line) rather than keepUpToDate (an
        # open historical request): IB allows ~50 of the latter at once.
        self.realtime = stream_kinds(
            settings.symbols, settings.data.stream, settings.broker.max_open_historical
        )
        self.stale: dict[str, bool] = dict.fromkeys(settings.symbols, False)
        self.recorder: BarRepo | None = None
        self.resubscribed_at: dict[str, datetime] = {}
        self.last_bar_asked: dict[str, datetime] = {}  # symbol -> the session close asked for

    def on_start(self) -> None:
        self.db = open_db(self.settings.storage.path) if self.settings.data.record_bars else None
        self.recorder = BarRepo(self.db) if self.db is not None else None
        self.connection.tell(m.Subscribe(listener=self.actor_ref, topics=("connection",)))

    def on_stop(self) -> None:
        if self.db is not None:
            self.db.close()

    def _default_duration(self, bar_size: str) -> str:
        return (
            self.settings.data.backfill_1min
            if bar_size == MINUTE
            else self.settings.data.backfill_1hour
        )

    def on_ConnectionChanged(self, msg: m.ConnectionChanged) -> None:
        if not msg.resync:
            return
        # After every (re)connect: ask only for the gap since the last bar delivered.
        now = self.clock.now()
        # Hourly fetches before the streams: a stream holds its request open for good, and the
        # Gateway allows about 50 open, so with many symbols the fetches must not queue behind them.
        for feed in sorted(self.feeds.values(), key=lambda f: f.bar_size == MINUTE):
            if feed.bar_size == HOUR and feed.ready:
                continue  # after the first start, the minutes' gap fill rebuilds the hours
            last = feed.last.time if feed.last else None
            duration = gap_duration(last, now, feed.bar_size, self._default_duration(feed.bar_size))
            kind = m.StreamBars if feed.bar_size == MINUTE else m.FetchBars
            log.info(
                "%s %s %s bars (history: %s)",
                "streaming" if kind is m.StreamBars else "fetching",
                feed.symbol,
                feed.bar_size,
                duration if last is None else f"since {last.isoformat()}",
            )
            extra = {"realtime": self.realtime[feed.symbol]} if kind is m.StreamBars else {}
            self.connection.tell(
                kind(
                    symbol=feed.symbol,
                    bar_size=feed.bar_size,
                    duration=duration,
                    reply_to=self.actor_ref,
                    since=last,
                    **extra,
                )
            )

    def _expected_next(self, bar: Bar) -> datetime:
        """The start of the minute bar after `bar`: the next minute, or the next session's open."""
        nxt = bar.time + timedelta(minutes=1)
        session = self.hours.session_at(bar.time)
        if session is not None and nxt >= session.close:
            return self.hours.next_open(bar.time) or nxt
        return nxt

    def _flush(self, feed: Feed) -> None:
        """Deliver the live bars held during a gap fill, in order (a bar still missing is lost)."""
        pending, feed.pending, feed.filling = feed.pending, [], False
        for bar, received in pending:
            self._count_hole(feed, bar)
            self._deliver(feed, bar, live=True, received=received, after_fill=True)

    def _count_hole(self, feed: Feed, bar: Bar) -> None:
        """A bar after a hole the history could not fill (the bars are lost): say so, and count."""
        if feed.last is None or bar.time <= self._expected_next(feed.last):
            return
        missing = int((bar.time - self._expected_next(feed.last)).total_seconds() // 60)
        self.metrics.bars_skipped.labels(feed.symbol, "gap_unfilled").inc(max(1, missing))
        log.warning(
            "%s: %d minute bars before %s could not be filled",
            feed.symbol,
            missing,
            bar.time.isoformat(),
        )

    def on_StreamFailed(self, msg: m.StreamFailed) -> None:
        feed = self.feeds.get((msg.symbol, msg.bar_size))
        if feed is not None and feed.filling:
            self._flush(feed)
        first = feed is not None and not feed.ready
        if first:
            feed.retry_mono = time.monotonic() + self.settings.data.resubscribe_after_s
        log.warning(
            "%s %s bars failed: %s (%s)",
            msg.symbol,
            msg.bar_size,
            msg.reason,
            f"asked again in {self.settings.data.resubscribe_after_s:g}s"
            if first
            else "asked again on the next reconnect",
        )

    def _retry_first_backfills(self) -> None:
        now_mono = time.monotonic()
        for feed in self.feeds.values():
            if feed.ready or feed.retry_mono is None or now_mono < feed.retry_mono:
                continue
            feed.retry_mono = None
            kind = m.StreamBars if feed.bar_size == MINUTE else m.FetchBars
            extra = {"realtime": self.realtime[feed.symbol]} if kind is m.StreamBars else {}
            log.info("%s %s: asking for its history again", feed.symbol, feed.bar_size)
            self.connection.tell(
                kind(
                    symbol=feed.symbol,
                    bar_size=feed.bar_size,
                    duration=self._default_duration(feed.bar_size),
                    reply_to=self.actor_ref,
                    **extra,
                )
            )

    def on_BarsBackfilled(self, msg: m.BarsBackfilled) -> None:
        feed = self.feeds.get((msg.symbol, msg.bar_size))
        if feed is None:
            return
        now = msg.as_of or self.clock.now()
        delivered = 0
        for bar in msg.bars:
            # A plain request includes the bar still forming: it is not history yet.
            if msg.bar_size == HOUR and not self._hour_closed(bar, now):
                continue
            if msg.bar_size == MINUTE and bar.time + timedelta(minutes=1) > now:
                continue
            if msg.bar_size == MINUTE:
                self._count_hole(feed, bar)
            if self._deliver(feed, bar, live=False):
                delivered += 1
        first = not feed.ready
        feed.ready = True
        feed.last_seen_mono = time.monotonic()
        latest = feed.last
        if (
            msg.bar_size == MINUTE
            and delivered
            and latest is not None
            and now - (latest.time + timedelta(minutes=1)) <= SPOT_FROM_HISTORY
        ):
            # The spot as of the last closed minute, before the first live bar: OrderActor
            # fetches the day's chain, warms the strikes in play and qualifies their expiry now,
            # as a bare script does at start-up, rather than at that bar, whose entry would then
            # wait for the chain and the contract details (bench.latency at 50 symbols: the
            # symbols whose history came last waited 2 round trips, up to 9 s, at their first
            # live bar). Not from an old history (before the open): that spot is yesterday's.
            for ref in self.spot_listeners:
                ref.tell(m.SpotMoved(symbol=feed.symbol, price=latest.close, time=latest.time))
        log.info(
            "%s %s: %d bars of history delivered (%s)",
            msg.symbol,
            msg.bar_size,
            delivered,
            "backfill" if first else "gap fill",
        )
        for bar, live in feed.held:
            self._deliver(feed, bar, live=live)
        feed.held.clear()
        if feed.filling:
            self._flush(feed)
        elif feed.pending:
            # Minutes streamed before the history came: each now as if it came now (a hole
            # before the first is a gap to fill, as ever).
            pending, feed.pending = feed.pending, []
            for bar, mono in pending:
                self.on_BarStreamed(
                    m.BarStreamed(symbol=feed.symbol, bar_size=feed.bar_size, bar=bar, mono=mono)
                )

    def _hour_closed(self, bar: Bar, now: datetime) -> bool:
        session = self.hours.session_at(bar.time)
        if session is None:
            return True
        return hour_bucket(bar.time, session.open, session.close)[1] <= now

    def on_BarStreamed(self, msg: m.BarStreamed) -> None:
        feed = self.feeds.get((msg.symbol, msg.bar_size))
        if feed is None:
            return
        feed.last_seen_mono = time.monotonic()
        if feed.filling or not feed.ready:
            # Not before its history (a real-time stream may outlive its failed backfill).
            feed.pending.append((msg.bar, msg.mono))
            return
        if feed.last is not None and msg.bar.time > self._expected_next(feed.last):
            # The stream skipped bars (IB drops updates; outages lose them): fetch exactly the
            # gap and hold this bar until it is filled, so the strategy sees every bar in order.
            feed.filling = True
            feed.pending.append((msg.bar, msg.mono))
            gap = (msg.bar.time - feed.last.time).total_seconds() + 120
            log.warning(
                "%s: stream skipped from %s to %s; filling the gap",
                feed.symbol,
                feed.last.time.isoformat(),
                msg.bar.time.isoformat(),
            )
            self.connection.tell(
                m.FetchBars(
                    symbol=feed.symbol,
                    bar_size=feed.bar_size,
                    duration=f"{int(gap)} S",
                    reply_to=self.actor_ref,
                    since=feed.last.time,
                )
            )
            return
        self._deliver(feed, msg.bar, live=True, received=msg.mono)

    def _deliver(
        self, feed: Feed, bar: Bar, live: bool, received: float = 0.0, after_fill: bool = False
    ) -> bool:
        verdicts = feed.accept(bar)
        if isinstance(verdicts, str):
            problem = verdicts
            # Re-sent history after a reconnect is expected to overlap, and so are the live bars
            # held while a gap was filled (the fill reaches up to now): not worth a log line.
            if problem not in ("duplicate", "out_of_order") or (live and not after_fill):
                log.warning(
                    "%s %s bar %s skipped: %s",
                    feed.symbol,
                    feed.bar_size,
                    bar.time.isoformat(),
                    problem,
                )
            self.metrics.bars_skipped.labels(feed.symbol, problem).inc()
            return False
        delivered = False
        for v in verdicts:
            where = f"{feed.symbol} {feed.bar_size} bar {v.bar.time.isoformat()}"
            if v.outcome == "hold":
                log.warning("%s held as suspect (no signal): %s", where, v.reason)
            elif v.outcome == "drop":
                log.warning("%s skipped: spike, the next bar reverted (%s)", where, v.reason)
                self.metrics.bars_skipped.labels(feed.symbol, "spike").inc()
            elif v.outcome == "confirm":
                # A real move, but a minute late by now: the indicators take it, no signal does.
                log.warning("%s accepted as a real move, without a signal: %s", where, v.reason)
                self._pass_on(feed, v.bar, live=False, received=received)
                delivered = True
            else:
                self._pass_on(feed, v.bar, live=live, received=received)
                delivered = True
        return delivered

    def _pass_on(self, feed: Feed, bar: Bar, live: bool, received: float) -> None:
        """A bar accepted: counted, recorded, sent to its strategy and into the hourly bars."""
        self.metrics.bars.labels(feed.symbol, feed.bar_size).inc()
        if self.recorder is not None and not self.recorder.record(
            feed.symbol, feed.bar_size, bar, live
        ):
            log.error(
                "%s %s bar %s delivered twice", feed.symbol, feed.bar_size, bar.time.isoformat()
            )
        if live and feed.bar_size == MINUTE:
            for ref in self.spot_listeners:
                ref.tell(m.SpotMoved(symbol=feed.symbol, price=bar.close, time=bar.time))
        strategy = self.strategies.get(feed.symbol)
        if strategy is not None:
            strategy.tell(
                m.BarClosed(
                    symbol=feed.symbol,
                    bar_size=feed.bar_size,
                    bar=bar,
                    live=live,
                    received_mono=received or time.monotonic(),
                )
            )
        if feed.bar_size == MINUTE:
            self._aggregate(feed.symbol, bar, live, received)

    def _aggregate(self, symbol: str, bar: Bar, live: bool, received: float) -> None:
        session = self.hours.session_at(bar.time)
        if session is None:
            return
        hourly = self.feeds[(symbol, HOUR)]
        for hour in self.hourly[symbol].update(bar, session.open, session.close):
            if not hourly.ready:
                hourly.held.append((hour, live))
            else:
                self._deliver(hourly, hour, live=live, received=received)

    def on_Tick(self, msg: m.Tick) -> None:
        """Staleness: no 1-minute bar for N minutes while the market is open."""
        self._retry_first_backfills()
        limit = timedelta(minutes=self.settings.data.stale_after_minutes)
        for (symbol, size), feed in self.feeds.items():
            if size != MINUTE or feed.last is None:
                continue
            # A bar is stamped with its start: it closes one bar later. Before today's first
            # bar has closed, the clock starts at the open, not at yesterday's last bar.
            last_close = feed.last.time + timedelta(seconds=BAR_SECONDS[size])
            session = self.hours.session_at(msg.now)
            if session is not None and last_close < session.open:
                last_close = session.open
            age = msg.now - last_close
            self.metrics.last_bar_age.labels(symbol).set(max(0.0, age.total_seconds()))
            stale = session is not None and age > limit
            if stale != self.stale[symbol]:
                self.stale[symbol] = stale
                self.metrics.data_stale.labels(symbol).set(1 if stale else 0)
                if stale:
                    log.warning("%s data stale: last bar %s ago", symbol, age)
                else:
                    log.info("%s data fresh again", symbol)
                for ref in self.stale_listeners:
                    ref.tell(m.SymbolStale(symbol=symbol, stale=stale, age_s=age.total_seconds()))
            if stale:
                self._resubscribe_if_due(feed, msg.now, limit)
            self._close_last_bar_if_due(feed, msg.now)

    def _close_last_bar_if_due(self, feed: Feed, now: datetime) -> None:
        """After the close, the stream's forming bar is the session's last, and final: ask for it
        once (it would otherwise come only with the next session's first bar)."""
        assert feed.last is not None
        session = self.hours.session_at(feed.last.time)
        if session is None or now < session.close + timedelta(minutes=1):
            return
        last_bar = session.close - timedelta(minutes=1)
        if feed.last.time >= last_bar or self.last_bar_asked.get(feed.symbol) == session.close:
            return
        self.last_bar_asked[feed.symbol] = session.close
        self.connection.tell(
            m.CloseLastBar(
                symbol=feed.symbol, bar_size=MINUTE, bar_time=last_bar, reply_to=self.actor_ref
            )
        )

    def _resubscribe_if_due(self, feed: Feed, now: datetime, every: timedelta) -> None:
        """A stream that went quiet may be dead at the Gateway: ask again for the gap, at most
        once per stale window, so a real outage is not met with a request storm."""
        last = self.resubscribed_at.get(feed.symbol)
        if last is not None and now - last < every:
            return
        if time.monotonic() - feed.last_seen_mono < self.settings.data.resubscribe_after_s:
            return
        self.resubscribed_at[feed.symbol] = now
        duration = gap_duration(
            feed.last.time if feed.last else None, now, MINUTE, self._default_duration(MINUTE)
        )
        log.warning("%s: resubscribing the 1 min stream (history: %s)", feed.symbol, duration)
        self.connection.tell(
            m.StreamBars(
                symbol=feed.symbol,
                bar_size=MINUTE,
                duration=duration,
                reply_to=self.actor_ref,
                since=feed.last.time if feed.last else None,
                realtime=self.realtime[feed.symbol],
            )
        )

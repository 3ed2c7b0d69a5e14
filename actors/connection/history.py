"""Historical bars (loop thread only): plain and gap requests, keepUpToDate streams, the
session's last bar at the close, and the pacing and open-request slots they all share."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from actors import messages as m
from actors.base import tell
from actors.connection.convert import bar_from_ib
from actors.pacing import (
    BARS,
    HistoricalPacer,
    bar_seconds,
    close_check_at,
    close_due,
    gap_duration,
)
from strategies.aggregate import MinuteAggregator
from strategies.bars import Bar

if TYPE_CHECKING:
    from actors.connection.session import Session

log = logging.getLogger("optionsbot.connection")


# A real-time stream that brought a 5-second bar this recently (real seconds) is alive.
REALTIME_ALIVE_S = 60.0
# Seconds (market clock) after a minute's end, beyond the grace, before asking history for it.
HISTORY_SETTLE_S = 2.0
# A real-time subscription's first bar comes within 10 s (market clock) of the request: the
# next 5-second boundary, then the bar's own 5 s (IB's realtime_bars.html: bars of 5 s, sent
# as each closes). With a margin, a subscription silent this long after error 100 was dropped.
REALTIME_FIRST_BAR_S = 15.0
# How many times that look waits again for our own gate to send what it holds.
SILENT_RECHECKS = 5


class Inbox:
    """Collects a request's answers on the loop, to pass on in order with what came meanwhile."""

    def __init__(self) -> None:
        self.got: list[m.Msg] = []

    def tell(self, msg: m.Msg) -> None:
        self.got.append(msg)


def refused(msg: m.StreamBars | m.FetchBars, reason: str) -> None:
    """The requester always hears back, a refusal too."""
    tell(msg.reply_to, m.StreamFailed(symbol=msg.symbol, bar_size=msg.bar_size, reason=reason))


# -- memory: a keepUpToDate stream's bar list -------------------------------------------------
STREAM_KEEP = 2


def trim_stream(bar_list: Any, keep: int = STREAM_KEEP) -> None:
    """Drop all but the last `keep` bars of a keepUpToDate stream's BarDataList.

    ib_async appends every new bar to the list for as long as the stream is open, so over weeks
    it holds every minute of every symbol (the whole backfill included). Only the last two are
    ever read: the closed bar (bar_list[-2]) and the forming one, which ib_async's
    historicalDataUpdate compares each update with (bars[-1].date) and which CloseLastBar reads.
    Never fewer than two: ib_async drops updates for an empty list (`if not bars: return`).
    Checked against ib_async 2.x wrapper.historicalDataUpdate.
    """
    if len(bar_list) > keep:
        del bar_list[:-keep]


class History:
    # IB allows about broker.max_open_historical requests open at once, and a keepUpToDate
    # stream holds its request open for good. Requests beyond the limit wait here for a slot
    # (the wait is not part of their timeout) instead of queueing, or failing, at the Gateway.

    def __init__(self, session: Session) -> None:
        self.session = session
        self.pacer = HistoricalPacer()
        self.slots = asyncio.Semaphore(session.settings.broker.max_open_historical)
        self.open_streams: dict[tuple[str, str], Any] = {}
        self.stream_generation: dict[tuple[str, str], int] = {}
        # The session's last bar, delivered at the close: not again at the next session's
        # first update.
        self.closed_early: dict[tuple[str, str], datetime] = {}
        # Per open stream, the timer that closes its forming bar at its end (`_arm_close`).
        self.close_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        # Real-time 5-second bar streams, aggregated to minutes: each holds a market data line
        # (the Quotes room's semaphore), not an open historical request.
        self.realtime_streams: dict[tuple[str, str], Any] = {}
        self.realtime_wanted: set[tuple[str, str]] = set()  # asked for, open or on their way
        self.realtime_seen: dict[tuple[str, str], float] = {}  # monotonic: its last 5 s bar
        self.realtime_waiting: set[tuple[str, str]] = set()  # booked in the pacer, not yet sent
        # Subscriptions sent that have brought no bar yet: (their generation, their request).
        self.realtime_silent: dict[tuple[str, str], tuple[int, m.StreamBars]] = {}
        self.tasks: set[asyncio.Task] = set()  # re-subscriptions under way (kept, not lost)
        # The last minute passed on per real-time stream: where a new subscription's history starts.
        self.realtime_last: dict[tuple[str, str], datetime] = {}

    async def request(self, msg: m.StreamBars | m.FetchBars, stream: bool) -> None:
        """Book a pacing slot and send one historical request; the requester always hears back."""
        # The identical-request key leaves out the duration: it is only known at send time
        # (`since`), so any two requests for one series are kept 15 s apart.
        delay = self.pacer.reserve(
            (msg.symbol, msg.bar_size, stream),
            (msg.symbol, "TRADES"),
            time.monotonic(),
            small_bars=bar_seconds(msg.bar_size) <= 30,
        )
        self.session.metrics.pacing_wait.observe(delay)
        await self.fetch(msg, delay, stream)

    async def end_stream(self, key: tuple[str, str]) -> None:
        bars = self.open_streams.pop(key, None)
        self._disarm(key)
        if bars is not None:
            if self.session.ib.isConnected():
                self.session.ib.cancelHistoricalData(bars)
            self.slots.release()
        live = self.realtime_streams.pop(key, None)
        if live is not None:
            if self.session.ib.isConnected():
                self.session.ib.cancelRealTimeBars(live)
            self.session.quotes.lines.release()
        self.realtime_silent.pop(key, None)

    def drop(self) -> None:
        """The socket closed: the Gateway forgot every stream: every slot and line free again."""
        for _ in range(len(self.open_streams)):
            self.slots.release()
        for _ in range(len(self.realtime_streams)):
            self.session.quotes.lines.release()
        for key in list(self.close_timers):
            self._disarm(key)
        self.open_streams.clear()
        self.realtime_streams.clear()
        self.realtime_silent.clear()

    async def fetch(self, msg: m.StreamBars | m.FetchBars, delay: float, stream: bool) -> None:
        s = self.session
        ib = s.ib
        key = (msg.symbol, msg.bar_size)
        if stream:
            # Requests for one stream can overlap (a resync and a stale resubscribe): only the
            # newest may register; an older one that answers later is cancelled, not leaked.
            generation = self.stream_generation[key] = self.stream_generation.get(key, 0) + 1
            await self.end_stream(key)
        queued = delay > 0 or self.slots.locked()
        if queued:
            s.metrics.pacing_queue_depth.inc()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.slots.acquire()
        if queued:
            s.metrics.pacing_queue_depth.dec()
        if not ib.isConnected():
            self.slots.release()
            refused(msg, "not connected (lost while queued)")
            return
        try:
            contract = await s.stock(msg.symbol)
            # Computed now, not when queued: the wait must not open a hole in the history.
            # The Gateway answers up to the historical timeout later, its clock running at the
            # clock's scale meanwhile (120x in a fast simulation): ask for that much more.
            slack = s.timeout("historical") * getattr(s.clock, "scale", 1.0)
            duration = (
                msg.duration
                if msg.since is None
                else gap_duration(msg.since, s.clock.now(), msg.bar_size, msg.duration, slack)
            )
            timeout = s.timeout("historical")
            # A bar still forming when we asked may have ended by the answer (a round trip at
            # 150x is many simulated seconds): judged as of the asking, it is left to the gap
            # fill or the stream, whole, rather than kept partial.
            asked = s.clock.now()
            bars = await s.timed(
                "historical",
                self._request(contract, duration, msg.bar_size, stream, timeout),
                timeout + 5.0,  # a backstop: ib_async's own timeout comes first
            )
        except Exception as exc:  # noqa: BLE001 - the requester always gets an answer
            self.slots.release()
            refused(
                msg,
                "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__,
            )
            return
        if not stream:
            self.slots.release()
        # The last bar of a keepUpToDate answer is still forming, unless the market has closed
        # (no newer bar a minute after it ended). A plain answer may end with a forming bar
        # too; DataActor drops that one by its end time.
        history = list(bars)
        if stream and history and not self._final(history[-1], msg.bar_size):
            history.pop()
        tell(
            msg.reply_to,
            m.BarsBackfilled(
                symbol=msg.symbol,
                bar_size=msg.bar_size,
                bars=tuple(bar_from_ib(b) for b in history),
                # A stream's forming bar is its last, popped above: judged by time as well, the
                # minute that ended in flight would be dropped and gap-filled for nothing.
                as_of=None if stream else asked,
            ),
        )
        if not stream:
            return
        reply_to, symbol, size = msg.reply_to, msg.symbol, msg.bar_size

        def on_update(bar_list: Any, has_new_bar: bool) -> None:
            if has_new_bar and len(bar_list) >= 2:
                bar = bar_from_ib(bar_list[-2])
                trim_stream(bar_list)
                if self.closed_early.pop(key, None) == bar.time:
                    return
                tell(reply_to, m.BarStreamed(symbol=symbol, bar_size=size, bar=bar))

        if self.stream_generation.get(key) != generation:
            if ib.isConnected():
                ib.cancelHistoricalData(bars)
            self.slots.release()
            return
        await self.end_stream(key)
        trim_stream(bars)  # the backfill was delivered above, from its own copy
        bars.updateEvent += on_update
        self.open_streams[key] = bars  # keeps its slot until cancelled or the socket closes
        self._arm_close(key, bars, reply_to)

    # -- a bar known closed at its end, not at the next bar's first update -----------------

    def _arm_close(self, key: tuple[str, str], bars: Any, reply_to: Any) -> None:
        """Close the stream's forming bar `data.bar_close_grace_s` after its end if no update
        has started the next bar by then. IB sends keepUpToDate updates every 4 to 6 s, so
        without this a bar is known closed up to 6 s late, and every entry waits for it.

        The bar closed here carries the values of its last update, at most one update interval
        before its end; the stream's own final version, when the next bar starts, is dropped
        (`closed_early`), so the strategy sees each bar once.
        """
        if not bars or self.open_streams.get(key) is not bars:
            return
        s = self.session
        bar_s = bar_seconds(key[1])
        grace = s.settings.data.bar_close_grace_s
        now = s.clock.now()
        at = close_check_at(bar_from_ib(bars[-1]).time, now, bar_s, grace)
        delay = (at - now).total_seconds() / getattr(s.clock, "scale", 1.0)
        loop = asyncio.get_running_loop()
        self._disarm(key)
        self.close_timers[key] = loop.call_later(
            max(0.0, delay), self._close_if_due, key, bars, reply_to
        )

    def _close_if_due(self, key: tuple[str, str], bars: Any, reply_to: Any) -> None:
        self.close_timers.pop(key, None)
        if self.open_streams.get(key) is not bars or not bars:
            return
        forming = bar_from_ib(bars[-1])
        if close_due(
            forming.time, self.session.clock.now(), bar_seconds(key[1]), self.closed_early.get(key)
        ):
            self.closed_early[key] = forming.time
            tell(reply_to, m.BarStreamed(symbol=key[0], bar_size=key[1], bar=forming))
        self._arm_close(key, bars, reply_to)

    def _disarm(self, key: tuple[str, str]) -> None:
        handle = self.close_timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _final(self, ib_bar: Any, bar_size: str) -> bool:
        """A stream's last bar is final a minute after it ended: by then a newer one would have
        started, had the market been open."""
        end = bar_from_ib(ib_bar).time + timedelta(seconds=bar_seconds(bar_size) + 60)
        return end <= self.session.clock.now()

    async def _request(
        self, contract: Any, duration: str, bar_size: str, stream: bool, timeout: float
    ) -> Any:
        """One historical request; raises TimeoutError when no answer came in `timeout` seconds.

        The timeout is ib_async's own, because on a timeout it also cancels the request at the
        Gateway. A request cancelled only here would stay open there, holding one of the ~50
        open-request slots for good (a stalled HMDS would use them all up).
        """
        ib = self.session.ib
        t0 = time.monotonic()
        bars = await ib.reqHistoricalDataAsync(
            contract,
            endDateTime="",
            durationStr=duration,
            barSizeSetting=bar_size,
            whatToShow=self.session.settings.data.what_to_show,
            useRTH=True,
            formatDate=2,
            keepUpToDate=stream,
            timeout=timeout,
        )
        if not bars and time.monotonic() - t0 >= timeout - 0.05:
            # ib_async timed out: it cancelled at the Gateway and returned the list emptied.
            if stream:
                ib.wrapper.endSubscription(bars)
            raise TimeoutError(f"no answer in {timeout:g}s")
        return bars

    async def close_last_bar(self, msg: m.CloseLastBar) -> None:
        key = (msg.symbol, msg.bar_size)
        if key in self.realtime_streams:
            # The minute's last 5-second bar may never come after the close: history has it.
            await self.request(
                m.FetchBars(
                    symbol=msg.symbol,
                    bar_size=msg.bar_size,
                    duration="300 S",
                    reply_to=msg.reply_to,
                    since=msg.bar_time - timedelta(minutes=1),
                ),
                stream=False,
            )
            return
        bars = self.open_streams.get(key)
        bar = bar_from_ib(bars[-1]) if bars else None
        if bar is None or bar.time != msg.bar_time:
            # The next (re)subscription's history brings it.
            log.info(
                "%s: the session's last bar %s is not in the stream (its last: %s)",
                msg.symbol,
                msg.bar_time.isoformat(),
                bar.time.isoformat() if bar else "no stream",
            )
            return
        self.closed_early[key] = bar.time
        tell(msg.reply_to, m.BarStreamed(symbol=msg.symbol, bar_size=msg.bar_size, bar=bar))

    def realtime_lines(self) -> int:
        """Market data lines the real-time bar streams hold (one each)."""
        return len(self.realtime_wanted | set(self.realtime_streams))

    # -- real-time 5-second bars, aggregated to minutes -------------------------------------

    async def realtime(self, msg: m.StreamBars, again: bool = False) -> None:
        """Stream minutes built from real-time 5-second bars, after a backfill of the gap.

        IB's realtime_bars.html: each subscription holds a market data line, and new ones are
        paced like small historical bars (at most 60 in 10 minutes), so the pacer books it as
        one. A minute is known closed when its last 5-second bar arrives, at its end. The
        minute the subscription starts in is incomplete, and so never streamed: DataActor sees
        the hole at the next minute and fills it from history, like any gap. Minutes that
        complete before the backfill has answered wait here, so history comes first.
        """
        key = (msg.symbol, msg.bar_size)
        if (
            not again
            and key in self.realtime_streams
            and time.monotonic() - self.realtime_seen.get(key, -1e9) < REALTIME_ALIVE_S
        ):
            # The subscription is alive: only the history is asked again. A new subscription
            # would spend one of the 60 that IB allows in 10 minutes, and at a bad start they
            # are all spent: the symbol would wait ten minutes with no bars.
            await self._realtime_backfill(msg)
            return
        if key in self.realtime_waiting:
            # A subscription already waits its turn in IB's window: booking another would
            # only push every later one further back. The history is what can be had now.
            await self._realtime_backfill(msg)
            return
        generation = self.stream_generation[key] = self.stream_generation.get(key, 0) + 1
        await self.end_stream(key)
        self.realtime_waiting.add(key)
        try:
            await self._subscribe_realtime(msg, key, generation)
        finally:
            self.realtime_waiting.discard(key)

    async def _subscribe_realtime(
        self, msg: m.StreamBars, key: tuple[str, str], generation: int
    ) -> None:
        s, ib = self.session, self.session.ib
        delay = self.pacer.reserve(
            (msg.symbol, "5 secs", True), (msg.symbol, "TRADES"), time.monotonic(), small_bars=True
        )
        s.metrics.pacing_wait.observe(delay)
        self.realtime_wanted.add(key)  # warm quotes leave its line free from now on
        if delay > 0:
            waited = await self._minutes_from_history(msg, key, generation, delay)
            if waited is None:
                if not ib.isConnected():
                    refused(msg, "not connected (lost while queued)")
                return  # or superseded meanwhile: the newer request answers
            msg = replace(msg, since=waited[0])
        quotes = s.quotes
        if quotes.lines.locked() and quotes.warm_lines:
            quotes.give_back_warm_line()  # bars come before warmth
        await s.quotes.lines.acquire()
        if not ib.isConnected() or self.stream_generation.get(key) != generation:
            s.quotes.lines.release()
            if not ib.isConnected():
                refused(msg, "not connected (lost while queued)")
            return
        try:
            contract = await s.stock(msg.symbol)
        except Exception as exc:  # noqa: BLE001 - the requester always gets an answer
            s.quotes.lines.release()
            refused(msg, str(exc) or type(exc).__name__)
            return
        live = ib.reqRealTimeBars(contract, 5, s.settings.data.what_to_show, True)
        self.realtime_streams[key] = live
        self.realtime_silent[key] = (generation, msg)
        minutes = MinuteAggregator()
        held: list[Bar] | None = []  # None once the backfill has answered
        reply_to = msg.reply_to

        def on_bar(bars: Any, _: bool) -> None:
            if not bars:
                return
            self.realtime_seen[key] = time.monotonic()
            self.realtime_silent.pop(key, None)
            b = bars[-1]
            # ib_async appends every 5-second bar for as long as the stream is open (4,680 a
            # day a symbol) and reads none of them back (wrapper.realtimeBar): only this one is
            # needed. Untrimmed, 5 real-time symbols grew the service by 10 MB a day.
            trim_stream(bars, 1)
            five = Bar(b.time.astimezone(UTC), b.open_, b.high, b.low, b.close, max(0.0, b.volume))
            for minute in minutes.update(five):
                told = self.realtime_last.get(key)
                if held is None and told is not None and minute.time <= told:
                    # The history delivered it already (or a newer one): not a bad bar, ours.
                    continue
                if held is None:
                    self.realtime_last[key] = minute.time
                    tell(reply_to, m.BarStreamed(symbol=key[0], bar_size=key[1], bar=minute))
                else:
                    held.append(minute)

        live.updateEvent += on_bar
        self.realtime_seen[key] = time.monotonic()
        answer = await self._realtime_backfill(msg)
        # The answer's last bar may be the minute still forming (DataActor drops it): that
        # minute is the stream's to deliver, whole.
        last = max(
            (
                b.time
                for r in answer.got
                if isinstance(r, m.BarsBackfilled)
                for b in r.bars
                if r.as_of is None or b.time + timedelta(minutes=1) <= r.as_of
            ),
            default=None,
        )
        if last is not None:
            self.realtime_last[key] = max(last, self.realtime_last.get(key, last))
        pending, held = held, None
        for minute in pending or ():
            if last is None or minute.time > last:
                self.realtime_last[key] = minute.time
                tell(reply_to, m.BarStreamed(symbol=key[0], bar_size=key[1], bar=minute))

    def on_rate_violation(self, silence_s: float) -> None:
        """After error 100: the subscriptions that have brought no bar yet may have been among
        the messages the Gateway dropped. IB answers nothing for a dropped request, so nothing
        else would notice before the stale check (minutes). Each is asked again once its first
        bar is overdue, if other real-time streams are bringing bars meanwhile (then the market
        is open and the silence is the drop's)."""
        suspects = dict(self.realtime_silent)
        if not suspects:
            return
        scale = getattr(self.session.clock, "scale", 1.0) or 1.0
        overdue = max(1.0, REALTIME_FIRST_BAR_S / scale)
        self.session.loop.call_later(
            silence_s + overdue, self._ask_silent_again, suspects, overdue, SILENT_RECHECKS
        )

    def _ask_silent_again(
        self,
        suspects: dict[tuple[str, str], tuple[int, m.StreamBars]],
        overdue: float,
        rechecks: int,
    ) -> None:
        s = self.session
        if rechecks > 0 and s.gate.depth(BARS):
            # Some may still wait in our own gate (at half rate after the error): their first
            # bar is not due yet. Look again once what is queued there now has gone.
            s.loop.call_later(
                s.gate.backlog_s(s.loop.time()) + overdue,
                self._ask_silent_again,
                suspects,
                overdue,
                rechecks - 1,
            )
            return
        now = time.monotonic()
        live = any(
            now - seen < overdue
            for key, seen in self.realtime_seen.items()
            if key in self.realtime_streams and key not in self.realtime_silent
        )
        if not s.ib.isConnected() or not live:
            return
        for key, (generation, msg) in suspects.items():
            if self.realtime_silent.get(key, (None,))[0] != generation:
                continue  # a bar came, or it was asked again meanwhile
            if self.stream_generation.get(key) != generation:
                continue
            log.warning(
                "%s real-time bars: none since error 100, which may have dropped the request;"
                " asking again",
                key[0],
            )
            s.metrics.realtime_resubscribed.inc()
            again = replace(msg, since=self.realtime_last.get(key, msg.since))
            task = s.loop.create_task(self.realtime(again, again=True))
            self.tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("asking for real-time bars again failed: %s", task.exception())

    async def _minutes_from_history(
        self, msg: m.StreamBars, key: tuple[str, str], generation: int, delay: float
    ) -> tuple[datetime | None] | None:
        """Wait `delay` (real seconds) for IB's window of real-time subscriptions, passing on each
        minute from history meanwhile; (the time of the last bar passed on, or msg.since), or
        None when the wait was cut short by a disconnect or a newer request.

        IB's historical_limitations.html: small bars (30 s or less, which real-time bars are
        paced as) allow 60 new requests in 10 minutes, so after a reconnect at 55 real-time
        symbols most wait up to ten minutes. 1-minute bars are not small bars: a short request
        after each minute closes keeps the symbol fresh (DataActor takes it as history, so no
        signal fires on it) and costs one message a minute per waiting symbol.
        """
        s = self.session
        scale = getattr(s.clock, "scale", 1.0)
        until = time.monotonic() + delay
        since = msg.since
        log.info(
            "%s: real-time bars wait %.0fs for IB's window; its minutes come from history",
            msg.symbol,
            delay,
        )
        while True:
            answer = await self._realtime_backfill(replace(msg, since=since))
            since = max(
                (b.time for r in answer.got if isinstance(r, m.BarsBackfilled) for b in r.bars),
                default=since,
            )
            # The first request goes at once (the gap since the last bar, as the other streams'
            # fills at a resync); then one after each minute closes.
            now = s.clock.now()
            minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
            # After the grace, and a little more: the minute must be history at the Gateway.
            due = minute + timedelta(seconds=s.settings.data.bar_close_grace_s + HISTORY_SETTLE_S)
            wait = (due - now).total_seconds() / scale
            if time.monotonic() + wait >= until:
                break
            await asyncio.sleep(wait)
            if not s.ib.isConnected() or self.stream_generation.get(key) != generation:
                return None
        rest = until - time.monotonic()
        if rest > 0:
            await asyncio.sleep(rest)
        if not s.ib.isConnected() or self.stream_generation.get(key) != generation:
            return None
        return (since,)

    async def _realtime_backfill(self, msg: m.StreamBars) -> Inbox:
        """The history before a real-time stream, passed on to the requester; a failure is
        passed on too, and the subscription stays (the requester asks for the history again,
        and DataActor holds the stream's minutes until it has it)."""
        s = self.session
        answer = Inbox()
        # A key of its own: under the plain requests' key, the gap fill that follows at the
        # next minute (the joined minute) would wait out the 15 s identical-request rule,
        # though it asks for another duration and so is not identical at IB.
        backfill = m.FetchBars(
            symbol=msg.symbol,
            bar_size=msg.bar_size,
            duration=msg.duration,
            reply_to=answer,
            since=msg.since,
        )
        delay = self.pacer.reserve(
            (msg.symbol, msg.bar_size, "realtime backfill"),
            (msg.symbol, "TRADES"),
            time.monotonic(),
            small_bars=bar_seconds(msg.bar_size) <= 30,
        )
        s.metrics.pacing_wait.observe(delay)
        await self.fetch(backfill, delay, stream=False)
        for reply in answer.got:
            tell(msg.reply_to, reply)
        return answer

    async def stream_count(self) -> int:
        return len(self.open_streams) + len(self.realtime_streams)

"""Pure pacing arithmetic for IB's rules: how long a historical request must wait, and which
messages may go on the wire now."""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta


def bar_seconds(bar_size: str) -> int:
    """'1 min' -> 60, '5 secs' -> 5, '1 hour' -> 3600, '1 day' -> 86400."""
    n, unit = bar_size.split()
    per = {"sec": 1, "min": 60, "hour": 3600, "day": 86400, "week": 604800}
    return int(n) * next(v for k, v in per.items() if unit.startswith(k))


def gap_duration(
    last: datetime | None, now: datetime, bar_size: str, default: str, slack_s: float = 0.0
) -> str:
    """How much history a (re)subscription asks for: the first time `default`, later the gap
    since `last` plus two bars, or plus `slack_s` (how far the Gateway's clock may be ahead of
    `now` when it answers) when that is more. Overlap costs a few bars, dropped as duplicates;
    too little would lose bars for good."""
    if last is None:
        return default
    gap = (now - last).total_seconds() + max(2 * bar_seconds(bar_size), slack_s)
    if gap > 86_400:
        days = int(gap // 86_400) + 1
        return f"{days} D"
    return f"{max(60, int(gap))} S"


def close_check_at(forming: datetime, now: datetime, bar_s: int, grace_s: float) -> datetime:
    """When to look whether the forming bar of a stream has closed: `grace_s` after its end.

    A keepUpToDate stream says a bar has closed only with the next bar's first update, every 4
    to 6 s at IB (IBKR.md), so a bar would be known closed up to 6 s late; a timer at its end
    knows it at once. When that end has passed already (the market closed, the stream
    stalled), the next check is at the next bar boundary, never in the past: a timer that
    keeps firing at once would spin the loop.
    """
    due = forming + timedelta(seconds=bar_s + grace_s)
    if due > now:
        return due
    epoch = datetime(1970, 1, 1, tzinfo=now.tzinfo)
    elapsed = (now - epoch).total_seconds()
    boundary = epoch + timedelta(seconds=(elapsed // bar_s + 1) * bar_s)
    return boundary + timedelta(seconds=grace_s)


def close_due(
    forming: datetime, now: datetime, bar_s: int, already_closed: datetime | None
) -> bool:
    """Whether a stream's forming bar is to be closed now, from its last update: its end has
    passed, no update has started the next bar (the forming bar is still this one), and it
    was not closed before. A stream that stalls leaves its forming bar older than one bar: that
    bar's values are not vouched for (the end of it never arrived), so the stream's next
    update, or the gap fill, delivers it, never this timer."""
    end = forming + timedelta(seconds=bar_s)
    return end <= now < end + timedelta(seconds=bar_s) and already_closed != forming


# Open historical requests kept free of streams in `auto`: backfills, gap fills and the hourly
# fetches need slots too, or they would wait behind streams that never end.
HISTORICAL_HEADROOM = 5
# IB's realtime_bars.html: "no more than 60 *new* requests for real time bars can be made in 10
# minutes": every reconnect asks for all of them again.
MAX_REALTIME_STREAMS = 60


def stream_kinds(symbols: Sequence[str], mode: str, max_open_historical: int) -> dict[str, bool]:
    """Per symbol, whether its minutes come from real-time 5-second bars (True) or from a
    keepUpToDate stream (False).

    A keepUpToDate stream holds one of IB's ~50 open historical requests for good; real-time
    bars hold a market data line instead (100 by default). `auto` streams the first symbols
    from history, keeping HISTORICAL_HEADROOM requests free, and the rest in real time.
    """
    if mode == "historical":
        return dict.fromkeys(symbols, False)
    if mode == "realtime":
        return dict.fromkeys(symbols, True)
    keep = max(0, max_open_historical - HISTORICAL_HEADROOM)
    return {s: i >= keep for i, s in enumerate(symbols)}


def _in_window(times: list[float], t: float, span: float) -> list[float]:
    """The booked times within (t - span, t + span): the ones that can conflict with t."""
    lo = bisect.bisect_right(times, t - span)
    hi = bisect.bisect_left(times, t + span)
    return times[lo:hi]


@dataclass
class HistoricalPacer:
    """Gives each historical request a send time that breaks none of IB's three rules.

    - no identical request within `identical_s` (15 s),
    - fewer than `burst_count` (6) requests for one contract/exchange/tick type in `burst_s` (2 s),
    - at most `window_count` (60) requests in `window_s` (600 s).
    Times are monotonic seconds; `reserve` books the slot, so callers just wait the delay.
    A margin keeps us clear of the boundary, since our clock and IB's differ.
    """

    identical_s: float = 15.0
    burst_count: int = 6
    burst_s: float = 2.0
    window_count: int = 60
    window_s: float = 600.0
    margin_s: float = 0.25
    _identical: dict[tuple, list[float]] = field(default_factory=dict)
    _by_contract: dict[tuple, list[float]] = field(default_factory=dict)
    _all: list[float] = field(default_factory=list)

    def _fits(self, times: list[float], t: float, span: float, limit: int) -> float | None:
        """None when t fits; otherwise a later time worth trying."""
        near = _in_window(times, t, span)
        # Any `limit` consecutive bookings plus t must not fall within one span.
        for i in range(len(near) - limit + 1):
            group = near[i : i + limit]
            lo, hi = min(group[0], t), max(group[-1], t)
            if hi - lo < span:
                return (
                    group[-1] + span + self.margin_s
                    if group[-1] >= t
                    else group[0] + span + self.margin_s
                )
        return None

    def reserve(
        self, key: tuple, contract_key: tuple, now: float, small_bars: bool = True
    ) -> float:
        """Book a slot for a request; returns how many seconds to wait before sending it.

        IB's 60-in-10-minutes rule covers bars of 30 s or less only; larger bars keep the
        identical and per-contract spacing (cheap, and kind to the Gateway) but not the window.
        """
        identical = self._identical.setdefault(key, [])
        by_contract = self._by_contract.setdefault(contract_key, [])
        t = now
        for _ in range(10_000):
            bump = self._fits(identical, t, self.identical_s, 1)
            if bump is None:
                bump = self._fits(by_contract, t, self.burst_s, self.burst_count - 1)
            if bump is None and small_bars:
                bump = self._fits(self._all, t, self.window_s, self.window_count)
            if bump is None:
                break
            t = max(t + 1e-6, bump)
        # Only small bars count in the window: the simulator, like IB's rule, counts no others,
        # and counting the 1-minute and 1-hour requests would hold real-time bars back for
        # minutes at a 100-symbol start.
        for times in (identical, by_contract, *([self._all] if small_bars else [])):
            bisect.insort(times, t)
        self._prune(now)
        return t - now

    def _prune(self, now: float) -> None:
        horizon = now - max(self.window_s, self.identical_s)
        cut = bisect.bisect_right(self._all, horizon)
        if cut:
            del self._all[:cut]
        for table in (self._identical, self._by_contract):
            for k in [k for k, v in table.items() if v and v[-1] < horizon]:
                del table[k]


# Message ids (the first field of every request) that belong to orders and the account's
# sync, the API's start and the Gateway's clock: they go before market and historical data (a
# clock read queued behind a cold start's history timed out, again and again, after error 100).
ORDER_MESSAGES = frozenset(
    {
        3,  # placeOrder
        4,  # cancelOrder
        5,  # reqOpenOrders
        7,  # reqExecutions
        8,  # reqIds
        15,  # reqAutoOpenOrders
        16,  # reqAllOpenOrders
        58,  # reqGlobalCancel
        49,  # reqCurrentTime: the clock's sync and the breaker's probe time the Gateway, not our queue
        61,  # reqPositions
        71,  # startApi
        99,  # reqCompletedOrders
    }
)
# Bars before quotes: every symbol's data rides on them, while a quote request serves one
# entry that a late bar would spoil anyway. At 100 symbols a closing minute brings many entries
# at once, and their quote traffic must not hold a backfill or a stream behind it.
BAR_MESSAGES = frozenset(
    {
        20,  # reqHistoricalData
        25,  # cancelHistoricalData
        50,  # reqRealTimeBars
        51,  # cancelRealTimeBars
    }
)
ORDERS, BARS, DATA = 0, 1, 2
CLASS_NAMES = ("orders", "bars", "data")


def message_class(msg: str) -> int:
    """ORDERS, BARS or DATA, from a serialized request's message id."""
    head = msg.split("\0", 1)[0]
    if not head.isdigit():
        return DATA
    msg_id = int(head)
    return ORDERS if msg_id in ORDER_MESSAGES else BARS if msg_id in BAR_MESSAGES else DATA


# The share of the configured rate kept after an error 100: 45 a second becomes 30, which with
# a burst of 4 forgives a Gateway that reads half a second late (30 * 1.5 + 4 < 50).
AFTER_VIOLATION = 2 / 3


@dataclass
class MessageGate:
    """IB's message-rate rule (50 messages a second), kept at the client with room to spare.

    A token bucket: at most `burst` messages at once, then `rate` a second. Any one second
    carries at most burst + rate messages (49 by default), evenly: ib_async's own throttle
    allows its whole per-second quota at once, twice within a few milliseconds at a second's
    edge. A Gateway that reads late sees messages bunched: sent at r a second with a burst b,
    any second of its reading holds r * (1 + stall) + b of them, so 30 + 10 forgives a 0.3 s
    stall and 45 + 4 almost none (error 100 then slows the gate, see `back_off`). Orders wait
    in their own queue and always go first, then bars, then the rest; within a class, messages
    keep their order.
    """

    rate: float = 45.0
    burst: int = 4
    tokens: float = field(init=False)
    stamp: float | None = field(default=None, init=False)
    queues: tuple[deque[str], ...] = field(init=False)
    # After IB's error 100 (over the rate): half the rate, one message at a time, until then.
    slow_until: float = field(default=float("-inf"), init=False)
    # Once the Gateway has said error 100, it reads late at times (a stall, a collection): for
    # the rest of the run, reconnects included, the gate keeps AFTER_VIOLATION of its rate.
    violated: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)
        self.queues = (deque(), deque(), deque())

    def _pace(self, now: float) -> tuple[float, float]:
        """(rate, burst) at `now`."""
        if now < self.slow_until:
            return self.rate / 2, 1.0
        return self.rate * (AFTER_VIOLATION if self.violated else 1.0), float(self.burst)

    def back_off(self, now: float, seconds: float = 60.0) -> None:
        """The Gateway counted more than its 50 a second (error 100): it reads our messages later
        and more bunched than the gate allowed for, and a third violation ends the session. One
        second of silence, so its window empties, then half the rate for `seconds`, then
        AFTER_VIOLATION of it for good."""
        self.slow_until = now + seconds
        self.violated = True
        rate, _ = self._pace(now)
        self.tokens, self.stamp = -rate, now  # a second before the next message goes

    def offer(self, msg: str, now: float) -> list[str]:
        """Queue one message; returns the messages that may be sent now, in order."""
        self.queues[message_class(msg)].append(msg)
        return self.take(now)

    def take(self, now: float) -> list[str]:
        """The queued messages that may be sent now, orders first."""
        rate, burst = self._pace(now)
        if self.stamp is not None:
            self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        out: list[str] = []
        while self.tokens >= 1.0:
            queue = next((q for q in self.queues if q), None)
            if queue is None:
                break
            out.append(queue.popleft())
            self.tokens -= 1.0
        return out

    def backlog_s(self, now: float) -> float:
        """Seconds a message offered now would wait here: a request's timeout starts when it
        leaves, not while it queues behind a cold start's (that is our queue, not the Gateway)."""
        rate, burst = self._pace(now)
        tokens = self.tokens
        if self.stamp is not None:
            tokens = min(burst, tokens + (now - self.stamp) * rate)
        return max(0.0, (sum(len(q) for q in self.queues) + 1 - tokens) / rate)

    def wait(self) -> float | None:
        """Seconds until the next queued message may go; None when nothing waits."""
        if not any(self.queues):
            return None
        rate, _ = self._pace(self.stamp if self.stamp is not None else float("-inf"))
        return max(0.0, (1.0 - self.tokens) / rate)

    def depth(self, cls: int) -> int:
        return len(self.queues[cls])

    def clear(self) -> int:
        """The connection is gone: what was queued for it is dropped (as ib_async does)."""
        dropped = sum(len(q) for q in self.queues)
        for q in self.queues:
            q.clear()
        self.tokens, self.stamp = float(self.burst), None
        self.slow_until = float("-inf")  # a new session starts with an empty window
        # (`violated` stays: it is the Gateway's habit, not the session's)
        return dropped

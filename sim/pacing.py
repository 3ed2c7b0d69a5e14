"""IB's request limits as pure rule classes over an injectable monotonic clock, and their violation counts."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Hashable
from enum import Enum

from sim.config import PacingOptions

Monotonic = Callable[[], float]

# Rule names: the keys of the violation counts.
HIST_IDENTICAL = "historical_identical"
HIST_BURST = "historical_burst"
HIST_WINDOW = "historical_window"
MESSAGE_RATE = "message_rate"
MESSAGE_RATE_DISCONNECT = "message_rate_disconnect"
MARKET_DATA_LINES = "market_data_lines"
OPEN_HISTORICAL = "open_historical"

HIST_PACING_TEXT = (
    "Historical Market Data Service error message:Historical data request pacing violation"
)
OPEN_HISTORICAL_TEXT = (
    "Historical Market Data Service error message:"
    "Max number of simultaneous historical data requests ({limit}) has been exceeded"
)
LINES_TEXT = "Max number of tickers has been reached"


def message_rate_text(limit: int, received: int, violations: int) -> str:
    return f"Max rate of messages per second has been exceeded:max={limit} rec={received} ({violations})"


class HistoricalPacing:
    """The three historical-data rules; `check` answers which one a request breaks, or records it.

    A request breaks a rule when, counting only the requests that were answered before it:
    an identical one came less than `identical_seconds` ago; `burst_count - 1` or more for the same
    contract, exchange and tick type came less than `burst_seconds` ago (so it would be the
    `burst_count`th); or the weights in the last `window_seconds` plus its own exceed `window_count`.
    Refused requests are not recorded, so a client that backs off recovers once the window passes.
    """

    def __init__(
        self,
        identical_seconds: float = 15.0,
        burst_count: int = 6,
        burst_seconds: float = 2.0,
        window_count: int = 60,
        window_seconds: float = 600.0,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.identical_seconds = float(identical_seconds)
        self.burst_count = int(burst_count)
        self.burst_seconds = float(burst_seconds)
        self.window_count = int(window_count)
        self.window_seconds = float(window_seconds)
        self._monotonic = monotonic
        self._identical: dict[Hashable, float] = {}
        self._bursts: dict[Hashable, deque[tuple[float, int]]] = {}
        self._window: deque[tuple[float, int]] = deque()
        self._window_weight = 0

    def check(self, identical_key: Hashable, contract_key: Hashable, weight: int = 1) -> str | None:
        """The rule this request breaks (and nothing is recorded), or None (and it is recorded)."""
        now = self._monotonic()
        self._prune(now)
        last = self._identical.get(identical_key)
        if last is not None and now - last < self.identical_seconds:
            return HIST_IDENTICAL
        burst = self._bursts.get(contract_key)
        recent = sum(w for _, w in burst) if burst else 0
        if recent + weight >= self.burst_count:
            return HIST_BURST
        if self._window_weight + weight > self.window_count:
            return HIST_WINDOW
        self._identical[identical_key] = now
        self._bursts.setdefault(contract_key, deque()).append((now, weight))
        self._window.append((now, weight))
        self._window_weight += weight
        return None

    def _prune(self, now: float) -> None:
        while self._window and now - self._window[0][0] >= self.window_seconds:
            self._window_weight -= self._window.popleft()[1]
        for key in list(self._bursts):
            q = self._bursts[key]
            while q and now - q[0][0] >= self.burst_seconds:
                q.popleft()
            if not q:
                del self._bursts[key]
        if len(self._identical) > 256:
            self._identical = {
                k: t for k, t in self._identical.items() if now - t < self.identical_seconds
            }


class RateVerdict(Enum):
    OK = "ok"
    # Over the limit within a violation already reported: dropped without another error.
    DROP = "drop"
    # Over the limit: dropped, and the client gets error 100.
    VIOLATION = "violation"
    # The violation that ends the session.
    DISCONNECT = "disconnect"


class MessageRate:
    """Messages per second on one connection: at most `limit` accepted in any `window` seconds.

    The first message over the limit is a violation (error 100); further excess messages within
    `window` seconds of it belong to the same violation and are dropped silently, so a burst costs
    one violation and a flood costs one per second. The `max_violations`th violation disconnects.
    """

    def __init__(
        self,
        limit: int = 50,
        window: float = 1.0,
        max_violations: int = 3,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.limit = int(limit)
        self.window = float(window)
        self.max_violations = int(max_violations)
        self.violations = 0
        self.received_in_window = 0
        self._monotonic = monotonic
        self._accepted: deque[float] = deque()
        self._last_violation: float | None = None

    def check(self, now: float | None = None) -> RateVerdict:
        """One message, received at `now` (monotonic seconds; by default, this moment)."""
        now = self._monotonic() if now is None else now
        while self._accepted and now - self._accepted[0] >= self.window:
            self._accepted.popleft()
        if len(self._accepted) < self.limit:
            self._accepted.append(now)
            self.received_in_window = len(self._accepted)
            return RateVerdict.OK
        self.received_in_window += 1
        if self._last_violation is not None and now - self._last_violation < self.window:
            return RateVerdict.DROP
        self._last_violation = now
        self.violations += 1
        if self.violations >= self.max_violations:
            return RateVerdict.DISCONNECT
        return RateVerdict.VIOLATION


class Pacing:
    """The simulator's pacing state: one historical pacer, per-connection message rates, limits and counts."""

    def __init__(
        self, options: PacingOptions | None = None, monotonic: Monotonic = time.monotonic
    ) -> None:
        self.monotonic = monotonic
        self.violations: Counter[str] = Counter()
        self.configure(options or PacingOptions())

    def configure(self, options: PacingOptions) -> None:
        """Apply new limits; the historical windows start afresh."""
        self.options = options
        self.historical = HistoricalPacing(
            options.hist_identical_seconds,
            options.hist_burst_count,
            options.hist_burst_seconds,
            options.hist_window_count,
            options.hist_window_seconds,
            monotonic=self.monotonic,
        )

    def on(self, rule: str) -> bool:
        return self.options.rule_on(rule)

    def new_message_rate(self) -> MessageRate:
        o = self.options
        return MessageRate(
            o.max_messages_per_second,
            1.0 - o.message_rate_jitter_seconds,
            o.disconnect_after_violations,
            monotonic=self.monotonic,
        )

    def historical_applies(self, bar_seconds: int | str | None) -> bool:
        if not self.on("historical"):
            return False
        limit = self.options.hist_max_bar_seconds
        if not limit:
            return True
        return isinstance(bar_seconds, int) and bar_seconds <= limit

    def check_historical(
        self, identical_key: Hashable, contract_key: Hashable, weight: int = 1
    ) -> str | None:
        rule = self.historical.check(identical_key, contract_key, weight)
        if rule is not None:
            self.violations[rule] += 1
        return rule

    def lines_allow(self, in_use: int) -> bool:
        """Whether one more streaming line fits; counts a violation when it does not."""
        if not self.on("market_data_lines") or in_use < self.options.max_market_data_lines:
            return True
        self.violations[MARKET_DATA_LINES] += 1
        return False

    def open_full(self, open_now: int) -> bool:
        """Whether the open historical requests leave no room for one more."""
        return self.on("open_historical") and open_now >= self.options.max_open_historical

    def record(self, rule: str) -> None:
        self.violations[rule] += 1

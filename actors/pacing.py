"""Pure pacing arithmetic for IB's historical-data rules: how long a request must wait."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


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
        for times in (identical, by_contract, self._all):
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

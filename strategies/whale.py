"""The whale rule: a 60-minute close beyond the prior N-session range on a volume spike, debounced."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from strategies.bars import Bar, bar_problem
from strategies.signals import Direction, Signal, clip01, hold


@dataclass(frozen=True, slots=True)
class WhaleParams:
    lookback_days: int = 20
    volume_multiple: float = 1.5
    debounce_days: int = 3
    # A close this far beyond the level (fraction of the level) earns the full breakout score.
    full_breakout_pct: float = 0.005

    def __post_init__(self) -> None:
        if int(self.lookback_days) != self.lookback_days or self.lookback_days < 1:
            raise ValueError("lookback_days must be a positive integer")
        if not self.volume_multiple > 0.0:
            raise ValueError("volume_multiple must be positive")
        if self.debounce_days < 0:
            raise ValueError("debounce_days must not be negative")
        if not self.full_breakout_pct > 0.0:
            raise ValueError("full_breakout_pct must be positive")


@dataclass(frozen=True, slots=True)
class SessionStats:
    """High, low and 60-minute volume of one complete session."""

    session_date: date
    high: float
    low: float
    volume: float
    bars: int


class WhaleStrategy:
    """Whale breakouts on closed 60-minute bars for one symbol.

    The range is the highest high and lowest low of the previous `lookback_days` COMPLETE
    sessions; a session is complete once a bar of a later `session_date` arrives, so the
    current session never counts. The average volume is the mean 60-minute bar volume over
    those sessions (total volume / bar count).

    CALL when close > range high and volume > volume_multiple * average; PUT when
    close < range low with the same spike. At most one signal per `debounce_days`: a
    breakout is HOLD "debounced until T" while bar.time - last_fired < debounce_days * 24 h
    (elapsed calendar time between bar start times, not trading sessions). Firing on a live
    bar sets `self.last_fired = bar.time`; the caller persists it and passes it back at start.
    A breakout in history (`live=False`) is reported but never traded, so it debounces nothing.

    Confidence (0 for HOLD), with ratio = volume / average and beyond = how far the close
    is past the level as a fraction of it:
        0.5 + 0.25 * clip((ratio - multiple) / multiple, 0, 1)
            + 0.25 * clip(beyond / full_breakout_pct, 0, 1)

    Feed it from the start of a session: a first session that begins mid-day counts as a
    complete session with a narrower range.
    """

    def __init__(
        self,
        symbol: str,
        params: WhaleParams | None = None,
        last_fired: datetime | None = None,
    ) -> None:
        if last_fired is not None and last_fired.utcoffset() is None:
            raise ValueError("last_fired must be tz-aware (UTC)")
        self.symbol = symbol
        self.params = params if params is not None else WhaleParams()
        self.last_fired = last_fired
        self.last_bar: Bar | None = None
        self._sessions: deque[SessionStats] = deque(maxlen=self.params.lookback_days)
        self._current: SessionStats | None = None
        # Cached over the complete sessions; recomputed once per session roll-over.
        self._range_high = float("nan")
        self._range_low = float("nan")
        self._avg_volume = float("nan")

    @property
    def sessions_complete(self) -> int:
        return len(self._sessions)

    @property
    def ready(self) -> bool:
        return len(self._sessions) >= self.params.lookback_days

    @property
    def range_high(self) -> float | None:
        return self._range_high if self.ready else None

    @property
    def range_low(self) -> float | None:
        return self._range_low if self.ready else None

    @property
    def avg_volume(self) -> float | None:
        return self._avg_volume if self.ready else None

    def debounced_until(self) -> datetime | None:
        if self.last_fired is None or self.params.debounce_days == 0:
            return None
        return self.last_fired + timedelta(days=self.params.debounce_days)

    def on_bar(self, bar: Bar, session_date: date, live: bool = True) -> Signal:
        problem = bar_problem(bar, self.last_bar)
        if problem is None and self._current is not None:
            if session_date < self._current.session_date:
                problem = "session_out_of_order"
        if problem is not None:
            return hold("whale", self.symbol, bar.time, bar.close, f"rejected bar: {problem}")
        self.last_bar = bar
        self._add(bar, session_date)

        p = self.params
        if not self.ready:
            return hold(
                "whale",
                self.symbol,
                bar.time,
                bar.close,
                f"warming up: {len(self._sessions)}/{p.lookback_days} sessions",
            )

        n = p.lookback_days
        high, low, avg = self._range_high, self._range_low, self._avg_volume
        close = bar.close
        if close > high:
            direction, level = Direction.CALL, high
            level_fact = f"close {close:.2f} > {n}d high {high:.2f}"
        elif close < low:
            direction, level = Direction.PUT, low
            level_fact = f"close {close:.2f} < {n}d low {low:.2f}"
        else:
            direction, level = None, float("nan")
            level_fact = f"no breakout: close {close:.2f} within [{low:.2f}, {high:.2f}]"

        if avg > 0.0:
            ratio = bar.volume / avg
            spike = ratio > p.volume_multiple
            op = ">" if spike else "<="
            volume_fact = f"volume {ratio:.2f}x {op} {p.volume_multiple:g}x (avg {avg:,.0f})"
        else:
            ratio, spike = float("nan"), False
            volume_fact = f"volume: no average, {n}d window traded 0"

        reasons = [level_fact, volume_fact]
        if direction is None:
            return hold("whale", self.symbol, bar.time, close, *reasons)
        if not spike:
            return hold("whale", self.symbol, bar.time, close, *reasons, "hold: no volume spike")
        until = self.debounced_until()
        if until is not None and bar.time < until:
            return hold(
                "whale",
                self.symbol,
                bar.time,
                close,
                *reasons,
                f"debounced until {until.isoformat()} (last fired {self.last_fired.isoformat()})",
            )

        volume_score = clip01((ratio - p.volume_multiple) / p.volume_multiple)
        breakout_score = clip01(abs(close - level) / level / p.full_breakout_pct)
        confidence = clip01(0.5 + 0.25 * volume_score + 0.25 * breakout_score)
        if live:
            self.last_fired = bar.time
        return Signal(
            kind="whale",
            symbol=self.symbol,
            direction=direction,
            confidence=confidence,
            reasons=(
                *reasons,
                f"{direction.value}: {'breakout' if direction is Direction.CALL else 'breakdown'}"
                f" on volume spike",
                f"confidence {confidence:.2f}: volume {volume_score:.2f}, breakout {breakout_score:.2f}",
            ),
            bar_time=bar.time,
            price=close,
        )

    def _add(self, bar: Bar, session_date: date) -> None:
        cur = self._current
        if cur is not None and session_date > cur.session_date:
            self._sessions.append(cur)
            self._recompute()
            cur = None
        if cur is None:
            self._current = SessionStats(session_date, bar.high, bar.low, bar.volume, 1)
        else:
            self._current = SessionStats(
                session_date,
                max(cur.high, bar.high),
                min(cur.low, bar.low),
                cur.volume + bar.volume,
                cur.bars + 1,
            )

    def _recompute(self) -> None:
        sessions = self._sessions
        self._range_high = max(s.high for s in sessions)
        self._range_low = min(s.low for s in sessions)
        bars = sum(s.bars for s in sessions)
        self._avg_volume = sum(s.volume for s in sessions) / bars if bars else float("nan")

"""The 1-minute scalp rule: EMA fast/slow trend, close against session VWAP, RSI band."""

from __future__ import annotations

from dataclasses import dataclass

from strategies.bars import Bar, bar_problem
from strategies.indicators import EMA, RSI, SessionVWAP
from strategies.signals import Direction, Signal, clip01, hold


@dataclass(frozen=True, slots=True)
class ScalpParams:
    rsi_period: int = 14
    ema_fast: int = 8
    ema_slow: int = 21
    rsi_buy_min: float = 45.0
    rsi_buy_max: float = 70.0
    rsi_sell_below: float = 40.0
    min_bars: int = 30
    # EMA gap (as a fraction of price) that earns the full trend score; 0.1% of SPY is ~$0.68,
    # a strong trend on 1-minute bars.
    full_gap_pct: float = 0.001

    def __post_init__(self) -> None:
        for name in ("rsi_period", "ema_fast", "ema_slow", "min_bars"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.ema_fast >= self.ema_slow:
            raise ValueError("ema_fast must be smaller than ema_slow")
        if not (0.0 <= self.rsi_buy_min <= self.rsi_buy_max <= 100.0):
            raise ValueError("need 0 <= rsi_buy_min <= rsi_buy_max <= 100")
        if not (0.0 <= self.rsi_sell_below <= 100.0):
            raise ValueError("rsi_sell_below must be in [0, 100]")
        if not self.full_gap_pct > 0.0:
            raise ValueError("full_gap_pct must be positive")

    @property
    def warmup_bars(self) -> int:
        """Bars before the first signal: min_bars, but never before every indicator is ready."""
        return max(self.min_bars, self.ema_slow, self.rsi_period + 1)


class Cooldown:
    """At most one scalp idea per `bars` 1-minute bars: an idea inside the cooldown is suppressed.

    Every bar the scalp rule sees counts (backfill included), so a service that starts with
    history has no cooldown left to sit out; before the first idea there is none at all."""

    def __init__(self, bars: int) -> None:
        if bars < 0:
            raise ValueError("cooldown bars must not be negative")
        self.bars = bars
        self.since_idea = 10**9  # no idea yet: the cooldown does not apply

    def on_bar(self) -> None:
        self.since_idea += 1

    @property
    def cooling(self) -> bool:
        return self.since_idea < self.bars

    def admit(self) -> bool:
        """True lets an idea out (and restarts the cooldown); False suppresses it."""
        if self.cooling:
            return False
        self.since_idea = 0
        return True


class ScalpStrategy:
    """Scalp rules on closed 1-minute bars for one symbol.

    CALL when ema_fast > ema_slow, close > session VWAP and rsi_buy_min <= RSI <= rsi_buy_max.
    PUT when ema_fast < ema_slow or RSI < rsi_sell_below. Otherwise HOLD, with the failing
    conditions in the reasons. Should both rules match (possible only when rsi_sell_below
    > rsi_buy_min) the signal is HOLD "conflict", never a guess.

    EMA and RSI run continuously across sessions; only the VWAP resets with `session_key`.
    Bars that fail `bar_problem` are HOLD "rejected bar: <reason>" and change no state.

    Confidence (0 for HOLD), with gap = |ema_fast - ema_slow| / close:
        trend = clip(gap / full_gap_pct, 0, 1) if the EMAs point the signal's way, else 0
        rsi   = CALL: (RSI - rsi_buy_min) / (rsi_buy_max - rsi_buy_min)
                PUT:  (rsi_buy_min - RSI) / (rsi_buy_max - rsi_buy_min)   (same band width)
        confidence = clip(0.5 * trend + 0.5 * clip(rsi, 0, 1), 0, 1)
    A PUT on the RSI branch alone (EMAs still up) therefore tops out at 0.5.
    """

    def __init__(self, symbol: str, params: ScalpParams | None = None) -> None:
        self.symbol = symbol
        self.params = params if params is not None else ScalpParams()
        self.ema_fast = EMA(self.params.ema_fast)
        self.ema_slow = EMA(self.params.ema_slow)
        self.rsi = RSI(self.params.rsi_period)
        self.vwap = SessionVWAP()
        self.bars_seen = 0
        self.last_bar: Bar | None = None

    def on_bar(self, bar: Bar, session_key: object) -> Signal:
        p = self.params
        problem = bar_problem(bar, self.last_bar)
        if problem is not None:
            return hold(
                "scalp",
                self.symbol,
                bar.time,
                bar.close,
                f"rejected bar: {problem}",
                *self._indicator_reasons(bar.close),
            )
        self.last_bar = bar
        self.bars_seen += 1
        self.ema_fast.update(bar.close)
        self.ema_slow.update(bar.close)
        self.rsi.update(bar.close)
        self.vwap.update(bar, session_key)

        ready = self.ema_fast.ready and self.ema_slow.ready and self.rsi.ready
        if self.bars_seen < p.warmup_bars or not ready:
            return hold(
                "scalp",
                self.symbol,
                bar.time,
                bar.close,
                f"warming up: {self.bars_seen}/{p.warmup_bars} bars",
                *self._indicator_reasons(bar.close),
            )
        return self._decide(bar)

    def _decide(self, bar: Bar) -> Signal:
        p = self.params
        fast, slow, rsi, vwap = (
            self.ema_fast.value,
            self.ema_slow.value,
            self.rsi.value,
            self.vwap.value,
        )
        # on_bar only gets here once every indicator is ready; this narrows the types.
        assert fast is not None and slow is not None and rsi is not None and vwap is not None
        close = bar.close
        facts = self._indicator_reasons(close)
        fname, sname = f"ema{p.ema_fast}", f"ema{p.ema_slow}"

        in_band = p.rsi_buy_min <= rsi <= p.rsi_buy_max
        call = fast > slow and close > vwap and in_band
        put_ema = fast < slow
        put_rsi = rsi < p.rsi_sell_below
        put = put_ema or put_rsi

        if call and put:
            return hold(
                "scalp",
                self.symbol,
                bar.time,
                close,
                *facts,
                f"hold: conflict, call and put rules both match "
                f"(rsi_sell_below {p.rsi_sell_below:g} > rsi_buy_min {p.rsi_buy_min:g})",
            )

        gap = abs(fast - slow) / close
        trend_full = clip01(gap / p.full_gap_pct)
        width = p.rsi_buy_max - p.rsi_buy_min
        if call:
            trend = trend_full
            rsi_score = clip01((rsi - p.rsi_buy_min) / width) if width > 0 else 1.0
            direction = Direction.CALL
            why = f"call: {fname} > {sname}, close > vwap, rsi in [{p.rsi_buy_min:g}, {p.rsi_buy_max:g}]"
        elif put:
            trend = trend_full if put_ema else 0.0
            rsi_score = clip01((p.rsi_buy_min - rsi) / width) if width > 0 else float(put_rsi)
            direction = Direction.PUT
            parts = []
            if put_ema:
                parts.append(f"{fname} < {sname}")
            if put_rsi:
                parts.append(f"rsi < {p.rsi_sell_below:g}")
            why = "put: " + " and ".join(parts)
        else:
            failing = []
            if fast == slow:
                failing.append(f"{fname} == {sname}")
            if close <= vwap:
                failing.append("close <= vwap")
            if rsi > p.rsi_buy_max:
                failing.append(f"rsi above {p.rsi_buy_max:g} (overbought)")
            elif rsi < p.rsi_buy_min:
                failing.append(f"rsi between {p.rsi_sell_below:g} and {p.rsi_buy_min:g}")
            return hold(
                "scalp", self.symbol, bar.time, close, *facts, "hold: " + "; ".join(failing)
            )

        confidence = clip01(0.5 * trend + 0.5 * rsi_score)
        return Signal(
            kind="scalp",
            symbol=self.symbol,
            direction=direction,
            confidence=confidence,
            reasons=(
                *facts,
                why,
                f"confidence {confidence:.2f}: trend {trend:.2f}, rsi {rsi_score:.2f}",
            ),
            bar_time=bar.time,
            price=close,
        )

    def _indicator_reasons(self, close: float) -> tuple[str, ...]:
        p = self.params
        fast, slow, rsi, vwap = (
            self.ema_fast.value,
            self.ema_slow.value,
            self.rsi.value,
            self.vwap.value,
        )
        fname, sname = f"ema{p.ema_fast}", f"ema{p.ema_slow}"
        out = []
        if fast is None or slow is None:
            out.append(f"{fname} {_fmt(fast)}, {sname} {_fmt(slow)}")
        else:
            out.append(f"{fname} {fast:.2f} {_cmp(fast, slow)} {sname} {slow:.2f}")
        if vwap is None:
            out.append(f"close {close:.2f}, vwap n/a")
        else:
            out.append(f"close {close:.2f} {_cmp(close, vwap)} vwap {vwap:.2f}")
        if rsi is None:
            out.append("rsi n/a")
        elif rsi < p.rsi_sell_below:
            out.append(f"rsi {rsi:.1f} < {p.rsi_sell_below:g}")
        elif rsi < p.rsi_buy_min:
            out.append(f"rsi {rsi:.1f} < {p.rsi_buy_min:g}")
        elif rsi > p.rsi_buy_max:
            out.append(f"rsi {rsi:.1f} > {p.rsi_buy_max:g}")
        else:
            out.append(f"rsi {rsi:.1f} in [{p.rsi_buy_min:g}, {p.rsi_buy_max:g}]")
        return tuple(out)


def _cmp(a: float, b: float) -> str:
    return ">" if a > b else "<" if a < b else "=="


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"

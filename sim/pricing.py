"""Pure option-pricing helpers: Black-Scholes price and greeks, option tick sizes and tick rounding."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from scipy.special import ndtr

from sim.listed import LISTED

# Penny-pilot ETFs quote options in pennies at every price.
PENNY_EVERYWHERE = frozenset({"SPY", "QQQ", "IWM"})
# The Penny Interval Program (Cboe, "Penny Interval Program" classes, reviewed twice a year) covers
# every listed name in sim/listed.py: $0.01 under $3, $0.05 from $3. Classes outside it quote
# $0.05 under $3 and $0.10 from $3 (Cboe Rule 5.4, minimum increments for options).
PENNY_PROGRAM = frozenset(s for s, e in LISTED.items() if e.kind != "IND")

RoundMode = Literal["down", "up", "nearest"]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True, slots=True)
class Greeks:
    """Delta and gamma per share, vega per 1 vol point (0.01), theta per calendar day (IB conventions)."""

    delta: float
    gamma: float
    vega: float
    theta: float


def _norm_cdf(x: float) -> float:
    # scipy.special.ndtr is the kernel behind scipy.stats.norm.cdf without its ~50 us per-call overhead,
    # which matters when a whole chain is quoted on every tick.
    return float(ndtr(x))


def _norm_pdf(x: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


def normalize_right(right: str) -> str:
    """Map "C"/"CALL"/"P"/"PUT" (any case) to "C" or "P"."""
    r = str(right).strip().upper()
    if r in ("C", "CALL"):
        return "C"
    if r in ("P", "PUT"):
        return "P"
    raise ValueError(f"right must be 'C' or 'P', got {right!r}")


def _check_inputs(spot: float, strike: float) -> None:
    if not (spot > 0.0 and math.isfinite(spot)):
        raise ValueError(f"spot must be positive and finite, got {spot!r}")
    if not (strike > 0.0 and math.isfinite(strike)):
        raise ValueError(f"strike must be positive and finite, got {strike!r}")


def _d1_d2(spot: float, strike: float, t: float, vol: float, rate: float) -> tuple[float, float]:
    sig_sqrt_t = vol * math.sqrt(t)
    d1 = (math.log(spot / strike) + (rate + 0.5 * vol * vol) * t) / sig_sqrt_t
    return d1, d1 - sig_sqrt_t


def black_scholes(
    spot: float, strike: float, t_years: float, vol: float, rate: float, right: str
) -> float:
    """European option value without dividends; intrinsic value once `t_years` <= 0."""
    _check_inputs(spot, strike)
    r = normalize_right(right)
    if t_years <= 0.0:
        return max(spot - strike, 0.0) if r == "C" else max(strike - spot, 0.0)
    disc_k = strike * math.exp(-rate * t_years)
    if vol <= 0.0:
        # Zero vol collapses to the discounted forward payoff.
        return max(spot - disc_k, 0.0) if r == "C" else max(disc_k - spot, 0.0)
    d1, d2 = _d1_d2(spot, strike, t_years, vol, rate)
    if r == "C":
        return spot * _norm_cdf(d1) - disc_k * _norm_cdf(d2)
    return disc_k * _norm_cdf(-d2) - spot * _norm_cdf(-d1)


def greeks(
    spot: float, strike: float, t_years: float, vol: float, rate: float, right: str
) -> Greeks:
    """Black-Scholes greeks; at or past expiry (or zero vol) delta is the payoff's step and the rest are 0."""
    _check_inputs(spot, strike)
    r = normalize_right(right)
    if t_years <= 0.0 or vol <= 0.0:
        fwd_strike = strike if t_years <= 0.0 else strike * math.exp(-rate * t_years)
        itm_call = spot > fwd_strike
        if r == "C":
            delta = 1.0 if itm_call else 0.0
        else:
            delta = -1.0 if spot < fwd_strike else 0.0
        return Greeks(delta=delta, gamma=0.0, vega=0.0, theta=0.0)
    sqrt_t = math.sqrt(t_years)
    d1, d2 = _d1_d2(spot, strike, t_years, vol, rate)
    pdf_d1 = _norm_pdf(d1)
    disc_k = strike * math.exp(-rate * t_years)
    gamma = pdf_d1 / (spot * vol * sqrt_t)
    vega = spot * pdf_d1 * sqrt_t / 100.0
    decay = -spot * pdf_d1 * vol / (2.0 * sqrt_t)
    if r == "C":
        delta = _norm_cdf(d1)
        theta_year = decay - rate * disc_k * _norm_cdf(d2)
    else:
        delta = _norm_cdf(d1) - 1.0
        theta_year = decay + rate * disc_k * _norm_cdf(-d2)
    return Greeks(delta=delta, gamma=gamma, vega=vega, theta=theta_year / 365.0)


def option_tick(symbol: str, price: float) -> float:
    """Minimum option price increment for `symbol` at `price`."""
    sym = symbol.strip().upper()
    if sym in PENNY_EVERYWHERE:
        return 0.01
    if sym in PENNY_PROGRAM:
        return 0.01 if price < 3.0 else 0.05
    return 0.05 if price < 3.0 else 0.10


def _tick_decimals(tick: float) -> int:
    # Enough decimals to print any multiple of the tick exactly, so k*tick float noise is removed.
    for d in range(0, 10):
        if abs(round(tick, d) - tick) < 1e-12:
            return d
    return 10


def round_to_tick(price: float, tick: float, mode: RoundMode = "nearest") -> float:
    """Round `price` to a multiple of `tick`, "down", "up" or "nearest" (halves go up)."""
    if not (tick > 0.0 and math.isfinite(tick)):
        raise ValueError(f"tick must be positive and finite, got {tick!r}")
    if not math.isfinite(price):
        raise ValueError(f"price must be finite, got {price!r}")
    # Rounding the tick count first stops 0.07/0.01 = 7.000000000000001 from becoming 8 ticks up.
    n = round(price / tick, 9)
    if mode == "down":
        k = math.floor(n)
    elif mode == "up":
        k = math.ceil(n)
    elif mode == "nearest":
        k = math.floor(n + 0.5)
    else:
        raise ValueError(f"mode must be 'down', 'up' or 'nearest', got {mode!r}")
    return round(k * tick, _tick_decimals(tick))

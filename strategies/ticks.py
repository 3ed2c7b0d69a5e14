"""Option price ticks: the minimum increment by symbol and premium, and prices rounded onto that grid."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Literal

# Penny Pilot names quoted in $0.01 at every premium; the rest step $0.05 from $3.00 up.
PENNY_ALL_PRICES = frozenset({"SPY", "QQQ", "IWM"})
PENNY_BAND_TOP = 3.00
MIN_PRICE = 0.01

RoundMode = Literal["down", "up", "nearest"]


def tick_size(symbol: str, price: float) -> float:
    """Minimum increment for an option premium `price` on `symbol`'s options.

    SPY, QQQ, IWM: 0.01 at every price; others: 0.01 below 3.00, 0.05 at or above.
    """
    if not math.isfinite(price):
        raise ValueError(f"price must be finite, got {price!r}")
    if symbol.strip().upper() in PENNY_ALL_PRICES:
        return 0.01
    return 0.01 if price < PENNY_BAND_TOP else 0.05


def _decimals(tick: float) -> int:
    exponent = Decimal(repr(tick)).normalize().as_tuple().exponent
    return min(10, max(0, -int(exponent)))


def round_to_tick(price: float, tick: float, mode: RoundMode) -> float:
    """`price` moved onto the `tick` grid: "down" (floor), "up" (ceil) or "nearest" (ties go up).

    Works in whole ticks: the tick count is rounded to 10 decimals first so float noise
    (2.95 / 0.05 = 58.99999999999999) cannot push a price already on the grid one tick
    away, and the result is rounded to the tick's decimals so it prints exactly (2.95, not
    2.9500000000000002).
    """
    if not (math.isfinite(tick) and tick > 0):
        raise ValueError(f"tick must be positive and finite, got {tick!r}")
    if not math.isfinite(price):
        raise ValueError(f"price must be finite, got {price!r}")
    ticks = round(price / tick, 10)
    if mode == "down":
        n = math.floor(ticks)
    elif mode == "up":
        n = math.ceil(ticks)
    elif mode == "nearest":
        n = math.floor(ticks + 0.5)
    else:
        raise ValueError(f"mode must be 'down', 'up' or 'nearest', got {mode!r}")
    return round(n * tick, _decimals(tick))


def on_grid(symbol: str, price: float) -> bool:
    """True when `price` is a whole number of ticks at its own tick size."""
    tick = tick_size(symbol, price)
    return abs(price / tick - round(price / tick)) < 1e-6


def entry_limit(symbol: str, bid: float, ask: float) -> float:
    """A buy limit at the mid rounded UP to the tick at the mid, never above the ask.

    Rounding up can only cross the ask when the ask itself is off the grid; then the ask
    rounded down to its tick is used. Raises ValueError on a non-finite, non-positive or
    crossed quote, which `choose_option` has already rejected.
    """
    if not (math.isfinite(bid) and math.isfinite(ask)):
        raise ValueError(f"bid and ask must be finite, got {bid!r} / {ask!r}")
    if bid <= 0 or ask < bid:
        raise ValueError(f"need 0 < bid <= ask, got {bid!r} / {ask!r}")
    mid = (bid + ask) / 2.0
    limit = round_to_tick(mid, tick_size(symbol, mid), "up")
    if limit > ask:
        limit = round_to_tick(ask, tick_size(symbol, ask), "down")
    if limit < MIN_PRICE:
        raise ValueError(f"ask {ask!r} is below the minimum price {MIN_PRICE}")
    return limit


def bracket_prices(
    symbol: str, entry: float, take_profit_pct: float, stop_loss_pct: float
) -> tuple[float, float]:
    """(take_profit, stop) around a filled or limit `entry` price.

    take_profit = entry * (1 + take_profit_pct) rounded UP and stop = entry * (1 -
    stop_loss_pct) rounded DOWN, each with the tick at the resulting price (a $2.98 entry
    with 50% lands at 4.47 -> 4.50 in the $0.05 band for non-penny names). The take-profit
    is at least the next tick above entry; the stop is at least $0.01. Guarantees
    stop < entry < take_profit; raises ValueError when no stop fits below the entry.
    """
    if not (math.isfinite(entry) and entry > 0):
        raise ValueError(f"entry must be positive and finite, got {entry!r}")
    if not (math.isfinite(take_profit_pct) and take_profit_pct > 0):
        raise ValueError(f"take_profit_pct must be positive, got {take_profit_pct!r}")
    if not (math.isfinite(stop_loss_pct) and 0 < stop_loss_pct < 1):
        raise ValueError(f"stop_loss_pct must be in (0, 1), got {stop_loss_pct!r}")

    raw_tp = entry * (1.0 + take_profit_pct)
    take_profit = round_to_tick(raw_tp, tick_size(symbol, raw_tp), "up")
    next_up = entry + tick_size(symbol, entry)
    take_profit = max(take_profit, round_to_tick(next_up, tick_size(symbol, next_up), "up"))

    raw_stop = entry * (1.0 - stop_loss_pct)
    stop = max(MIN_PRICE, round_to_tick(raw_stop, tick_size(symbol, raw_stop), "down"))
    if not stop < entry:
        raise ValueError(f"entry {entry!r} is too low for a stop one tick below it")
    return take_profit, stop

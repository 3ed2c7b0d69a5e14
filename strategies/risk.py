"""Pure risk guards for the RiskActor: the daily loss limit and the entry caps, each failing closed."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

# Money compared in dollars; a nano-dollar of float noise must not flip a guard.
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class RiskLimits:
    max_daily_loss_pct: float = 0.02
    max_open_positions: int = 3
    max_contracts_per_order: int = 10
    max_premium_per_trade: float = 2000.0
    max_exposure_per_symbol: float = 5000.0
    pdt_equity_threshold: float = 25000.0
    max_day_trades_5d: int = 3

    def __post_init__(self) -> None:
        if not (0 < self.max_daily_loss_pct <= 1):
            raise ValueError("max_daily_loss_pct must be in (0, 1]")
        for name in ("max_open_positions", "max_contracts_per_order", "max_day_trades_5d"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("max_premium_per_trade", "max_exposure_per_symbol", "pdt_equity_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and not negative")


def daily_loss_breached(
    start_of_day_equity: float, equity: float, max_daily_loss_pct: float
) -> bool:
    """True once equity has fallen by max_daily_loss_pct of the start-of-day equity or more.

    Fails closed: a non-finite or non-positive start-of-day equity, a non-finite equity or
    a limit outside (0, 1] count as breached, because trading on an unknown loss is the
    riskier mistake; the caller shows why via `daily_loss_reason`.
    """
    return daily_loss_reason(start_of_day_equity, equity, max_daily_loss_pct) is not None


def daily_loss_reason(
    start_of_day_equity: float, equity: float, max_daily_loss_pct: float
) -> str | None:
    """The reason `daily_loss_breached` is True, or None."""
    if not (math.isfinite(start_of_day_equity) and start_of_day_equity > 0):
        return f"daily_loss: start-of-day equity unknown ({start_of_day_equity!r})"
    if not math.isfinite(equity):
        return f"daily_loss: equity unknown ({equity!r})"
    if not (math.isfinite(max_daily_loss_pct) and 0 < max_daily_loss_pct <= 1):
        return f"daily_loss: limit {max_daily_loss_pct!r} outside (0, 1]"
    loss = start_of_day_equity - equity
    limit = start_of_day_equity * max_daily_loss_pct
    if loss >= limit - _EPS:
        return (
            f"daily_loss: down ${loss:,.2f} ({loss / start_of_day_equity:.2%}) "
            f">= {max_daily_loss_pct:.2%} of ${start_of_day_equity:,.2f}"
        )
    return None


def check_entry(
    limits: RiskLimits,
    *,
    open_positions: int,
    symbol_exposure: float,
    new_premium_total: float,
    equity: float,
    day_trades_5d: int,
    contracts: int | None = None,
    start_of_day_equity: float | None = None,
) -> str | None:
    """None when a new entry is allowed, else "<cap>: <detail>" for the first cap it hits.

    Caps in order: invalid_input (non-finite or negative numbers, equity <= 0),
    daily_loss (only when start_of_day_equity is given), max_open_positions (open >= cap),
    max_contracts_per_order (only when contracts is given), max_premium_per_trade,
    max_exposure_per_symbol (existing + new > cap), pdt (equity below the threshold and
    day trades in the last 5 business days already at max_day_trades_5d, since the entry
    may become one more day trade).
    """
    numbers = {
        "open_positions": open_positions,
        "symbol_exposure": symbol_exposure,
        "new_premium_total": new_premium_total,
        "equity": equity,
        "day_trades_5d": day_trades_5d,
    }
    if contracts is not None:
        numbers["contracts"] = contracts
    for name, value in numbers.items():
        if not (math.isfinite(value) and value >= 0):
            return f"invalid_input: {name} {value!r}"
    if equity <= 0:
        return f"invalid_input: equity {equity!r}"

    if start_of_day_equity is not None:
        reason = daily_loss_reason(start_of_day_equity, equity, limits.max_daily_loss_pct)
        if reason is not None:
            return reason
    if open_positions >= limits.max_open_positions:
        return f"max_open_positions: {open_positions} open >= {limits.max_open_positions}"
    if contracts is not None and contracts > limits.max_contracts_per_order:
        return f"max_contracts_per_order: {contracts} > {limits.max_contracts_per_order}"
    if new_premium_total > limits.max_premium_per_trade + _EPS:
        return (
            f"max_premium_per_trade: ${new_premium_total:,.2f} > "
            f"${limits.max_premium_per_trade:,.2f}"
        )
    if symbol_exposure + new_premium_total > limits.max_exposure_per_symbol + _EPS:
        return (
            f"max_exposure_per_symbol: ${symbol_exposure:,.2f} + ${new_premium_total:,.2f} > "
            f"${limits.max_exposure_per_symbol:,.2f}"
        )
    if equity < limits.pdt_equity_threshold and day_trades_5d >= limits.max_day_trades_5d:
        return (
            f"pdt: {day_trades_5d} day trades in 5 days with equity ${equity:,.2f} "
            f"< ${limits.pdt_equity_threshold:,.2f}"
        )
    return None


def count_day_trades(fills: Iterable[tuple[object, str, date]], since: date) -> int:
    """Day trades since `since` (inclusive): a contract bought and sold on the same day.

    `fills` are (contract key, side "BOT"/"SLD" or "BUY"/"SELL", New York trading date).
    One contract opened and closed on one day counts once, which is how FINRA's pattern
    day trader rule counts a round trip made of several fills.
    """
    sides: dict[tuple[object, date], set[str]] = {}
    for key, side, day in fills:
        if day < since:
            continue
        sides.setdefault((key, day), set()).add("buy" if side in ("BOT", "BUY") else "sell")
    return sum(1 for s in sides.values() if s == {"buy", "sell"})

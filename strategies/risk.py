"""Pure risk guards for the RiskActor: the daily loss limit and the entry caps, each failing closed."""

from __future__ import annotations

import json
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


# -- the entry gate: everything RiskActor checks before OrderActor looks for an option ---------


def entry_gate(
    *,
    kill_switch: bool,
    may_trade: bool,
    connection_state: str,
    minutes_since_open: float | None,
    minutes_to_close: float | None,
    no_entry_first: int,
    no_entry_last: int,
    stale: bool,
    loss_reason: str | None,
    busy: bool,
    unvouched: str = "",
) -> str | None:
    """The pre-trade checks that need no option price, in order; None means go on.

    `unvouched`: why the database cannot vouch for the broker's state (actors.adoption)."""
    if kill_switch:
        return "kill_switch: entries paused (remove the kill file or run `optionsbot resume`)"
    if unvouched:
        return unvouched
    if not may_trade:
        return f"connection: {connection_state}, no new entries"
    if minutes_since_open is None or minutes_to_close is None:
        return "market_closed: outside regular trading hours"
    if minutes_since_open < no_entry_first:
        return f"opening_window: {minutes_since_open:.0f} min after the open < {no_entry_first}"
    if minutes_to_close < no_entry_last:
        return f"closing_window: {minutes_to_close:.0f} min before the close < {no_entry_last}"
    if stale:
        return "stale_data: no fresh bars for this symbol"
    if loss_reason:
        return loss_reason
    if busy:
        return "busy: an entry for this symbol is already in progress or open"
    return None


def open_positions_reason(open_positions: int, in_flight: int, max_open: int) -> str | None:
    """Approved entries still in flight count as open: each may become a position."""
    if open_positions + in_flight >= max_open:
        return f"max_open_positions: {open_positions} open + {in_flight} pending >= {max_open}"
    return None


@dataclass(frozen=True, slots=True)
class GateInputs:
    """What RiskActor knows when an idea arrives: the inputs of `gate_idea`, nothing else."""

    symbol: str
    stopping: bool
    kill_switch: bool
    unvouched: str
    may_trade: bool
    connection_state: str
    minutes_since_open: float | None
    minutes_to_close: float | None
    stale: bool
    loss_reason: str | None
    in_flight_symbols: tuple[str, ...]  # the symbols of the approvals not yet finished
    exposure: float  # this symbol's exposure, working entries included (OrderActor's figure)
    open_positions: int


# The GateInputs fields entry_gate takes as they are.
_ENTRY_GATE_INPUTS = (
    "kill_switch",
    "unvouched",
    "may_trade",
    "connection_state",
    "minutes_since_open",
    "minutes_to_close",
    "stale",
    "loss_reason",
)


def gate_idea(
    inputs: GateInputs, limits: RiskLimits, no_entry_first: int, no_entry_last: int
) -> str | None:
    """The whole risk gate for one trade idea: None approves it, else the first reason to skip."""
    i = inputs
    if i.stopping:
        return "stopping: the service is shutting down"
    reason = entry_gate(
        **{name: getattr(i, name) for name in _ENTRY_GATE_INPUTS},
        no_entry_first=no_entry_first,
        no_entry_last=no_entry_last,
        busy=i.symbol in i.in_flight_symbols or i.exposure > 0,
    )
    if reason is None:
        reason = open_positions_reason(
            i.open_positions, len(i.in_flight_symbols), limits.max_open_positions
        )
    return reason


def size_reason(
    limits: RiskLimits,
    *,
    contracts: int,
    sizing_reason: str,
    premium: float,
    multiplier: float,
    open_positions: int,
    symbol_exposure: float,
    equity: float,
    start_of_day_equity: float,
    day_trades_5d: int,
) -> str | None:
    """The sizing stage's verdict on a sized entry: None places it, else why not."""
    if contracts <= 0:
        return sizing_reason
    return check_entry(
        limits,
        open_positions=open_positions,
        symbol_exposure=symbol_exposure,
        new_premium_total=contracts * premium * multiplier,
        equity=equity,
        day_trades_5d=day_trades_5d,
        contracts=contracts,
        start_of_day_equity=start_of_day_equity,
    )


def is_measured_loss(loss_reason: str | None) -> bool:
    """A loss actually measured past the limit, not a figure that is unknown for now (a slow
    account answer at start): only the former trips the guard for the day."""
    return bool(loss_reason) and "unknown" not in loss_reason


def guard_newly_tripped(loss_reason: str | None, already_tripped: bool | None) -> bool:
    """Whether to record (and log) the daily loss guard's trip now: once per day, for a
    measured loss only, and only for a day the database knows (`already_tripped` None: no row
    for the day)."""
    return is_measured_loss(loss_reason) and already_tripped is False


def latched_loss_reason(loss_reason: str | None, tripped_today: bool) -> str | None:
    """The guard, latched: once today's loss has tripped it, entries stay refused until the
    next trading day even if equity comes back above the line (a bounce is not a new day)."""
    if loss_reason:
        return loss_reason
    if tripped_today:
        return "daily_loss: tripped earlier today; no new entries until the next trading day"
    return None


def pdt_window_start(session_dates_opened: Iterable[date]) -> date | None:
    """The first day of the pattern-day-trader window: the oldest of the last five sessions
    that have opened (oldest first in the input), or None before any session."""
    dates = list(session_dates_opened)[-5:]
    return dates[0] if dates else None


def kill_file_flatten(text: str) -> bool:
    """Whether the kill file asks to flatten (`optionsbot kill --flatten` writes {"flatten": true});
    anything unreadable means no: the kill switch itself is the file's existence."""
    try:
        return bool(json.loads(text or "{}").get("flatten"))
    except (ValueError, AttributeError):
        return False


def flattens_due(
    minutes_to_close: float | None,
    minutes_by_strategy: Iterable[tuple[str, int]],
    flattened_on: dict[str, date],
    day: date,
) -> list[tuple[str, int]]:
    """The strategies whose positions are to be closed now: once a day each, `minutes` before
    the close; 0 minutes means hold overnight (their exits are GTC at the broker)."""
    if minutes_to_close is None:
        return []
    return [
        (strategy, minutes)
        for strategy, minutes in minutes_by_strategy
        if minutes and minutes_to_close <= minutes and flattened_on.get(strategy) != day
    ]

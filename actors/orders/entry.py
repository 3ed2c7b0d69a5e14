"""The entry saga as pure functions: an approved idea -> candidate contracts from the chain ->
the option chosen from their quotes -> the bracket's legs and the rows written ahead of them.

OrderActor carries each step out (fetch the chain, fetch the quotes, ask RiskActor for a size,
write, send); every decision in between is here, tested without threads.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from actors import messages as m
from actors.hours import MarketHours
from configs.settings import Settings
from storage.repos import iso
from storage.rows import Order
from strategies.options import (
    OptionParams,
    OptionQuoteView,
    choose_expiry,
    choose_option,
    nearest_strikes,
    quote_rejection,
    strikes_to_ask,
    target_strike,
)
from strategies.signals import Direction, Signal
from strategies.ticks import entry_limit

# Time in force by role. Entries are DAY: an entry not filled by the close should die with the
# session. Exits are GTC: the broker keeps protecting the position over the close, a weekend, a
# holiday, or while the service (or the Pi) is down; re-protection by the service is the backstop.
# Checked against IB's TWS API docs: a bracket's legs are separate Orders, each with its own tif
# (interactivebrokers.github.io/tws-api/bracket_order.html); Order.Tif's doc (as mirrored in the
# @stoqey/ib client's tif.js) says GTC works "until it executes or is canceled", but IB still
# cancels GTC orders at the end of the calendar quarter after the one they were placed in, after
# 90 days without a login, and on some corporate actions: the backstop below covers those too.
# ib_async's Order.tif is a plain string sent as is. Options trade in regular hours only and
# outsideRth stays False, so a GTC stop held overnight triggers at the next session.
TIF = {"entry": "DAY", "take_profit": "GTC", "stop_loss": "GTC", "exit": "GTC"}

# Our orderRef suffixes -> role: "<bracket>-E", "<bracket>-TP", "<bracket>-SL".
ROLES = {"E": "entry", "TP": "take_profit", "SL": "stop_loss"}


def option_params(settings: Settings) -> OptionParams:
    o = settings.options
    return OptionParams(
        moneyness=o.moneyness,
        strike_count=o.strike_count,
        min_dte=o.min_dte,
        allow_expiry_day=o.allow_expiry_day,
        min_volume=o.min_volume,
        max_spread_pct=o.max_spread_pct,
        spread_allowance=o.spread_allowance,
        max_quote_age_s=o.max_quote_age_s,
    )


def new_bracket_ref(symbol: str, now: datetime) -> str:
    """Unique across restarts and client ids: time plus randomness, never a counter in memory."""
    return f"{symbol}-{now:%Y%m%d%H%M%S}-{secrets.token_hex(3)}"


@dataclass
class Entry:
    """An approved idea on its way to a bracket."""

    idea: m.TradeIdea
    equity: float
    chain: m.Chain | None = None
    expiry: str = ""
    target: float = math.nan
    contract: m.OptionContract | None = None
    limit: float = math.nan
    # Its candidates, and what their asks have brought so far (the target's first).
    found: Candidates | None = None
    quotes: list[m.OptionQuote] = field(default_factory=list)
    missing: list[tuple[m.OptionContract, str]] = field(default_factory=list)
    first_ask: float = math.nan  # time.monotonic() of its first quote ask
    asks: int = 0
    waiting: bool = False  # an ask is out: only its answer is taken


@dataclass(frozen=True, slots=True)
class Candidates:
    """The contracts whose quotes decide the entry: an expiry, a target strike and its neighbours."""

    expiry: str
    target: float
    contracts: tuple[m.OptionContract, ...]


def candidates(
    signal: Signal, chain: m.Chain, today: date, params: OptionParams
) -> Candidates | str:
    """The contracts to quote for `signal`, or why there are none (a skip reason)."""
    expiry = choose_expiry(chain.expirations, today, params)
    if expiry is None:
        return f"no_expiry: none at least {params.min_dte} days out"
    spot = signal.price
    direction = signal.direction or Direction.CALL
    target = target_strike(chain.strikes, spot, direction, params.moneyness)
    strikes = nearest_strikes(chain.strikes, spot, params.strike_count)
    if target is None or not strikes:
        return f"no_strike: none near {spot:.2f}"
    if target not in strikes:
        strikes = sorted({*strikes, target})
    right = "C" if direction is Direction.CALL else "P"
    return Candidates(
        expiry,
        target,
        tuple(
            m.OptionContract(
                symbol=signal.symbol,
                expiry=expiry,
                strike=k,
                right=right,
                trading_class=chain.trading_class,
                multiplier=chain.multiplier,
            )
            for k in strikes
        ),
    )


# Strikes warmed beyond an entry's candidates, each side, where lines allow: after the spot
# moves by a strike, the next entry's candidates are still on lines that have settled.
WARM_MARGIN = 1


def warm_contracts(
    chain: m.Chain, spot: float, today: date, params: OptionParams, margin: int = 0
) -> tuple[m.OptionContract, ...]:
    """Every contract an entry at `spot` could ask quotes for, calls and puts, nearest the spot
    first: what `candidates` would pick for either direction, so a warm set covers both; with
    `margin`, as many more strikes on each side."""
    expiry = choose_expiry(chain.expirations, today, params)
    if expiry is None or not math.isfinite(spot):
        return ()
    strikes = set(nearest_strikes(chain.strikes, spot, params.strike_count + 2 * margin))
    for direction in (Direction.CALL, Direction.PUT):
        target = target_strike(chain.strikes, spot, direction, params.moneyness)
        if target is not None:
            strikes.add(target)
    return tuple(
        m.OptionContract(
            symbol=chain.symbol,
            expiry=expiry,
            strike=k,
            right=right,
            trading_class=chain.trading_class,
            multiplier=chain.multiplier,
        )
        for k in sorted(strikes, key=lambda k: (abs(k - spot), k))
        for right in ("C", "P")
    )


def quote_views(
    quotes: Iterable[m.OptionQuote], now: datetime, scale: float = 1.0
) -> list[OptionQuoteView]:
    """Quotes as the option chooser sees them; ages in real seconds (the service clock may run
    `scale` times faster), stamped with their last change; unknown ages are infinite."""
    return [
        OptionQuoteView(
            q.contract.strike,
            q.contract.right,
            q.bid,
            q.ask,
            q.volume if math.isfinite(q.volume) else 0.0,
            max(0.0, (now - q.time).total_seconds() / scale) if q.age_known else math.inf,
        )
        for q in quotes
    ]


def next_contracts(
    found: Candidates,
    quotes: Sequence[m.OptionQuote],
    missing: Iterable[tuple[m.OptionContract, str]],
    now: datetime,
    scale: float,
    params: OptionParams,
) -> tuple[m.OptionContract, ...]:
    """The candidates to ask quotes for next, given the answers so far (strategies.options
    strikes_to_ask): the target alone first, the rest only once it has failed, () when done."""
    answered: dict[float, bool] = {}
    for v in quote_views(quotes, now, scale):
        answered[v.strike] = answered.get(v.strike, False) or quote_rejection(v, params) is None
    for c, _ in missing:
        answered.setdefault(c.strike, False)
    strikes = strikes_to_ask([c.strike for c in found.contracts], found.target, answered)
    return tuple(c for c in found.contracts if c.strike in strikes)


@dataclass(frozen=True, slots=True)
class Choice:
    contract: m.OptionContract
    view: OptionQuoteView
    limit: float


def choose(
    symbol: str,
    quotes: Sequence[m.OptionQuote],
    missing: Iterable[tuple[m.OptionContract, str]],
    target: float,
    now: datetime,
    scale: float,
    params: OptionParams,
) -> Choice | str:
    """The option to buy and its limit price, or why none (a skip reason)."""
    by_strike = {q.contract.strike: q for q in quotes}
    view, rejections = choose_option(quote_views(quotes, now, scale), target, params)
    if view is None:
        named = [(c.strike, f"{c.strike:g}{c.right}: {why}") for c, why in missing] + [
            (r.strike, f"{r.strike:g}{r.right}: {r.reason}") for r in rejections
        ]
        # The target's problem first: it is what the entry wanted (the journal's reason and
        # bench.latency's count name the first).
        named.sort(key=lambda kv: abs(kv[0] - target) > 1e-9)
        return "no_option: " + "; ".join(text for _, text in named[:6])
    try:
        limit = entry_limit(symbol, view.bid, view.ask)
    except ValueError as exc:
        return f"no_price: {exc}"
    return Choice(by_strike[view.strike].contract, view, limit)


def exit_legs(
    ref: str,
    quantity: int,
    take_profit: float,
    stop: float,
    oca: str,
    parent_ref: str | None = None,
) -> tuple[m.BracketLeg, m.BracketLeg]:
    """A take-profit and a stop for `quantity` (GTC, one OCA group). With a parent they wait for
    it and the stop transmits the bracket; on their own (protection) each transmits."""
    return (
        m.BracketLeg(
            f"{ref}-TP",
            "SELL",
            "LMT",
            quantity,
            limit_price=take_profit,
            parent_ref=parent_ref,
            oca_group=oca,
            transmit=parent_ref is None,
            tif=TIF["take_profit"],
        ),
        m.BracketLeg(
            f"{ref}-SL",
            "SELL",
            "STP",
            quantity,
            aux_price=stop,
            parent_ref=parent_ref,
            oca_group=oca,
            transmit=True,
            tif=TIF["stop_loss"],
        ),
    )


def bracket_legs(
    ref: str, quantity: int, limit: float, take_profit: float, stop: float
) -> tuple[m.BracketLeg, ...]:
    """The entry (DAY) and its take-profit and stop (GTC, one OCA group), sent together: only
    the last leg transmits, so IB holds the children until their parent is in."""
    parent, oca = f"{ref}-E", f"OCA-{ref}"
    return (
        m.BracketLeg(
            parent, "BUY", "LMT", quantity, limit_price=limit, transmit=False, tif=TIF["entry"]
        ),
        *exit_legs(ref, quantity, take_profit, stop, oca, parent_ref=parent),
    )


def role_of(order_ref: str) -> str:
    """A bracket leg's role from its orderRef suffix."""
    return ROLES[order_ref.rsplit("-", 1)[1]]


def leg_rows(
    legs: Sequence[m.BracketLeg],
    roles: Sequence[str],
    *,
    bracket_ref: str,
    strategy: str | None,
    contract: m.OptionContract,
    dry_run: bool,
    now: datetime,
    reason: str | None = None,
) -> list[Order]:
    """The rows written ahead of sending `legs` (write-ahead: in SQLite before the wire)."""
    return [
        Order(
            order_ref=leg.order_ref,
            bracket_ref=bracket_ref,
            parent_ref=leg.parent_ref or None,
            role=role,
            symbol=contract.symbol,
            strategy=strategy,
            con_id=contract.con_id,
            local_symbol=contract.local_symbol,
            expiry=contract.expiry,
            strike=contract.strike,
            right=contract.right,
            action=leg.action,
            order_type=leg.order_type,
            quantity=float(leg.quantity),
            limit_price=leg.limit_price or None,
            aux_price=leg.aux_price or None,
            oca_group=leg.oca_group or None,
            dry_run=int(dry_run),
            reason=reason,
            trading_date=MarketHours.trading_date(now).isoformat(),
            created_at=iso(now),
            multiplier=float(contract.multiplier),
        )
        for leg, role in zip(legs, roles, strict=True)
    ]

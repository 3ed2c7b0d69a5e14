"""The messages actors exchange: frozen, slotted dataclasses; commands imperative, events past tense."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from strategies.bars import Bar
from strategies.signals import Signal

_ids = itertools.count(1)


def new_id() -> int:
    return next(_ids)


@dataclass(frozen=True, slots=True)
class Msg:
    """Base: every message carries a correlation id and a monotonic timestamp."""

    corr: int = field(default_factory=new_id, kw_only=True)
    mono: float = field(default_factory=time.monotonic, kw_only=True)


# -- contracts and quotes, as plain values (ib_async objects never leave ConnectionActor) --


@dataclass(frozen=True, slots=True)
class OptionContract:
    symbol: str
    expiry: str  # YYYYMMDD
    strike: float
    right: str  # "C" | "P"
    con_id: int = 0
    local_symbol: str = ""
    trading_class: str = ""
    multiplier: int = 100
    exchange: str = "SMART"


@dataclass(frozen=True, slots=True)
class OptionQuote:
    contract: OptionContract
    bid: float
    ask: float
    last: float
    volume: float
    # When the bid/ask last changed, at the oldest (not when the quote arrived: IB re-sends
    # frozen values as if new). age_known False: never seen to change, so its age is unknown.
    time: datetime
    age_known: bool = True


@dataclass(frozen=True, slots=True)
class Chain:
    symbol: str
    con_id: int
    trading_class: str
    multiplier: int
    expirations: tuple[str, ...]
    strikes: tuple[float, ...]


# -- ticks and lifecycle ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick(Msg):
    """A periodic nudge with the service clock's time; drives timers without sleeping."""

    now: datetime


@dataclass(frozen=True, slots=True)
class Shutdown(Msg):
    """Stop taking new work (sent before the actors are stopped)."""


@dataclass(frozen=True, slots=True)
class DebugHang(Msg):
    """A test hook: the receiving actor blocks for `seconds`, as a deadlocked one would, so a
    test can watch the systemd watchdog stop. Refused outside the embedded simulator."""

    seconds: float


# -- connection --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionChanged(Msg):
    state: str
    may_trade: bool
    resync: bool  # True after a (re)connect: resubscribe and reconcile
    cause: str = ""


@dataclass(frozen=True, slots=True)
class Subscribe(Msg):
    """Ask ConnectionActor to send ConnectionChanged (and broker events) to `listener`."""

    listener: Any
    topics: tuple[str, ...] = ("connection",)


# -- data --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamBars(Msg):
    """Backfill `duration` of bars, then stream closed bars (keepUpToDate).

    With `since` (the last bar the requester has), the history asked for is computed when the
    request is sent, not when it was queued: a request that waited its turn still reaches back
    to `since`. `duration` is then only the fallback for a first request.
    """

    symbol: str
    bar_size: str
    duration: str
    reply_to: Any
    since: datetime | None = None
    # Stream real-time 5-second bars aggregated to minutes (a market data line) instead of a
    # keepUpToDate request (an open historical request): see actors/pacing.py stream_kinds.
    realtime: bool = False


@dataclass(frozen=True, slots=True)
class FetchBars(Msg):
    """One historical request (no stream): the hourly backfill and its gap fills (`since`: as
    for StreamBars)."""

    symbol: str
    bar_size: str
    duration: str
    reply_to: Any
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class CloseLastBar(Msg):
    """The session is over: a stream's forming bar at `bar_time` is final, deliver it now.

    keepUpToDate marks a bar closed only when a newer one starts, which for the session's
    last bar is the next morning; after the close no trade can change it.
    """

    symbol: str
    bar_size: str
    bar_time: datetime
    reply_to: Any


@dataclass(frozen=True, slots=True)
class BarsBackfilled(Msg):
    symbol: str
    bar_size: str
    bars: tuple[Bar, ...]
    # The service clock when it was asked for: a bar ending after it may have been forming when
    # the Gateway answered, however late the answer is read (at 150x, a few real milliseconds
    # in a busy inbox are a simulated minute, and a forming bar read late passed for a whole one).
    as_of: datetime | None = None


@dataclass(frozen=True, slots=True)
class BarStreamed(Msg):
    """One bar closed in a keepUpToDate stream (ConnectionActor -> DataActor)."""

    symbol: str
    bar_size: str
    bar: Bar


@dataclass(frozen=True, slots=True)
class StreamFailed(Msg):
    symbol: str
    bar_size: str
    reason: str


@dataclass(frozen=True, slots=True)
class BarClosed(Msg):
    """A validated, deduplicated, in-order bar for one symbol (DataActor -> StrategyActor)."""

    symbol: str
    bar_size: str
    bar: Bar
    live: bool  # False for backfill (warm-up only, never traded)
    received_mono: float = 0.0


@dataclass(frozen=True, slots=True)
class SymbolStale(Msg):
    symbol: str
    stale: bool
    age_s: float


# -- ideas, risk, orders -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TradeIdea(Msg):
    signal: Signal
    received_mono: float = 0.0


@dataclass(frozen=True, slots=True)
class EntryApproved(Msg):
    """The risk pre-check passed: OrderActor may look for an option."""

    idea: TradeIdea
    equity: float


@dataclass(frozen=True, slots=True)
class FetchChain(Msg):
    symbol: str
    reply_to: Any


@dataclass(frozen=True, slots=True)
class ChainFetched(Msg):
    symbol: str
    chain: Chain | None
    spot: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FetchQuotes(Msg):
    contracts: tuple[OptionContract, ...]
    reply_to: Any
    wait_s: float = 4.0
    tag: Any = None


@dataclass(frozen=True, slots=True)
class QuotesFetched(Msg):
    quotes: tuple[OptionQuote, ...]
    missing: tuple[tuple[OptionContract, str], ...]  # (contract, reason)
    tag: Any = None


@dataclass(frozen=True, slots=True)
class WarmQuotes(Msg):
    """Keep streaming lines on these contracts (nearest first), where market data lines allow,
    so that an entry's quotes are already there when its bar closes; replaces the symbol's
    earlier set. An empty set gives the symbol's lines back."""

    symbol: str
    contracts: tuple[OptionContract, ...]
    # The first `core` contracts are what an entry now would ask for, warmed whole or not at
    # all; the rest a margin, warmed only with lines left after every symbol's core. 0: all.
    core: int = 0


@dataclass(frozen=True, slots=True)
class SpotMoved(Msg):
    """A live 1-minute bar closed at `price` (DataActor to OrderActor: which strikes are in play)."""

    symbol: str
    price: float
    time: datetime


@dataclass(frozen=True, slots=True)
class WatchQuotes(Msg):
    """Stream quotes for a contract to `reply_to` until UnwatchQuotes (paper fills use it)."""

    contract: OptionContract
    reply_to: Any


@dataclass(frozen=True, slots=True)
class UnwatchQuotes(Msg):
    contract: OptionContract


@dataclass(frozen=True, slots=True)
class QuoteUpdated(Msg):
    quote: OptionQuote


@dataclass(frozen=True, slots=True)
class SizeRequest(Msg):
    idea: TradeIdea
    contract: OptionContract
    premium: float  # per share (the entry limit)
    reply_to: Any


@dataclass(frozen=True, slots=True)
class SizeDecision(Msg):
    request: SizeRequest
    contracts: int
    reason: str


@dataclass(frozen=True, slots=True)
class BracketLeg:
    order_ref: str
    action: str  # BUY | SELL
    order_type: str  # LMT | STP
    quantity: int
    limit_price: float = 0.0
    aux_price: float = 0.0
    parent_ref: str = ""
    oca_group: str = ""
    transmit: bool = True
    # DAY for entries (an unfilled entry dies at the close); GTC for exits, so the broker keeps
    # protecting a position over the close, a weekend, or while the service is down.
    tif: str = "DAY"


@dataclass(frozen=True, slots=True)
class PlaceBracket(Msg):
    contract: OptionContract
    legs: tuple[BracketLeg, ...]
    reply_to: Any


@dataclass(frozen=True, slots=True)
class CancelOrder(Msg):
    order_ref: str


@dataclass(frozen=True, slots=True)
class BrokerOrderStatus(Msg):
    """An order status from the Gateway, keyed by our orderRef."""

    order_ref: str
    status: str  # IB status string
    filled: float
    remaining: float
    avg_fill_price: float
    order_id: int
    perm_id: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BrokerExecution(Msg):
    order_ref: str
    exec_id: str
    side: str
    quantity: float
    price: float
    time: datetime
    commission: float = 0.0


@dataclass(frozen=True, slots=True)
class PositionsChanged(Msg):
    """OrderActor -> RiskActor: the account view after fills."""

    open_positions: int
    exposure_by_symbol: tuple[tuple[str, float], ...]
    realized_today: float
    unrealized: float
    equity: float
    # Entries working at the broker with nothing filled yet: not positions, but each may become
    # one, so RiskActor counts them against max_open_positions.
    pending_entries: int = 0


@dataclass(frozen=True, slots=True)
class AccountValues(Msg):
    """ConnectionActor -> RiskActor: the broker's account values (live mode)."""

    net_liquidation: float


@dataclass(frozen=True, slots=True)
class KillSwitch(Msg):
    engaged: bool
    flatten: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Flatten(Msg):
    """Cancel working entries and, with `positions`, close open positions at market.

    `strategy` limits it to one strategy's trades ("scalp" before the close); None is all.
    """

    reason: str
    strategy: str | None = None
    positions: bool = True


@dataclass(frozen=True, slots=True)
class EntryFinished(Msg):
    """OrderActor -> RiskActor: an approved entry ended (placed, or skipped with a reason)."""

    symbol: str
    placed: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FetchBrokerState(Msg):
    """OrderActor -> ConnectionActor: open and completed orders and executions, for reconciliation."""

    reply_to: Any


@dataclass(frozen=True, slots=True)
class BrokerState(Msg):
    statuses: tuple[BrokerOrderStatus, ...]
    executions: tuple[BrokerExecution, ...]
    positions: tuple[tuple[int, float], ...] = ()  # (conId, quantity) for option positions
    # What adoption needs (`optionsbot adopt`): the held contracts, the working orders' terms,
    # the account's P&L today (reqPnL) and equity, and which account answered.
    holdings: tuple[BrokerPosition, ...] = ()
    working: tuple[BrokerWorkingOrder, ...] = ()
    pnl: BrokerPnL | None = None
    net_liquidation: float = math.nan
    account: str = field(default="", repr=False)  # a secret: never logged, never stored


@dataclass(frozen=True, slots=True)
class BrokerPosition(Msg):
    """An option position as the broker reports it (reqPositions)."""

    con_id: int
    symbol: str
    local_symbol: str
    expiry: str
    strike: float
    right: str
    quantity: float
    avg_cost: float  # IB's avgCost: per contract, multiplier included
    multiplier: float = 0.0  # the contract's, as IB's position message carries it; 0: not given


@dataclass(frozen=True, slots=True)
class BrokerWorkingOrder(Msg):
    """A working order's terms as the broker reports them (reqAllOpenOrders)."""

    order_ref: str
    perm_id: int
    order_id: int
    status: str
    con_id: int
    symbol: str
    local_symbol: str
    expiry: str
    strike: float
    right: str
    sec_type: str
    action: str
    order_type: str
    quantity: float
    limit_price: float
    aux_price: float
    oca_group: str
    parent_id: int
    multiplier: float = 0.0  # the contract's, as IB's open order carries it; 0: not given


@dataclass(frozen=True, slots=True)
class BrokerPnL(Msg):
    """The account's P&L (reqPnL): today's total, open positions' unrealized, today's realized."""

    daily: float
    unrealized: float
    realized: float


@dataclass(frozen=True, slots=True)
class BrokerVouch(Msg):
    """OrderActor to RiskActor after each reconciliation: may entries trust this database?

    `reason` is empty when the database accounts for everything the broker holds; otherwise
    entries stay refused until `optionsbot adopt`. `start_equity` is today's start-of-day equity
    as now stored (raised from the broker's P&L when the database knew less), or NaN."""

    reason: str = ""
    start_equity: float = math.nan


@dataclass(frozen=True, slots=True)
class BrokerCommission(Msg):
    """The commission report for an execution, which IB sends after the execution itself."""

    exec_id: str
    commission: float

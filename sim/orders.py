"""Order book for the simulator: order lifecycle, brackets/OCA, matching, executions, positions and account."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)

PENDING_SUBMIT = "PendingSubmit"
PRE_SUBMITTED = "PreSubmitted"
SUBMITTED = "Submitted"
PENDING_CANCEL = "PendingCancel"
FILLED = "Filled"
CANCELLED = "Cancelled"
INACTIVE = "Inactive"

DONE_STATES = frozenset({FILLED, CANCELLED, INACTIVE})
SUPPORTED_ORDER_TYPES = frozenset({"LMT", "MKT", "STP", "STP LMT"})

# Prices within this of a limit or stop count as touching it (float noise on tick grids).
EPS = 1e-9


@dataclass(frozen=True)
class SimContract:
    """A resolved contract, with the fields IB messages carry."""

    con_id: int
    symbol: str
    sec_type: str
    expiry: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    exchange: str = "SMART"
    primary_exchange: str = ""
    currency: str = "USD"
    local_symbol: str = ""
    trading_class: str = ""

    @property
    def mult(self) -> float:
        try:
            return float(self.multiplier) if self.multiplier else 1.0
        except ValueError:
            return 1.0

    @property
    def is_option(self) -> bool:
        return self.sec_type == "OPT"


@dataclass
class Quote:
    """What matching needs from the market at one instant."""

    bid: float
    ask: float
    bid_size: float = 0.0
    ask_size: float = 0.0

    @property
    def mid(self) -> float:
        if _valid(self.bid) and _valid(self.ask):
            return (self.bid + self.ask) / 2.0
        if _valid(self.bid):
            return self.bid
        return self.ask if _valid(self.ask) else math.nan


def _valid(p: float | None) -> bool:
    return p is not None and math.isfinite(p) and p > 0


@dataclass
class OrderSpec:
    """An order as a client asked for it; the fields a placeOrder request carries that matter here."""

    order_id: int
    action: str
    total_quantity: float
    order_type: str
    lmt_price: float | None = None
    aux_price: float | None = None
    tif: str = "DAY"
    oca_group: str = ""
    oca_type: int = 0
    account: str = ""
    open_close: str = ""
    origin: int = 0
    order_ref: str = ""
    transmit: bool = True
    parent_id: int = 0
    outside_rth: bool = False
    hidden: bool = False
    good_after_time: str = ""
    good_till_date: str = ""
    all_or_none: bool = False
    min_qty: int | None = None
    trail_stop_price: float | None = None
    trailing_percent: float | None = None
    what_if: bool = False
    algo_strategy: str = ""


@dataclass
class SimOrder:
    client_id: int
    order_id: int
    perm_id: int
    contract: SimContract
    action: str
    total_quantity: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    oca_group: str
    oca_type: int
    account: str
    open_close: str
    origin: int
    order_ref: str
    transmit: bool
    parent_id: int
    outside_rth: bool
    hidden: bool
    good_after_time: str
    good_till_date: str
    all_or_none: bool
    min_qty: int | None
    trail_stop_price: float | None
    trailing_percent: float | None
    what_if: bool
    algo_strategy: str
    created: datetime
    status: str = PENDING_SUBMIT
    filled: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    why_held: str = ""
    parent_perm_id: int | None = None
    # Untransmitted (transmit=False): IB keeps it in TWS and tells the API nothing.
    held: bool = True
    triggered: bool = False
    commission_paid: float = 0.0
    completed_time: datetime | None = None
    completed_status: str = ""

    @property
    def remaining(self) -> float:
        return max(0.0, self.total_quantity - self.filled)

    @property
    def is_done(self) -> bool:
        return self.status in DONE_STATES

    @property
    def is_live(self) -> bool:
        return not self.held and not self.is_done

    @property
    def side(self) -> int:
        return 1 if self.action == "BUY" else -1


@dataclass
class SimExecution:
    exec_id: str
    time: datetime
    account: str
    exchange: str
    side: str  # "BOT" / "SLD"
    shares: float
    price: float
    perm_id: int
    client_id: int
    order_id: int
    cum_qty: float
    avg_price: float
    order_ref: str
    contract: SimContract
    commission: float
    realized_pnl: float | None
    # 2 = removed liquidity: the simulator only fills against the quote.
    last_liquidity: int = 2


@dataclass
class SimPosition:
    contract: SimContract
    quantity: float = 0.0
    # Per unit including the multiplier and commissions, as IB reports avgCost.
    avg_cost: float = 0.0
    realized_pnl: float = 0.0


class OrderRejected(Exception):
    """A request the book refuses; code and text are what IB would send in errMsg."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class BookListener(Protocol):
    def order_changed(self, order: SimOrder, open_order: bool) -> None: ...

    def order_error(self, order: SimOrder, code: int, text: str) -> None: ...

    def order_filled(self, order: SimOrder, execution: SimExecution) -> None: ...

    def position_changed(self, position: SimPosition) -> None: ...


class _NullListener:
    def order_changed(self, order: SimOrder, open_order: bool) -> None:
        pass

    def order_error(self, order: SimOrder, code: int, text: str) -> None:
        pass

    def order_filled(self, order: SimOrder, execution: SimExecution) -> None:
        pass

    def position_changed(self, position: SimPosition) -> None:
        pass


QuoteFn = Callable[[SimContract, datetime], Quote | None]
TickFn = Callable[[SimContract, float], float]
# (order, matched price, now) -> (quantity, price) of the fill: lets faults fill part, or worse.
FillPolicy = Callable[["SimOrder", float, datetime], tuple[float, float]]


def _default_tick(contract: SimContract, price: float) -> float:
    return 0.01


def _on_grid(price: float, tick: float) -> bool:
    n = price / tick
    return abs(n - round(n)) < 1e-6


class OrderBook:
    """All orders, executions, positions and cash of the one simulated account."""

    def __init__(
        self,
        account: str = "DU123456",
        starting_cash: float = 100_000.0,
        commission_per_contract: float = 0.65,
        min_commission: float = 1.0,
        commission_per_share: float = 0.005,
        quote_fn: QuoteFn | None = None,
        tick_fn: TickFn | None = None,
        seed: int = 7,
    ) -> None:
        self.account = account
        self.starting_cash = float(starting_cash)
        self.cash = float(starting_cash)
        self.commission_per_contract = commission_per_contract
        self.min_commission = min_commission
        self.commission_per_share = commission_per_share
        self.quote_fn: QuoteFn = quote_fn or (lambda c, t: None)
        self.tick_fn: TickFn = tick_fn or _default_tick
        self.listener: BookListener = _NullListener()
        self.fill_policy: FillPolicy | None = None
        self.orders: dict[tuple[int, int], SimOrder] = {}
        self.executions: list[SimExecution] = []
        self.positions: dict[int, SimPosition] = {}
        self.realized_pnl = 0.0
        self.commissions = 0.0
        self._max_order_id: dict[int, int] = {}
        digest = hashlib.blake2b(f"sim-{seed}".encode(), digest_size=8).digest()
        # permIds and execIds look like IB's and differ between seeds.
        self._next_perm_id = 1_000_000_000 + int.from_bytes(digest[:3], "big")
        self._exec_prefix = int.from_bytes(digest[3:7], "big")
        self._exec_seq = 0

    # -- ids -----------------------------------------------------------------

    def next_order_id(self, client_id: int) -> int:
        return self._max_order_id.get(client_id, 0) + 1

    def consume_order_id(self, client_id: int, order_id: int) -> None:
        """Mark an id as used by an order that was refused before it reached the book."""
        if order_id > self._max_order_id.get(client_id, 0):
            self._max_order_id[client_id] = order_id

    def _new_perm_id(self) -> int:
        self._next_perm_id += 1
        return self._next_perm_id

    def _new_exec_id(self, now: datetime) -> str:
        self._exec_seq += 1
        day = int(now.timestamp()) // 86400
        return f"{self._exec_prefix:08x}.{(day << 12 | self._exec_seq) & 0xFFFFFFFF:08x}.01.01"

    # -- queries ---------------------------------------------------------------

    def get(self, client_id: int, order_id: int) -> SimOrder | None:
        return self.orders.get((client_id, order_id))

    def find_for_client(self, client_id: int, order_id: int, master: bool) -> SimOrder | None:
        order = self.orders.get((client_id, order_id))
        if order is None and master:
            matches = [o for (_, oid), o in self.orders.items() if oid == order_id]
            if len(matches) == 1:
                order = matches[0]
        return order

    def live_orders(self) -> list[SimOrder]:
        return sorted((o for o in self.orders.values() if o.is_live), key=lambda o: o.perm_id)

    def completed_orders(self) -> list[SimOrder]:
        return sorted(
            (o for o in self.orders.values() if o.is_done and not o.what_if and o.completed_time),
            key=lambda o: o.completed_time or o.created,
        )

    def children_of(self, order: SimOrder) -> list[SimOrder]:
        return [
            o
            for o in self.orders.values()
            if o.client_id == order.client_id and o.parent_id == order.order_id and o is not order
        ]

    # -- placing ---------------------------------------------------------------

    def place(
        self, client_id: int, spec: OrderSpec, contract: SimContract, now: datetime
    ) -> SimOrder:
        """Accept a new order or a modification; raises OrderRejected with IB's code."""
        key = (client_id, spec.order_id)
        existing = self.orders.get(key)
        if existing is not None:
            if existing.is_done:
                raise OrderRejected(103, "Duplicate order id")
            return self._modify(existing, spec, contract, now)
        if spec.order_id <= self._max_order_id.get(client_id, 0):
            raise OrderRejected(103, "Duplicate order id")
        self._validate(spec, contract)
        if spec.account and spec.account != self.account:
            raise OrderRejected(201, f"Order rejected - reason:Invalid account code {spec.account}")
        parent = None
        if spec.parent_id:
            parent = self.orders.get((client_id, spec.parent_id))
            if parent is None:
                raise OrderRejected(201, "Order rejected - reason:Parent order is not found")
            if parent.is_done and parent.status != FILLED:
                raise OrderRejected(201, "Order rejected - reason:Parent order is not active")
        self._max_order_id[client_id] = spec.order_id
        order = SimOrder(
            client_id=client_id,
            order_id=spec.order_id,
            perm_id=self._new_perm_id(),
            contract=contract,
            action=spec.action,
            total_quantity=float(spec.total_quantity),
            order_type=spec.order_type,
            lmt_price=spec.lmt_price,
            aux_price=spec.aux_price,
            tif=spec.tif or "DAY",
            oca_group=spec.oca_group,
            oca_type=spec.oca_type,
            account=self.account,
            open_close=spec.open_close,
            origin=spec.origin,
            order_ref=spec.order_ref,
            transmit=spec.transmit,
            parent_id=spec.parent_id,
            outside_rth=spec.outside_rth,
            hidden=spec.hidden,
            good_after_time=spec.good_after_time,
            good_till_date=spec.good_till_date,
            all_or_none=spec.all_or_none,
            min_qty=spec.min_qty,
            trail_stop_price=spec.trail_stop_price,
            trailing_percent=spec.trailing_percent,
            what_if=spec.what_if,
            algo_strategy=spec.algo_strategy,
            created=now,
            parent_perm_id=parent.perm_id if parent else None,
        )
        if spec.what_if:
            # A what-if order only uses up its id; nothing is kept.
            order.held = False
            return order
        self.orders[key] = order
        if spec.transmit:
            self._transmit_group(order, now)
        return order

    def _validate(self, spec: OrderSpec, contract: SimContract) -> None:
        if spec.action not in ("BUY", "SELL"):
            raise OrderRejected(201, f"Order rejected - reason:Invalid action {spec.action!r}")
        if not (spec.total_quantity > 0) or not math.isfinite(spec.total_quantity):
            raise OrderRejected(201, "Order rejected - reason:The order quantity must be positive")
        if spec.order_type not in SUPPORTED_ORDER_TYPES:
            raise OrderRejected(387, "Unsupported order type for this exchange and security type.")
        if spec.order_type in ("LMT", "STP LMT") and not (
            spec.lmt_price is not None and spec.lmt_price > 0
        ):
            raise OrderRejected(201, "Order rejected - reason:A limit price is required")
        if spec.order_type in ("STP", "STP LMT") and not (
            spec.aux_price is not None and spec.aux_price > 0
        ):
            raise OrderRejected(201, "Order rejected - reason:A stop price is required")
        for price in (spec.lmt_price, spec.aux_price):
            if price is not None and price > 0 and spec.order_type != "MKT":
                tick = self.tick_fn(contract, price)
                if not _on_grid(price, tick):
                    raise OrderRejected(
                        110,
                        "The price does not conform to the minimum price variation for this contract.",
                    )

    def _modify(
        self, order: SimOrder, spec: OrderSpec, contract: SimContract, now: datetime
    ) -> SimOrder:
        if contract.con_id != order.contract.con_id:
            raise OrderRejected(
                201, "Order rejected - reason:The contract of an order cannot be changed"
            )
        self._validate(spec, contract)
        if spec.total_quantity < order.filled:
            raise OrderRejected(
                201, "Order rejected - reason:Quantity is below the filled quantity"
            )
        order.total_quantity = float(spec.total_quantity)
        order.order_type = spec.order_type
        order.lmt_price = spec.lmt_price
        order.aux_price = spec.aux_price
        order.tif = spec.tif or order.tif
        order.order_ref = spec.order_ref
        order.outside_rth = spec.outside_rth
        order.good_till_date = spec.good_till_date
        if spec.oca_group:
            order.oca_group = spec.oca_group
        if order.held:
            if spec.transmit:
                order.transmit = True
                self._transmit_group(order, now)
            return order
        self.listener.order_changed(order, True)
        return order

    def _transmit_group(self, order: SimOrder, now: datetime) -> None:
        root = order
        if order.parent_id:
            root = self.orders.get((order.client_id, order.parent_id)) or order
        group = [root] + sorted(self.children_of(root), key=lambda o: o.order_id)
        if order not in group:
            group.append(order)
        for o in group:
            if not o.held or o.is_done:
                continue
            o.held = False
            o.transmit = True
            if o.parent_id and root is not o and root.status != FILLED:
                o.status = PRE_SUBMITTED
            else:
                o.status = SUBMITTED
            self.listener.order_changed(o, True)

    # -- cancelling ------------------------------------------------------------

    def cancel(
        self, client_id: int, order_id: int, now: datetime, master: bool = False
    ) -> SimOrder:
        order = self.find_for_client(client_id, order_id, master)
        if order is None:
            raise OrderRejected(
                10147, f"OrderId {order_id} that needs to be cancelled is not found."
            )
        if order.is_done:
            raise OrderRejected(
                10148,
                f"OrderId {order_id} that needs to be cancelled cannot be cancelled, state: {order.status}.",
            )
        self._cancel(order, now, reason="")
        return order

    def global_cancel(self, now: datetime) -> list[SimOrder]:
        out = []
        for order in sorted(self.orders.values(), key=lambda o: o.perm_id):
            if not order.is_done:
                self._cancel(order, now, reason="")
                out.append(order)
        return out

    def _cancel(
        self,
        order: SimOrder,
        now: datetime,
        reason: str | None,
        completed: str = "Cancelled by Trader",
    ) -> None:
        if order.is_done:
            return
        was_held = order.held
        order.status = CANCELLED
        order.completed_time = now
        order.completed_status = completed
        if not was_held:
            self.listener.order_changed(order, False)
            if reason is not None:
                self.listener.order_error(order, 202, f"Order Canceled - reason:{reason}")
        # IB takes a bracket's children down with their parent.
        for child in self.children_of(order):
            if not child.is_done:
                self._cancel(child, now, reason=reason, completed=completed)

    def cancel_by_system(self, order: SimOrder, now: datetime, reason: str = "") -> None:
        """Cancelled by IB or the exchange, not the client: Cancelled, then error 202 with the reason."""
        self._cancel(order, now, reason=reason, completed="Cancelled by System")

    def expire_day_orders(self, now: datetime) -> list[SimOrder]:
        """End of session: DAY orders are cancelled, GTC ones live on."""
        out = []
        for order in sorted(self.orders.values(), key=lambda o: o.perm_id):
            if not order.is_done and order.tif in ("", "DAY", "IOC"):
                self._cancel(order, now, reason=None, completed="Cancelled: day order expired")
                out.append(order)
        return out

    # -- matching --------------------------------------------------------------

    def match(self, now: datetime, market_open: bool = True) -> int:
        """Fill whatever the current quotes allow; returns the number of fills."""
        fills = 0
        # An order filled in part waits for the next call: one partial fill per simulation step.
        partly: set[int] = set()
        # A fill can activate children or cancel OCA siblings, so repeat a few passes.
        for _ in range(4):
            progressed = 0
            for order in self.live_orders():
                if order.is_done or order.status != SUBMITTED or order.perm_id in partly:
                    continue
                if not market_open:
                    continue
                quote = self.quote_fn(order.contract, now)
                price = self._match_price(order, quote) if quote is not None else None
                if price is not None:
                    qty = order.remaining
                    if self.fill_policy is not None:
                        qty, price = self.fill_policy(order, price, now)
                    self._fill(order, qty, price, now)
                    if not order.is_done:
                        partly.add(order.perm_id)
                    progressed += 1
                elif order.tif == "IOC":
                    self._cancel(order, now, reason=None, completed="Cancelled: IOC not marketable")
            fills += progressed
            if not progressed:
                break
        return fills

    def _match_price(self, order: SimOrder, q: Quote) -> float | None:
        buy = order.action == "BUY"
        bid, ask = q.bid, q.ask
        otype = order.order_type
        if otype in ("STP", "STP LMT") and not order.triggered:
            stop = order.aux_price or 0.0
            if buy and _valid(ask) and ask >= stop - EPS:
                order.triggered = True
            elif not buy and _valid(bid) and bid <= stop + EPS:
                order.triggered = True
            else:
                return None
        if otype in ("MKT", "STP"):
            if buy:
                return ask if _valid(ask) else None
            return bid if _valid(bid) else None
        limit = order.lmt_price or 0.0
        if buy:
            if _valid(ask) and ask <= limit + EPS:
                return min(limit, ask)
            return None
        if _valid(bid) and bid >= limit - EPS:
            return max(limit, bid)
        return None

    def commission_for(self, contract: SimContract, cum_qty: float, price: float) -> float:
        """Total commission an order owes after `cum_qty` units have filled."""
        if contract.is_option:
            return max(self.min_commission, self.commission_per_contract * cum_qty)
        raw = max(self.min_commission, self.commission_per_share * cum_qty)
        # IB caps per-share commissions at 1% of trade value.
        return min(raw, max(self.min_commission, 0.01 * cum_qty * price))

    def fill_now(self, order: SimOrder, qty: float, price: float, now: datetime) -> SimExecution:
        """Fill part or all of a live order at `price` regardless of the quote (a fill already in flight)."""
        return self._fill(order, qty, price, now)

    def _fill(self, order: SimOrder, qty: float, price: float, now: datetime) -> SimExecution:
        qty = min(qty, order.remaining)
        c = order.contract
        new_filled = order.filled + qty
        owed = self.commission_for(c, new_filled, price)
        commission = round(max(0.0, owed - order.commission_paid), 4)
        order.commission_paid += commission
        order.avg_fill_price = (order.avg_fill_price * order.filled + price * qty) / new_filled
        order.filled = new_filled
        order.last_fill_price = price
        realized = self._apply_to_position(c, order.side * qty, price, commission)
        self.cash -= order.side * qty * price * c.mult + commission
        self.commissions += commission
        if realized is not None:
            self.realized_pnl += realized
        execution = SimExecution(
            exec_id=self._new_exec_id(now),
            time=now,
            account=self.account,
            exchange=_exec_exchange(c),
            side="BOT" if order.side > 0 else "SLD",
            shares=qty,
            price=price,
            perm_id=order.perm_id,
            client_id=order.client_id,
            order_id=order.order_id,
            cum_qty=order.filled,
            avg_price=order.avg_fill_price,
            order_ref=order.order_ref,
            contract=c,
            commission=commission,
            realized_pnl=realized,
        )
        self.executions.append(execution)
        done = order.remaining <= EPS
        if done:
            order.status = FILLED
            order.completed_time = now
            order.completed_status = "Filled Size: " + _qty_text(order.filled)
        self.listener.order_filled(order, execution)
        self.listener.position_changed(self.positions[c.con_id])
        if done:
            self._after_full_fill(order, now)
        else:
            self._reduce_oca_siblings(order, now)
        return execution

    def _reduce_oca_siblings(self, order: SimOrder, now: datetime) -> None:
        """A partial fill in a reducing OCA group (ocaType 2 or 3, and a bracket's children, which
        IB treats as one) shrinks every other member in proportion: IB's OcaType "proportionally
        reduce remaining orders" (TWS API Order.ocaType; tws-api/oca.html: "partial completion
        causes the group to re-balance"). ocaType 1 ("cancel with block") is left as it was until
        a member completes: how IB treats its partial fills is not documented here.
        Whole units, rounded up: a member never shrinks below what is still to close."""
        if order.total_quantity <= EPS:
            return
        left = order.remaining / order.total_quantity
        for sibling in self._oca_siblings(order):
            reducing = sibling.oca_group == order.oca_group and order.oca_type in (2, 3)
            if not (reducing or self._same_bracket(order, sibling)):
                continue
            total = max(sibling.filled, math.ceil(sibling.total_quantity * left - EPS))
            if total >= sibling.total_quantity - EPS:
                continue
            sibling.total_quantity = float(total)
            if sibling.remaining <= EPS:
                self._cancel(sibling, now, reason=None, completed="Cancelled: OCA group reduced")
            else:
                self.listener.order_changed(sibling, True)

    def _after_full_fill(self, order: SimOrder, now: datetime) -> None:
        for child in sorted(self.children_of(order), key=lambda o: o.order_id):
            if child.status == PRE_SUBMITTED and not child.held:
                child.status = SUBMITTED
                self.listener.order_changed(child, True)
        for sibling in self._oca_siblings(order):
            self._cancel(sibling, now, reason=None, completed="Cancelled: OCA group member filled")

    def _oca_siblings(self, order: SimOrder) -> list[SimOrder]:
        out = []
        for o in self.orders.values():
            if o is order or o.is_done:
                continue
            same_group = bool(order.oca_group) and o.oca_group == order.oca_group
            if same_group or self._same_bracket(order, o):
                out.append(o)
        return sorted(out, key=lambda o: o.perm_id)

    @staticmethod
    def _same_bracket(order: SimOrder, other: SimOrder) -> bool:
        """A bracket's children are one implicit OCA group."""
        return (
            bool(order.parent_id)
            and other.client_id == order.client_id
            and other.parent_id == order.parent_id
        )

    def _apply_to_position(
        self, c: SimContract, signed_qty: float, price: float, commission: float
    ) -> float | None:
        pos = self.positions.get(c.con_id)
        if pos is None:
            pos = self.positions[c.con_id] = SimPosition(contract=c)
        unit = price * c.mult
        qty = abs(signed_qty)
        # Longs carry commissions in their cost, shorts net them off their proceeds, as IB does.
        sign = 1.0 if signed_qty > 0 else -1.0
        if pos.quantity == 0 or (pos.quantity > 0) == (signed_qty > 0):
            total = pos.avg_cost * abs(pos.quantity) + unit * qty + sign * commission
            pos.quantity += signed_qty
            pos.avg_cost = total / abs(pos.quantity)
            return None
        closing = min(qty, abs(pos.quantity))
        direction = 1.0 if pos.quantity > 0 else -1.0
        close_commission = commission * closing / qty
        realized = direction * (unit - pos.avg_cost) * closing - close_commission
        pos.realized_pnl += realized
        pos.quantity += signed_qty
        opened = qty - closing
        if abs(pos.quantity) <= EPS:
            pos.quantity = 0.0
            pos.avg_cost = 0.0
        elif opened > EPS:
            # The position flipped: what is left was opened at this fill.
            pos.avg_cost = unit + sign * (commission - close_commission) / opened
        return realized

    # -- account ---------------------------------------------------------------

    def mark(self, position: SimPosition, now: datetime) -> float:
        q = self.quote_fn(position.contract, now)
        if q is None:
            return math.nan
        return q.mid

    def portfolio(self, now: datetime) -> list[dict[str, Any]]:
        rows = []
        for pos in sorted(self.positions.values(), key=lambda p: p.contract.con_id):
            mid = self.mark(pos, now)
            if not math.isfinite(mid):
                mid = pos.avg_cost / pos.contract.mult if pos.quantity else 0.0
            value = pos.quantity * mid * pos.contract.mult
            rows.append(
                {
                    "position": pos,
                    "market_price": mid,
                    "market_value": value,
                    "unrealized": value - pos.quantity * pos.avg_cost,
                }
            )
        return rows

    def account_values(self, now: datetime) -> dict[str, float]:
        rows = self.portfolio(now)
        market_value = sum(r["market_value"] for r in rows)
        gross = sum(abs(r["market_value"]) for r in rows)
        unrealized = sum(r["unrealized"] for r in rows)
        # Crude margin: longs are paid in full, shorts tie up their market value.
        margin = sum(abs(r["market_value"]) for r in rows if r["position"].quantity < 0)
        net_liq = self.cash + market_value
        available = net_liq - margin
        return {
            "NetLiquidation": net_liq,
            "TotalCashValue": self.cash,
            "SettledCash": self.cash,
            "CashBalance": self.cash,
            "BuyingPower": max(0.0, available),
            "AvailableFunds": available,
            "ExcessLiquidity": available,
            "EquityWithLoanValue": net_liq,
            "GrossPositionValue": gross,
            "InitMarginReq": margin,
            "MaintMarginReq": margin,
            "UnrealizedPnL": unrealized,
            "RealizedPnL": self.realized_pnl,
        }

    def what_if(self, order: SimOrder, now: datetime) -> dict[str, float]:
        """Margin and commission effect of an order, for whatIf requests."""
        before = self.account_values(now)
        q = self.quote_fn(order.contract, now)
        price = order.lmt_price or (q.mid if q else 0.0) or 0.0
        cost = order.total_quantity * price * order.contract.mult
        init_change = cost if order.action == "SELL" and order.contract.is_option else 0.0
        commission = self.commission_for(order.contract, order.total_quantity, price)
        ewl_change = -commission
        return {
            "init_before": before["InitMarginReq"],
            "maint_before": before["MaintMarginReq"],
            "ewl_before": before["EquityWithLoanValue"],
            "init_change": init_change,
            "maint_change": init_change,
            "ewl_change": ewl_change,
            "init_after": before["InitMarginReq"] + init_change,
            "maint_after": before["MaintMarginReq"] + init_change,
            "ewl_after": before["EquityWithLoanValue"] + ewl_change,
            "commission": commission,
        }


def _exec_exchange(c: SimContract) -> str:
    return "CBOE" if c.is_option else (c.primary_exchange or "ARCA")


def _qty_text(q: float) -> str:
    return str(int(q)) if float(q).is_integer() else str(q)


def spec_from_request(req: Any) -> OrderSpec:
    """An OrderSpec from a decoded PlaceOrderRequest (or anything with the same attributes)."""
    return OrderSpec(
        order_id=req.order_id,
        action=req.action,
        total_quantity=req.total_quantity,
        order_type=req.order_type,
        lmt_price=req.lmt_price,
        aux_price=req.aux_price,
        tif=req.tif,
        oca_group=req.oca_group,
        oca_type=req.oca_type,
        account=req.account,
        open_close=req.open_close,
        origin=req.origin,
        order_ref=req.order_ref,
        transmit=req.transmit,
        parent_id=req.parent_id,
        outside_rth=req.outside_rth,
        hidden=req.hidden,
        good_after_time=req.good_after_time,
        good_till_date=req.good_till_date,
        all_or_none=req.all_or_none,
        min_qty=req.min_qty,
        trail_stop_price=req.trail_stop_price,
        trailing_percent=req.trailing_percent,
        what_if=req.what_if,
        algo_strategy=req.algo_strategy,
    )


__all__ = [
    "PENDING_CANCEL",
    "BookListener",
    "OrderBook",
    "OrderRejected",
    "OrderSpec",
    "Quote",
    "SimContract",
    "SimExecution",
    "SimOrder",
    "SimPosition",
    "spec_from_request",
]

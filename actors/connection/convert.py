"""Conversions between ib_async's objects and our messages: pure functions, any thread."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from ib_async import Option, Trade

from actors import messages as m
from configs.redact import redact
from strategies.bars import Bar


def bar_from_ib(b: Any) -> Bar:
    t = b.date
    if isinstance(t, datetime):
        t = t if t.tzinfo else t.replace(tzinfo=UTC)
    else:  # daily bars come as dates
        t = datetime(t.year, t.month, t.day, tzinfo=UTC)
    return Bar(
        t.astimezone(UTC),
        float(b.open),
        float(b.high),
        float(b.low),
        float(b.close),
        float(b.volume),
    )


def finite(x: Any) -> float:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) and f >= 0 else math.nan


def price(x: Any) -> float:
    """A bid or ask as sent, negatives included (IB's -1 is "no quote"; ib_async turns it into
    NaN only when the size is 0): the caller rejects it with its reason, never reads it as
    missing."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def log_reason(trade: Any) -> str:
    """The last log entry of a trade, with IB's error code first ("201 Order rejected - ...")."""
    if not trade.log:
        return ""
    entry = trade.log[-1]
    return f"{entry.errorCode} {entry.message}".strip() if entry.errorCode else entry.message


def status_msg(trade: Trade, account: str) -> m.BrokerOrderStatus:
    s = trade.orderStatus
    return m.BrokerOrderStatus(
        order_ref=trade.order.orderRef,
        status=s.status,
        filled=float(s.filled),
        remaining=float(s.remaining),
        avg_fill_price=float(s.avgFillPrice or 0),
        order_id=trade.order.orderId,
        perm_id=trade.order.permId,
        # Broker text can name the account (201 "Invalid account code ..."): masked here,
        # before it reaches a log line, an order row or an event.
        reason=redact(log_reason(trade), (account,)),
    )


def exec_msg(fill: Any, clock: Any) -> m.BrokerExecution:
    """The clock's now stands in for an execution time ib_async could not parse."""
    e = fill.execution
    t = e.time if isinstance(e.time, datetime) else clock.now()
    return m.BrokerExecution(
        order_ref=e.orderRef,
        exec_id=e.execId,
        side=e.side,
        quantity=float(e.shares),
        price=float(e.price),
        time=t,
        commission=float(getattr(fill.commissionReport, "commission", 0.0) or 0.0),
    )


def working_msg(trade: Trade) -> m.BrokerWorkingOrder:
    o, c = trade.order, trade.contract
    return m.BrokerWorkingOrder(
        order_ref=o.orderRef or "",
        perm_id=int(o.permId or 0),
        order_id=int(o.orderId or 0),
        status=trade.orderStatus.status,
        con_id=c.conId,
        symbol=c.symbol,
        local_symbol=c.localSymbol,
        expiry=c.lastTradeDateOrContractMonth,
        strike=float(c.strike or 0.0),
        right=c.right,
        sec_type=c.secType,
        action=o.action,
        order_type=o.orderType,
        quantity=float(o.totalQuantity),
        limit_price=float(o.lmtPrice) if o.lmtPrice < 1e300 else 0.0,
        aux_price=float(o.auxPrice) if o.auxPrice < 1e300 else 0.0,
        oca_group=o.ocaGroup or "",
        parent_id=int(o.parentId or 0),
        multiplier=contract_multiplier(c),
    )


def contract_multiplier(c: Any) -> float:
    """A contract's multiplier as IB sent it (text, "" when not given), or 0 when unusable."""
    try:
        f = float(c.multiplier or 0)
    except (TypeError, ValueError):
        return 0.0
    return f if math.isfinite(f) and f > 0 else 0.0


def position_msg(p: Any) -> m.BrokerPosition:
    return m.BrokerPosition(
        con_id=p.contract.conId,
        symbol=p.contract.symbol,
        local_symbol=p.contract.localSymbol,
        expiry=p.contract.lastTradeDateOrContractMonth,
        strike=float(p.contract.strike),
        right=p.contract.right,
        quantity=float(p.position),
        avg_cost=float(p.avgCost),
        multiplier=contract_multiplier(p.contract),
    )


def net_liquidation(value: Any) -> float | None:
    """The account's net liquidation in dollars from one account value, or None (another tag,
    another currency, or not a number)."""
    if value.tag != "NetLiquidation" or value.currency not in ("USD", "BASE"):
        return None
    try:
        return float(value.value)
    except ValueError:
        return None


def ib_option(c: m.OptionContract) -> Option:
    opt = Option(
        c.symbol,
        c.expiry,
        c.strike,
        c.right,
        c.exchange,
        tradingClass=c.trading_class,
        multiplier=str(c.multiplier),
        currency="USD",
    )
    if c.con_id:
        opt.conId = c.con_id
    return opt


def option_value(contract: Any, c: m.OptionContract) -> m.OptionContract:
    """Our contract, completed with what IB's qualified one says (conId, local symbol...)."""
    return m.OptionContract(
        symbol=c.symbol,
        expiry=c.expiry,
        strike=c.strike,
        right=c.right,
        con_id=contract.conId,
        local_symbol=contract.localSymbol,
        trading_class=contract.tradingClass or c.trading_class,
        multiplier=int(float(contract.multiplier or c.multiplier)),
        exchange=c.exchange,
    )

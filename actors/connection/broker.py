"""Orders at the broker (loop thread only): placing and cancelling, the events of our orders
and the account, and the broker's whole state for reconciliation, its P&L included."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Any

from ib_async import IB, LimitOrder, MarketOrder, StopOrder, Trade

from actors import messages as m
from actors.base import tell
from actors.connection.convert import (
    exec_msg,
    ib_option,
    net_liquidation,
    position_msg,
    status_msg,
    working_msg,
)
from actors.crash import crashpoint

if TYPE_CHECKING:
    from actors.connection.session import Session

OCA_REDUCE_WITH_BLOCK = 2

log = logging.getLogger("optionsbot.connection")


def bracket_refused(msg: m.PlaceBracket, reason: str) -> None:
    """Every leg hears it was never sent."""
    for leg in msg.legs:
        tell(
            msg.reply_to,
            m.BrokerOrderStatus(
                order_ref=leg.order_ref,
                status="Inactive",
                filled=0,
                remaining=leg.quantity,
                avg_fill_price=0,
                order_id=0,
                perm_id=0,
                reason=f"not sent: {reason}",
            ),
        )


def reconciliation_postponed(reason: str) -> None:
    # No answer would leave OrderActor unreconciled; it asks again on the next resync.
    log.warning("reconciliation postponed: %s", reason)


class Broker:
    def __init__(self, session: Session) -> None:
        self.session = session
        # Who hears of our orders' statuses and fills, and of the account's value; the actor
        # adds to them by message (`subscribe`), the loop's events read them.
        self.listeners: dict[str, list[Any]] = {"orders": [], "account": []}

    def listen(self, ib: IB) -> None:
        ib.orderStatusEvent += self._on_trade_status
        ib.execDetailsEvent += self._on_exec
        ib.accountValueEvent += self._on_account_value
        ib.commissionReportEvent += self._on_commission

    async def subscribe(self, topics: tuple[str, ...], listener: Any) -> None:
        for topic in topics:
            self.listeners.setdefault(topic, []).append(listener)
        if "account" in topics and self.session.ib.isConnected():
            # The start-up sync may have delivered the account before this listener came.
            await self.push_account()

    def _account(self) -> str:
        return self.session.settings.broker.account.get_secret_value()

    def _publish(self, topic: str, msg: m.Msg) -> None:
        for ref in self.listeners[topic]:
            tell(ref, msg)

    # -- orders (live mode) -----------------------------------------------------------------
    async def place(self, msg: m.PlaceBracket) -> None:
        s = self.session
        contract = ib_option(msg.contract)
        ids: dict[str, int] = {}
        for leg in msg.legs:
            if leg.order_type == "LMT":
                order = LimitOrder(leg.action, leg.quantity, leg.limit_price)
            elif leg.order_type == "STP":
                order = StopOrder(leg.action, leg.quantity, leg.aux_price)
            else:
                order = MarketOrder(leg.action, leg.quantity)
            order.orderId = s.ib.client.getReqId()
            order.orderRef = leg.order_ref
            order.transmit = leg.transmit
            order.tif = leg.tif or "DAY"
            if leg.parent_ref:
                order.parentId = ids[leg.parent_ref]
            if leg.oca_group:
                # ocaType 2, "proportionally reduce remaining orders with block" (TWS API
                # Order.ocaType): a take-profit that fills 1 of 4 leaves the stop for 3, never
                # for 4 (a SELL stop for more than is held opens a short). Type 1 ("cancel with
                # block") leaves a partial fill's siblings to IB's undocumented handling.
                order.ocaGroup, order.ocaType = leg.oca_group, OCA_REDUCE_WITH_BLOCK
            if s.settings.broker.account.get_secret_value():
                order.account = s.settings.broker.account.get_secret_value()
            ids[leg.order_ref] = order.orderId
            s.ib.placeOrder(contract, order)
            crashpoint("between_legs" if not leg.transmit else "after_send_before_ack")
        s.done("place_order")

    async def cancel(self, order_ref: str) -> None:
        for trade in self.session.ib.openTrades():
            if trade.order.orderRef == order_ref:
                self.session.ib.cancelOrder(trade.order)

    # -- the broker's state, for reconciliation ------------------------------------------------
    async def state(self, msg: m.FetchBrokerState) -> None:
        """Ask afresh: open orders of every client id (ours may have rotated), today's completed
        orders and executions. The start-up sync only saw this client id's open orders."""
        s, ib = self.session, self.session.ib
        try:
            open_trades = await s.timed("broker_state", ib.reqAllOpenOrdersAsync())
            done = await s.timed("broker_state", ib.reqCompletedOrdersAsync(False))
            fills = await s.timed("broker_state", ib.reqExecutionsAsync())
            held = await s.timed("broker_state", ib.reqPositionsAsync())
        except Exception as exc:  # noqa: BLE001 - stay unreconciled (no new orders) and retry
            log.warning("reconciliation request failed (%s); retrying in 5s", exc)
            await asyncio.sleep(5)
            s.tell_actor(msg)
            return
        seen: dict[str, m.BrokerOrderStatus] = {}
        for trade in [*done, *open_trades, *ib.trades()]:
            status = status_msg(trade, self._account())
            if status.order_ref and status.order_ref not in seen:
                seen[status.order_ref] = status
        execs = {f.execution.execId: exec_msg(f, s.clock) for f in [*fills, *ib.fills()]}
        options = [p for p in held if p.contract.secType == "OPT" and p.position]
        positions = tuple((p.contract.conId, float(p.position)) for p in options)
        account = s.settings.broker.account.get_secret_value() or next(
            iter(ib.managedAccounts()), ""
        )
        pnl = await self._account_pnl(account)
        net_liq = math.nan
        for value in ib.accountValues():
            found = net_liquidation(value)
            if found is not None:
                net_liq = found
        tell(
            msg.reply_to,
            m.BrokerState(
                statuses=tuple(seen.values()),
                executions=tuple(execs.values()),
                positions=positions,
                holdings=tuple(position_msg(p) for p in options),
                working=tuple(working_msg(t) for t in open_trades),
                pnl=pnl,
                net_liquidation=net_liq,
                account=account,
            ),
        )

    async def _account_pnl(self, account: str) -> m.BrokerPnL | None:
        """Today's P&L of the account (reqPnL), or None when the broker does not answer in time.

        ib_async's IB.reqPnL returns a PnL object that its wrapper fills from each PNL message
        (decoder.py: msg 94 = reqId, dailyPnL, unrealizedPnL, realizedPnL) and keeps live: the
        subscription stays open and later reconciliations read the current figures."""
        if not account:
            return None
        ib = self.session.ib
        found = ib.pnl(account)
        pnl = found[0] if found else ib.reqPnL(account)
        if math.isnan(pnl.dailyPnL):
            answered = asyncio.get_running_loop().create_future()

            def on_pnl(p: Any) -> None:
                if p is pnl and not answered.done():
                    answered.set_result(True)

            ib.pnlEvent += on_pnl
            try:
                await asyncio.wait_for(answered, self.session.timeout("broker_state"))
            except TimeoutError:
                log.warning("the broker sent no P&L (reqPnL) in time; the loss guard keeps its own")
                return None
            finally:
                ib.pnlEvent -= on_pnl
        return m.BrokerPnL(
            daily=float(pnl.dailyPnL),
            unrealized=float(pnl.unrealizedPnL),
            realized=float(pnl.realizedPnL),
        )

    # -- events (ib_async calls these on the loop) -------------------------------------------------
    def _on_trade_status(self, trade: Trade) -> None:
        self._publish("orders", status_msg(trade, self._account()))

    def _on_exec(self, trade: Trade, fill: Any) -> None:
        msg = exec_msg(fill, self.session.clock)
        if not msg.order_ref:
            msg = m.BrokerExecution(
                **{
                    **{
                        f: getattr(msg, f)
                        for f in ("exec_id", "side", "quantity", "price", "time", "commission")
                    },
                    "order_ref": trade.order.orderRef,
                }
            )
        self._publish("orders", msg)

    def _on_commission(self, trade: Trade, fill: Any, report: Any) -> None:
        msg = m.BrokerCommission(exec_id=report.execId, commission=float(report.commission or 0.0))
        self._publish("orders", msg)

    async def push_account(self) -> None:
        for value in self.session.ib.accountValues():
            self._on_account_value(value)

    def _on_account_value(self, value: Any) -> None:
        nl = net_liquidation(value)
        if nl is not None:
            self._publish("account", m.AccountValues(net_liquidation=nl))

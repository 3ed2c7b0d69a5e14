"""Orders as clients see them: placeOrder/cancelOrder, open and completed orders, executions and
commission reports, and the order book's callbacks that push status changes to the clients.
Matching itself lives in sim/orders.py (OrderBook)."""

from __future__ import annotations

from datetime import date
from typing import Any

from sim import protocol as P
from sim.orders import PENDING_CANCEL, OrderRejected, SimExecution, SimOrder, spec_from_request
from sim.server.account import money
from sim.server.contracts import ERR_NO_SECURITY
from sim.server.core import ServerCore
from sim.server.sessions import ClientSession


class OrdersMixin(ServerCore):
    """Between the clients and the OrderBook: requests in, order events out.

    Holds no state of its own: the orders are the book's.
    """

    def _h_req_ids(self, s: ClientSession, fields: list[str]) -> None:
        s.send(P.msg_next_valid_id(self.book.next_order_id(s.client_id or 0)))

    def _h_place_order(self, s: ClientSession, fields: list[str]) -> None:
        req = P.decode_place_order(fields, s.version)
        now = self.clock.now()
        found = self.resolve(req.contract, now)
        if not found:
            s.send_error(req.order_id, 200, ERR_NO_SECURITY)
            return
        if len(found) > 1:
            s.send_error(
                req.order_id,
                200,
                f"The contract description specified for {req.contract.symbol} is ambiguous.",
            )
            return
        if found[0].sec_type == "IND":
            # An index is a calculated value, not a tradable product. IB's exact code and text here
            # are not documented; 201 (order rejected) is our guess at the closest.
            s.send_error(req.order_id, 201, "Order rejected - reason:An index is not tradable")
            return
        client_id = s.client_id or 0
        try:
            order = self.book.place(client_id, spec_from_request(req), found[0], now)
        except OrderRejected as e:
            s.send_error(req.order_id, e.code, e.text)
            return
        if order.what_if:
            w = self.book.what_if(order, now)
            state = P.OrderStateData(
                status="PreSubmitted",
                init_margin_before=money(w["init_before"]),
                maint_margin_before=money(w["maint_before"]),
                equity_with_loan_before=money(w["ewl_before"]),
                init_margin_change=money(w["init_change"]),
                maint_margin_change=money(w["maint_change"]),
                equity_with_loan_change=money(w["ewl_change"]),
                init_margin_after=money(w["init_after"]),
                maint_margin_after=money(w["maint_after"]),
                equity_with_loan_after=money(w["ewl_after"]),
                commission=w["commission"],
                min_commission=w["commission"],
                max_commission=w["commission"],
                commission_currency="USD",
            )
            s.send(P.msg_open_order(s.version, order, state))
            return
        if self.book.match(now, self.market.is_open(now)):
            self._account_changed()

    def _h_cancel_order(self, s: ClientSession, fields: list[str]) -> None:
        order_id = P.Reader(fields, 2).int()
        order = self.book.find_for_client(s.client_id or 0, order_id, s.is_master)
        if order is not None and order.is_live:
            # IB acknowledges a cancel with PendingCancel before the final Cancelled.
            order.status = PENDING_CANCEL
            self.order_changed(order, False)
        try:
            self.book.cancel(s.client_id or 0, order_id, self.clock.now(), master=s.is_master)
        except OrderRejected as e:
            s.send_error(order_id, e.code, e.text)

    def _h_req_global_cancel(self, s: ClientSession, fields: list[str]) -> None:
        self.book.global_cancel(self.clock.now())

    def _visible(self, s: ClientSession, order: SimOrder) -> bool:
        return s.is_master or order.client_id == s.client_id

    def _open_order_messages(self, s: ClientSession, orders: list[SimOrder]) -> list[Any]:
        msgs: list[Any] = []
        for o in orders:
            msgs.append(P.msg_open_order(s.version, o, P.OrderStateData(o.status)))
            msgs.append(P.msg_order_status(o))
        return msgs

    def _h_req_open_orders(self, s: ClientSession, fields: list[str]) -> None:
        orders = [o for o in self.book.live_orders() if self._visible(s, o)]
        s.send_many(self._open_order_messages(s, orders) + [P.msg_open_order_end()])

    def _h_req_all_open_orders(self, s: ClientSession, fields: list[str]) -> None:
        s.send_many(
            self._open_order_messages(s, self.book.live_orders()) + [P.msg_open_order_end()]
        )

    def _h_req_auto_open_orders(self, s: ClientSession, fields: list[str]) -> None:
        # TWS answers nothing: it only binds future manual orders to client 0.
        s.auto_open_orders = P.Reader(fields, 2).bool()

    def _h_req_completed_orders(self, s: ClientSession, fields: list[str]) -> None:
        today = self._today()
        msgs: list[Any] = []
        for o in self.book.completed_orders():
            if o.completed_time is None or P.as_date(o.completed_time) != today:
                continue
            msgs.append(
                P.msg_completed_order(
                    s.version, o, o.status, P.format_ib_time(o.completed_time), o.completed_status
                )
            )
        msgs.append(P.msg_completed_orders_end())
        s.send_many(msgs)

    def _h_req_executions(self, s: ClientSession, fields: list[str]) -> None:
        f = P.decode_req_executions(fields)
        after = None
        if f.time.strip():
            try:
                after = P.parse_ib_datetime(f.time)
            except (ValueError, KeyError):
                after = None
        today = self._today()
        side = {"BUY": "BOT", "SELL": "SLD"}.get(f.side, f.side)
        msgs: list[Any] = []
        for e in self.book.executions:
            if P.as_date(e.time) != today:
                continue
            if f.client_id and e.client_id != f.client_id:
                continue
            if f.account and f.account != e.account:
                continue
            if after is not None and e.time < after:
                continue
            if f.symbol and f.symbol != e.contract.symbol:
                continue
            if f.sec_type and f.sec_type != e.contract.sec_type:
                continue
            if f.exchange and f.exchange not in (e.exchange, e.contract.exchange):
                continue
            if side and side != e.side:
                continue
            msgs.append(P.msg_execution(s.version, f.req_id, e))
            msgs.append(P.msg_commission_report(e.exec_id, e.commission, "USD", e.realized_pnl))
        msgs.append(P.msg_execution_end(f.req_id))
        s.send_many(msgs)

    def _today(self) -> date:
        return P.as_date(self.clock.now())

    def _order_sessions(self, order: SimOrder) -> list[ClientSession]:
        out = []
        owner = self.by_client.get(order.client_id)
        if owner is not None and not owner.closed:
            out.append(owner)
        master = self.by_client.get(0)
        if master is not None and master is not owner and not master.closed:
            out.append(master)
        return out

    def order_changed(self, order: SimOrder, open_order: bool) -> None:
        for s in self._order_sessions(order):
            msgs: list[Any] = []
            if open_order:
                msgs.append(P.msg_open_order(s.version, order, P.OrderStateData(order.status)))
            msgs.append(P.msg_order_status(order))
            s.send_many(msgs)

    def order_error(self, order: SimOrder, code: int, text: str) -> None:
        owner = self.by_client.get(order.client_id)
        if owner is not None and not owner.closed:
            owner.send_error(order.order_id, code, text)

    def order_filled(self, order: SimOrder, execution: SimExecution) -> None:
        self.stats["fills"] += 1
        self._account_changed()
        for s in self._order_sessions(order):
            s.send_many(
                [
                    P.msg_execution(s.version, -1, execution),
                    P.msg_commission_report(
                        execution.exec_id, execution.commission, "USD", execution.realized_pnl
                    ),
                    P.msg_open_order(s.version, order, P.OrderStateData(order.status)),
                    P.msg_order_status(order),
                ]
            )

"""Account: account values and portfolio (reqAccountUpdates, ...Multi, reqAccountSummary),
positions (reqPositions, ...Multi) and P&L (reqPnL), pushed when the book changes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sim import protocol as P
from sim.market import NEW_YORK
from sim.orders import SimContract, SimPosition
from sim.server.contracts import with_exchange
from sim.server.core import ServerCore
from sim.server.sessions import ClientSession

ACCOUNT_REFRESH = timedelta(minutes=3)


class AccountMixin(ServerCore):
    """Account, position and P&L messages, from the order book's figures."""

    # Something changed the account since the last push; the next step pushes it.
    _account_dirty: bool
    _last_account_push: datetime | None
    # reqPnL: the day's baseline (New York date, net liquidation and realized P&L at its
    # start). The simulator starts flat, so its first day starts from the starting cash.
    _pnl_day: tuple[Any, float, float] | None

    def _init_account(self) -> None:
        self._account_dirty = False
        self._last_account_push = None
        self._pnl_day = None

    def _account_changed(self) -> None:
        """Something moved the account: the next simulation step pushes it to the clients."""
        self._account_dirty = True

    def _h_req_managed_accounts(self, s: ClientSession, fields: list[str]) -> None:
        s.send(P.msg_managed_accounts([self.options.account]))

    def position_changed(self, position: SimPosition) -> None:
        self._account_changed()
        account = self.options.account
        for s in list(self.sessions):
            if s.closed:
                continue
            msgs: list[Any] = []
            if s.positions_sub:
                msgs.append(
                    P.msg_position(
                        account,
                        _position_contract(position.contract),
                        position.quantity,
                        position.avg_cost,
                    )
                )
            for rid in s.positions_multi:
                msgs.append(
                    P.msg_position_multi(
                        rid,
                        account,
                        _position_contract(position.contract),
                        position.quantity,
                        position.avg_cost,
                    )
                )
            s.send_many(msgs)

    def _account_rows(self, now: datetime) -> list[tuple[str, str, str]]:
        values = self.book.account_values(now)
        rows = [
            ("AccountCode", self.options.account, ""),
            ("AccountType", "INDIVIDUAL", ""),
            ("Currency", "USD", "USD"),
        ]
        rows += [(k, money(v), "USD") for k, v in values.items()]
        rows += [
            ("CashBalance", money(self.book.cash), "BASE"),
            ("NetLiquidationByCurrency", money(values["NetLiquidation"]), "BASE"),
        ]
        return rows

    def _portfolio_messages(self, now: datetime) -> list[Any]:
        account = self.options.account
        msgs: list[Any] = []
        for row in self.book.portfolio(now):
            pos: SimPosition = row["position"]
            msgs.append(
                P.msg_portfolio_value(
                    pos.contract,
                    pos.quantity,
                    row["market_price"],
                    row["market_value"],
                    pos.avg_cost,
                    row["unrealized"],
                    pos.realized_pnl,
                    account,
                )
            )
        return msgs

    def _pnl(self, now: datetime) -> tuple[float, float, float]:
        """(daily, unrealized, realized) as IB's reqPnL reports them: dailyPnL is today's change
        in the account's value, unrealizedPnL the open positions' since they were opened and
        realizedPnL today's (IB's tws-api pnl.html; ib_async decoder.py msg 94)."""
        values = self.book.account_values(now)
        day = now.astimezone(NEW_YORK).date()
        if self._pnl_day is None:
            self._pnl_day = (day, self.options.starting_cash, 0.0)
        elif self._pnl_day[0] != day:
            self._pnl_day = (day, values["NetLiquidation"], self.book.realized_pnl)
        _, base_liq, base_realized = self._pnl_day
        return (
            values["NetLiquidation"] - base_liq,
            values["UnrealizedPnL"],
            self.book.realized_pnl - base_realized,
        )

    def _h_req_pnl(self, s: ClientSession, fields: list[str]) -> None:
        # EClient.reqPnL sends: 92, reqId, account, modelCode (no version field).
        r = P.Reader(fields, 1)
        req_id = r.int()
        account = r.str()
        if account and account != self.options.account:
            # What IB answers for an account this login does not manage is not documented (the
            # tws-api pnl page is silent on it): the simulator stays silent, and a client must
            # not wait for ever.
            return
        # Answered with the next account push, which carries the account values first: the
        # figures a client holds then are of one moment (IB's P&L and account values refresh on
        # schedules of their own; a client that mixes them is off by what moved in between).
        s.pnl_subs.add(req_id)
        self._account_changed()

    def _h_cancel_pnl(self, s: ClientSession, fields: list[str]) -> None:
        s.pnl_subs.discard(P.Reader(fields, 1).int())

    def _push_account(self, now: datetime) -> None:
        self._account_dirty = False
        self._last_account_push = now
        pnl_targets = [s for s in self.sessions if not s.closed and s.pnl_subs]
        figures = self._pnl(now) if pnl_targets else None
        targets = [
            s for s in self.sessions if not s.closed and (s.account_updates or s.account_multi)
        ]
        for s in pnl_targets:
            if s not in targets:
                s.send_many([P.msg_pnl(rid, *figures) for rid in sorted(s.pnl_subs)])
        if not targets:
            return
        rows = self._account_rows(now)
        portfolio = self._portfolio_messages(now)
        account = self.options.account
        for s in targets:
            msgs: list[Any] = []
            if s.account_updates:
                msgs += [P.msg_account_value(k, v, cur, account) for k, v, cur in rows]
                msgs += portfolio
                msgs.append(P.msg_account_update_time(now))
            for rid in s.account_multi:
                msgs += [P.msg_account_update_multi(rid, account, k, v, cur) for k, v, cur in rows]
            if figures is not None:
                msgs += [P.msg_pnl(rid, *figures) for rid in sorted(s.pnl_subs)]
            s.send_many(msgs)

    def _h_req_account_updates(self, s: ClientSession, fields: list[str]) -> None:
        r = P.Reader(fields, 2)
        subscribe = r.bool()
        account = r.str() or self.options.account
        if not subscribe:
            s.account_updates = False
            return
        s.account_updates = True
        now = self.clock.now()
        msgs: list[Any] = [
            P.msg_account_value(k, v, cur, self.options.account)
            for k, v, cur in self._account_rows(now)
        ]
        msgs += self._portfolio_messages(now)
        msgs.append(P.msg_account_update_time(now))
        msgs.append(P.msg_account_download_end(account))
        s.send_many(msgs)

    def _h_req_account_updates_multi(self, s: ClientSession, fields: list[str]) -> None:
        r = P.Reader(fields, 2)
        req_id = r.int()
        now = self.clock.now()
        account = self.options.account
        msgs: list[Any] = [
            P.msg_account_update_multi(req_id, account, k, v, cur)
            for k, v, cur in self._account_rows(now)
        ]
        msgs.append(P.msg_account_update_multi_end(req_id))
        s.account_multi.add(req_id)
        s.send_many(msgs)

    def _h_cancel_account_updates_multi(self, s: ClientSession, fields: list[str]) -> None:
        s.account_multi.discard(P.Reader(fields, 2).int())

    def _h_req_positions(self, s: ClientSession, fields: list[str]) -> None:
        s.positions_sub = True
        account = self.options.account
        msgs: list[Any] = [
            P.msg_position(account, _position_contract(p.contract), p.quantity, p.avg_cost)
            for p in sorted(self.book.positions.values(), key=lambda p: p.contract.con_id)
        ]
        msgs.append(P.msg_position_end())
        s.send_many(msgs)

    def _h_cancel_positions(self, s: ClientSession, fields: list[str]) -> None:
        s.positions_sub = False

    def _h_req_positions_multi(self, s: ClientSession, fields: list[str]) -> None:
        req_id = P.Reader(fields, 2).int()
        account = self.options.account
        msgs: list[Any] = [
            P.msg_position_multi(
                req_id, account, _position_contract(p.contract), p.quantity, p.avg_cost
            )
            for p in sorted(self.book.positions.values(), key=lambda p: p.contract.con_id)
        ]
        msgs.append(P.msg_position_multi_end(req_id))
        s.positions_multi.add(req_id)
        s.send_many(msgs)

    def _h_cancel_positions_multi(self, s: ClientSession, fields: list[str]) -> None:
        s.positions_multi.discard(P.Reader(fields, 2).int())

    def _h_req_account_summary(self, s: ClientSession, fields: list[str]) -> None:
        r = P.Reader(fields, 2)
        req_id = r.int()
        r.skip(1)  # group
        tags = {t.strip() for t in r.str().split(",") if t.strip()}
        now = self.clock.now()
        account = self.options.account
        values = {k: (v, cur) for k, v, cur in self._account_rows(now) if cur != "BASE"}
        values["Cushion"] = ("1", "")
        values["Leverage-S"] = ("0", "")
        msgs: list[Any] = []
        for tag, (value, cur) in values.items():
            if tag in tags:
                msgs.append(P.msg_account_summary(req_id, account, tag, value, cur))
        msgs.append(P.msg_account_summary_end(req_id))
        s.account_summary[req_id] = tags
        s.send_many(msgs)

    def _h_cancel_account_summary(self, s: ClientSession, fields: list[str]) -> None:
        s.account_summary.pop(P.Reader(fields, 2).int(), None)


def money(v: float) -> str:
    return f"{v:.2f}"


def _position_contract(c: SimContract) -> SimContract:
    # IB reports positions without a routing exchange; clients qualify before trading.
    return with_exchange(c, "")

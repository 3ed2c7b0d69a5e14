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

# reqAccountSummary tags the simulator answers: the 29 of ibapi's AccountSummaryTags.AllTags
# (ibapi/account_summary_tags.py, 10.50) under their real names, and the T+1..T+4 day-trade
# counts ib_async asks for. IB answers "Leverage" as "Leverage-S" (a capture in NautilusTrader's
# IB test resources); it answers no row for a name it does not know, such as ibapi's own
# misspelt "ReqTEquity"/"ReqTMargin" (ib_insync issue #589: the names are RegTEquity/RegTMargin).
SUMMARY_ANSWERED_AS = {"Leverage": "Leverage-S"}

# The $LEDGER tags (cash balance tags, per currency) the simulator keeps: USD only, and BASE.
LEDGER_TAGS = (
    "CashBalance",
    "TotalCashBalance",
    "NetLiquidationByCurrency",
    "StockMarketValue",
    "OptionMarketValue",
    "UnrealizedPnL",
    "RealizedPnL",
    "ExchangeRate",
    "Currency",
)


class AccountMixin(ServerCore):
    """Account, position and P&L messages, from the order book's figures."""

    # Something changed the account since the last push; the next step pushes it.
    _account_dirty: bool
    _last_account_push: datetime | None
    # reqPnL: the day's baseline (New York date, net liquidation and realized P&L at its
    # start). The simulator starts flat, so its first day starts from the starting cash.
    _pnl_day: tuple[Any, float, float] | None
    # reqAccountSummary: what each (session, reqId) was last sent, (tag, currency) -> value, so
    # a push carries only the values that changed, as IB's does.
    _summary_sent: dict[tuple[ClientSession, int], dict[tuple[str, str], str]]

    def _init_account(self) -> None:
        self._account_dirty = False
        self._last_account_push = None
        self._pnl_day = None
        self._summary_sent = {}

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
        base_liq, base_realized = self._day_start(now, values)
        return (
            values["NetLiquidation"] - base_liq,
            values["UnrealizedPnL"],
            self.book.realized_pnl - base_realized,
        )

    def _day_start(self, now: datetime, values: dict[str, float]) -> tuple[float, float]:
        """(net liquidation, realized P&L) at the start of the New York day."""
        day = now.astimezone(NEW_YORK).date()
        if self._pnl_day is None:
            self._pnl_day = (day, self.options.starting_cash, 0.0)
        elif self._pnl_day[0] != day:
            self._pnl_day = (day, values["NetLiquidation"], self.book.realized_pnl)
        return self._pnl_day[1], self._pnl_day[2]

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
        self._push_account_summary(now)
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

    def _summary_values(self, now: datetime) -> dict[str, tuple[str, str]]:
        """Every account summary tag the simulator answers, by the name IB answers it under.

        From the order book's crude margin model: no look-ahead and no intraday/overnight
        difference, so the Full* and LookAhead* figures equal the current ones; the account is
        over USD 25,000 with no pattern-day-trader limit (DayTradesRemaining -1 means unlimited,
        ibapi client.py reqAccountSummary)."""
        v = self.book.account_values(now)
        net = v["NetLiquidation"]
        prev_ewl, _ = self._day_start(now, v)
        usd = {
            "NetLiquidation": net,
            "TotalCashValue": v["TotalCashValue"],
            "SettledCash": v["SettledCash"],
            "AccruedCash": 0.0,
            "BuyingPower": v["BuyingPower"],
            "EquityWithLoanValue": v["EquityWithLoanValue"],
            "PreviousDayEquityWithLoanValue": prev_ewl,
            "GrossPositionValue": v["GrossPositionValue"],
            "RegTEquity": v["EquityWithLoanValue"],
            "RegTMargin": v["InitMarginReq"],
            "SMA": v["AvailableFunds"],
        }
        for kind in ("InitMarginReq", "MaintMarginReq", "AvailableFunds", "ExcessLiquidity"):
            for prefix in ("", "Full", "LookAhead"):
                usd[prefix + kind] = v[kind]
        values = {tag: (money(x), "USD") for tag, x in usd.items()}
        values["AccountType"] = ("INDIVIDUAL", "")
        values["Cushion"] = (f"{v['ExcessLiquidity'] / net if net > 0 else 0.0:.6f}", "")
        values["Leverage-S"] = (f"{v['GrossPositionValue'] / net if net > 0 else 0.0:.2f}", "")
        # When the look-ahead figures take effect, in epoch seconds: the coming session close.
        bounds = self.market.session_open_close(now) or self.market.session_open_close(
            self.market.next_open(now)
        )
        values["LookAheadNextChange"] = (str(int(bounds[1].timestamp())) if bounds else "0", "")
        values["HighestSeverity"] = ("0", "")
        for suffix in ("", "T+1", "T+2", "T+3", "T+4"):
            values["DayTradesRemaining" + suffix] = ("-1", "")
        return values

    def _ledger_rows(self, now: datetime, which: str) -> list[tuple[str, str, str]]:
        """$LEDGER (base currency), $LEDGER:USD and $LEDGER:ALL (every currency and BASE)."""
        v = self.book.account_values(now)
        rows = self.book.portfolio(now)
        options = sum(r["market_value"] for r in rows if r["position"].contract.is_option)
        stocks = sum(r["market_value"] for r in rows) - options
        figures = {
            "CashBalance": money(self.book.cash),
            "TotalCashBalance": money(self.book.cash),
            "NetLiquidationByCurrency": money(v["NetLiquidation"]),
            "StockMarketValue": money(stocks),
            "OptionMarketValue": money(options),
            "UnrealizedPnL": money(v["UnrealizedPnL"]),
            "RealizedPnL": money(v["RealizedPnL"]),
            "ExchangeRate": "1.00",
        }
        currencies = {"$LEDGER": ["BASE"], "$LEDGER:USD": ["USD"], "$LEDGER:ALL": ["USD", "BASE"]}
        out = []
        for cur in currencies.get(which, []):
            for tag in LEDGER_TAGS:
                out.append((tag, cur if tag == "Currency" else figures[tag], cur))
        return out

    def _summary_rows(
        self, tags: set[str], now: datetime, values: dict[str, tuple[str, str]] | None = None
    ) -> dict[tuple[str, str], str]:
        """(tag, currency) -> value for a subscription's requested tags, as IB names them."""
        values = values if values is not None else self._summary_values(now)
        rows: dict[tuple[str, str], str] = {}
        for requested in sorted(tags):
            if requested.upper().startswith("$LEDGER"):
                for tag, value, cur in self._ledger_rows(now, requested.upper()):
                    rows[(tag, cur)] = value
                continue
            tag = SUMMARY_ANSWERED_AS.get(requested, requested)
            if tag in values:
                value, cur = values[tag]
                rows[(tag, cur)] = value
        return rows

    def _h_req_account_summary(self, s: ClientSession, fields: list[str]) -> None:
        r = P.Reader(fields, 2)
        req_id = r.int()
        r.skip(1)  # group: the simulator manages one account, which "All" and any group cover
        tags = {t.strip() for t in r.str().split(",") if t.strip()}
        rows = self._summary_rows(tags, self.clock.now())
        account = self.options.account
        msgs: list[Any] = [
            P.msg_account_summary(req_id, account, tag, value, cur)
            for (tag, cur), value in rows.items()
        ]
        msgs.append(P.msg_account_summary_end(req_id))
        s.account_summary[req_id] = tags
        self._summary_sent[(s, req_id)] = rows
        s.send_many(msgs)

    def _push_account_summary(self, now: datetime) -> None:
        """The values of each summary subscription that changed since it was last sent.

        IB sends changed values every three minutes (tws-api account_summary.html) and, as for
        reqAccountUpdates, at once when a position changes (account_updates.html). The simulator
        pushes with every account push: after a fill or position change, and every three minutes
        while positions are open. Each batch ends with accountSummaryEnd, so a client can tell a
        complete update (IB's own end marker after updates is unconfirmed).
        """
        live = {(s, rid) for s in self.sessions if not s.closed for rid in s.account_summary}
        for key in [k for k in self._summary_sent if k not in live]:
            del self._summary_sent[key]
        if not live:
            return
        values = self._summary_values(now)
        account = self.options.account
        for s, rid in sorted(live, key=lambda k: (k[0].conn_no, k[1])):
            tags = s.account_summary[rid] or set()
            rows = self._summary_rows(tags, now, values)
            sent = self._summary_sent.setdefault((s, rid), {})
            changed = {k: v for k, v in rows.items() if sent.get(k) != v}
            if not changed:
                continue
            sent.update(changed)
            msgs: list[Any] = [
                P.msg_account_summary(rid, account, tag, value, cur)
                for (tag, cur), value in changed.items()
            ]
            msgs.append(P.msg_account_summary_end(rid))
            s.send_many(msgs)

    def _h_cancel_account_summary(self, s: ClientSession, fields: list[str]) -> None:
        rid = P.Reader(fields, 2).int()
        s.account_summary.pop(rid, None)
        self._summary_sent.pop((s, rid), None)


def money(v: float) -> str:
    return f"{v:.2f}"


def _position_contract(c: SimContract) -> SimContract:
    # IB reports positions without a routing exchange; clients qualify before trading.
    return with_exchange(c, "")

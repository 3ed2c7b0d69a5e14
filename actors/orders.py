"""OrderActor: option choice, brackets, one order machine per order, write-ahead persistence, paper fills."""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from transitions import MachineError

from actors import messages as m
from actors.adoption import Adoption
from actors.base import BaseActor
from actors.crash import crashpoint
from actors.hours import MarketHours
from actors.ibcodes import CANCEL_REFUSED, ORDER_REJECTED, error_code
from actors.ledger import Holding, apply_fill, fold
from actors.metrics import Metrics
from actors.paper import PaperBook, PaperFill, PaperOrder
from configs.settings import Settings
from machines.order import OrderModel, OrderState, order_machine
from storage import JournalRepo, KeyValueRepo, OrderRepo, PositionRepo, TradingDayRepo, open_db
from storage.db import write
from storage.repos import iso
from strategies.options import (
    OptionParams,
    OptionQuoteView,
    choose_expiry,
    choose_option,
    nearest_strikes,
    quote_problem,
    target_strike,
)
from strategies.protection import ExitOrder, Intent, coverage, intents
from strategies.signals import Direction
from strategies.ticks import bracket_prices, entry_limit, tick_size

log = logging.getLogger("optionsbot.orders")

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

# Real seconds before the same gap on the same contract is covered again: a protection the broker
# rejects must not be resent on every Tick.
PROTECT_RETRY_S = 30.0

# IB status -> order machine trigger (None: nothing to do).
STATUS_TRIGGER = {
    "PendingSubmit": None,
    "ApiPending": None,
    "PreSubmitted": "accept",
    "Submitted": "accept",
    "PendingCancel": None,
    "ApiCancelled": "cancelled",
    "Cancelled": "cancelled",
    "Inactive": "deactivate",
    "Filled": "fill",
}


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


@dataclass
class Book:
    """Money view of the open positions, for risk and the P&L gauges."""

    last_mid: dict[int, float] = field(default_factory=dict)


class OrderActor(Adoption, BaseActor):
    name = "orders"

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        clock: Any,
        connection: Any,
        risk: Any,
        hours: MarketHours | None = None,
    ):
        super().__init__()
        self.hours = hours or MarketHours()
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.connection = connection
        self.risk = risk
        self.params = option_params(settings)
        self.dry_run = settings.dry_run
        self.entries: dict[str, Entry] = {}
        self.machines: dict[str, OrderModel] = {}
        self.chains: dict[str, tuple[Any, m.Chain]] = {}
        self.paper = PaperBook()
        self.bad_quote_seen: set[int] = set()  # conIds whose bad quote was logged (once a run)
        self.book = Book()
        self.watched: dict[int, m.OptionContract] = {}
        self.reconciled = self.dry_run
        self.submitted_at: dict[str, float] = {}
        self.stopping = False
        self.sent_mono: dict[str, float] = {}  # submit -> first broker answer, for ack latency
        self.fill_seq = 0
        # con_id -> gap at the last check, so each incident is logged once
        self.uncovered: dict[int, float] = {}
        self.excess: dict[int, float] = {}
        # con_id -> what the broker held at the last reconciliation where it held less than
        # SQLite says, moved by every fill since: protection never covers more than that
        self.broker_cap: dict[int, float] = {}
        # con_id -> monotonic time and order refs of the last attempt to cover it
        self.protect_tried: dict[int, tuple[float, list[str]]] = {}
        self.was_open: bool | None = None  # market open at the last Tick (paper DAY expiry)

    # -- lifecycle -----------------------------------------------------------------------------
    def on_start(self) -> None:
        self.db = open_db(self.settings.storage.path)
        self.orders = OrderRepo(self.db)
        self.journal = JournalRepo(self.db)
        self.positions = PositionRepo(self.db)
        self.days = TradingDayRepo(self.db)
        self.kv = KeyValueRepo(self.db)
        self._restore()
        self.connection.tell(m.Subscribe(listener=self.actor_ref, topics=("connection", "orders")))
        self._publish()

    def on_stop(self) -> None:
        self.db.close()

    def _restore(self) -> None:
        """Rebuild every non-terminal order's machine from SQLite (no callbacks fire on restore)."""
        rows = self.orders.open_orders()
        for row in rows:
            state = OrderState(row["state"])
            model = OrderModel(
                order_ref=row["order_ref"], quantity=row["quantity"], filled=row["filled"] or 0.0
            )
            order_machine(model, state)
            self.machines[row["order_ref"]] = model
            if state is OrderState.NEW:
                self._fire(row["order_ref"], "abandon", reason="never sent before the restart")
            elif self.dry_run:
                self.paper.add(
                    PaperOrder(
                        order_ref=row["order_ref"],
                        con_id=row["con_id"],
                        action=row["action"],
                        order_type=row["order_type"],
                        quantity=row["quantity"] - (row["filled"] or 0),
                        limit_price=row["limit_price"] or 0.0,
                        aux_price=row["aux_price"] or 0.0,
                        parent_ref=row["parent_ref"] or "",
                        oca_group=row["oca_group"] or "",
                        active=not row["parent_ref"] or self._parent_filled(row["parent_ref"]),
                        tif=TIF.get(row["role"], "DAY"),
                    )
                )
                self.watched[row["con_id"]] = self._contract_of(row)
            elif state is not OrderState.UNKNOWN:  # still unknown from an earlier crash: stays so
                self._fire(
                    row["order_ref"], "lose_track", reason="restart: reconcile with the broker"
                )
        if rows:
            log.info(
                "restored %d open orders from SQLite (%s)",
                len(rows),
                "paper book rebuilt" if self.dry_run else "reconciling with the broker",
            )

    def _parent_filled(self, parent_ref: str) -> bool:
        row = self.orders.get(parent_ref)
        return bool(row and row["state"] == OrderState.FILLED)

    @staticmethod
    def _contract_of(row: dict[str, Any]) -> m.OptionContract:
        return m.OptionContract(
            symbol=row["symbol"],
            expiry=row["expiry"],
            strike=row["strike"],
            right=row["right"],
            con_id=row["con_id"],
            local_symbol=row["local_symbol"] or "",
            trading_class=row["symbol"],
        )

    # -- the machines ----------------------------------------------------------------------------
    def _fire(self, order_ref: str, trigger: str, reason: str = "", **fields: Any) -> bool:
        model = self.machines.get(order_ref)
        if model is None:
            return False
        source = model.state
        try:
            getattr(model, trigger)(reason=reason)
        except MachineError:
            log.warning("order %s: %s not allowed in %s (%s)", order_ref, trigger, source, reason)
            return False
        self.orders.transition(
            order_ref,
            trigger,
            source,
            model.state,
            {"reason": reason} if reason else None,
            at=self.clock.now(),
            reason=reason or None,
            **fields,
        )
        self.metrics.order_transitions.labels(model.state).inc()
        if trigger == "submit":
            self.sent_mono[order_ref] = time.monotonic()
        elif source == OrderState.PENDING_SUBMIT and order_ref in self.sent_mono:
            self.metrics.order_ack.observe(time.monotonic() - self.sent_mono.pop(order_ref))
        if model.is_terminal:
            self.machines.pop(order_ref, None)
        self._count_states()
        return True

    def _count_states(self) -> None:
        counts = self.orders.count_by_state()
        for s in OrderState:
            self.metrics.orders.labels(s.value).set(counts.get(s.value, 0))

    # -- connection ---------------------------------------------------------------------------------
    def on_ConnectionChanged(self, msg: m.ConnectionChanged) -> None:
        if not msg.resync:
            return
        for contract in self.watched.values():
            self.connection.tell(m.WatchQuotes(contract=contract, reply_to=self.actor_ref))
        if not self.dry_run:
            self.reconciled = False
            self.connection.tell(m.FetchBrokerState(reply_to=self.actor_ref))

    # -- entry flow -------------------------------------------------------------------------------
    def _finish(
        self, symbol: str, placed: bool, reason: str = "", detail: dict | None = None
    ) -> None:
        """The end of an entry: journaled and counted either way, and RiskActor told."""
        entry = self.entries.pop(symbol, None)
        code = reason.split(":", 1)[0][:40] if not placed else "ok"
        self.metrics.decisions.labels("option", "approved" if placed else "skipped", code).inc()
        info = dict(detail or {})
        if entry is not None:
            sig = entry.idea.signal
            info.update(
                strategy=sig.kind,
                direction=sig.direction and sig.direction.value,
                bar_time=sig.bar_time.isoformat(),
                expiry=entry.expiry,
                limit=entry.limit,
            )
        self.journal.decision(
            symbol=symbol,
            stage="option",
            outcome="approved" if placed else "skipped",
            reason=reason or "ok",
            detail=info,
            at=self.clock.now(),
        )
        if not placed:
            log.info("%s entry skipped: %s", symbol, reason)
        self.risk.tell(m.EntryFinished(symbol=symbol, placed=placed, reason=reason))

    def on_Shutdown(self, msg: m.Shutdown) -> None:
        self.stopping = True

    def in_flight(self) -> int:
        """Orders sent but not yet acknowledged: a graceful stop waits for them."""
        return sum(
            1 for model in self.machines.values() if model.state == OrderState.PENDING_SUBMIT
        )

    def on_EntryApproved(self, msg: m.EntryApproved) -> None:
        symbol = msg.idea.signal.symbol
        if self.stopping:
            self.entries[symbol] = Entry(msg.idea, msg.equity)
            self._finish(symbol, False, "stopping: the service is shutting down")
            return
        if not self.reconciled:
            self.entries[symbol] = Entry(msg.idea, msg.equity)
            self._finish(
                symbol, False, "reconciling: no new order until the broker's state is matched"
            )
            return
        if self.unvouched:  # RiskActor's gate refuses too; this closes the race with its view
            self.entries[symbol] = Entry(msg.idea, msg.equity)
            self._finish(symbol, False, self.unvouched)
            return
        entry = Entry(msg.idea, msg.equity)
        self.entries[symbol] = entry
        today = MarketHours.trading_date(self.clock.now())
        cached = self.chains.get(symbol)
        if cached and cached[0] == today:
            self._with_chain(entry, cached[1])
        else:
            self.connection.tell(m.FetchChain(symbol=symbol, reply_to=self.actor_ref))

    def on_ChainFetched(self, msg: m.ChainFetched) -> None:
        entry = self.entries.get(msg.symbol)
        if entry is None:
            return
        if msg.chain is None:
            self._finish(msg.symbol, False, f"no_chain: {msg.reason}")
            return
        self.chains[msg.symbol] = (MarketHours.trading_date(self.clock.now()), msg.chain)
        self._with_chain(entry, msg.chain)

    def _with_chain(self, entry: Entry, chain: m.Chain) -> None:
        sig = entry.idea.signal
        entry.chain = chain
        today = MarketHours.trading_date(self.clock.now())
        expiry = choose_expiry(chain.expirations, today, self.params)
        if expiry is None:
            self._finish(
                sig.symbol, False, f"no_expiry: none at least {self.params.min_dte} days out"
            )
            return
        spot = sig.price
        direction = sig.direction or Direction.CALL
        target = target_strike(chain.strikes, spot, direction, self.params.moneyness)
        strikes = nearest_strikes(chain.strikes, spot, self.params.strike_count)
        if target is None or not strikes:
            self._finish(sig.symbol, False, f"no_strike: none near {spot:.2f}")
            return
        if target not in strikes:
            strikes = sorted({*strikes, target})
        entry.expiry, entry.target = expiry, target
        right = "C" if direction is Direction.CALL else "P"
        contracts = tuple(
            m.OptionContract(
                symbol=sig.symbol,
                expiry=expiry,
                strike=k,
                right=right,
                trading_class=chain.trading_class,
                multiplier=chain.multiplier,
            )
            for k in strikes
        )
        self.connection.tell(
            m.FetchQuotes(
                contracts=contracts,
                reply_to=self.actor_ref,
                wait_s=self.settings.options.quote_wait_s,
                tag=sig.symbol,
            )
        )

    def on_QuotesFetched(self, msg: m.QuotesFetched) -> None:
        entry = self.entries.get(msg.tag)
        if entry is None:
            return
        sig = entry.idea.signal
        now = self.clock.now()
        views = [
            OptionQuoteView(
                q.contract.strike,
                q.contract.right,
                q.bid,
                q.ask,
                q.volume if math.isfinite(q.volume) else 0.0,
                # Stamped with their last change on the service clock; age in real seconds.
                max(0.0, (now - q.time).total_seconds() / getattr(self.clock, "scale", 1.0))
                if q.age_known
                else math.inf,
            )
            for q in msg.quotes
        ]
        by_strike = {q.contract.strike: q for q in msg.quotes}
        choice, rejections = choose_option(views, entry.target, self.params)
        problems = [f"{c.strike:g}{c.right}: {why}" for c, why in msg.missing] + [
            f"{r.strike:g}{r.right}: {r.reason}" for r in rejections
        ]
        if choice is None:
            self._finish(sig.symbol, False, "no_option: " + "; ".join(problems[:6]))
            return
        quote = by_strike[choice.strike]
        try:
            limit = entry_limit(sig.symbol, choice.bid, choice.ask)
        except ValueError as exc:
            self._finish(sig.symbol, False, f"no_price: {exc}")
            return
        entry.contract, entry.limit = quote.contract, limit
        log.info(
            "%s option chosen: %s %s %g%s bid %.2f ask %.2f vol %g -> limit %.2f (%s)",
            sig.symbol,
            quote.contract.local_symbol or sig.symbol,
            entry.expiry,
            choice.strike,
            choice.right,
            choice.bid,
            choice.ask,
            choice.volume,
            limit,
            "; ".join(choice.reasons),
        )
        self.risk.tell(
            m.SizeRequest(
                idea=entry.idea, contract=quote.contract, premium=limit, reply_to=self.actor_ref
            )
        )

    def on_SizeDecision(self, msg: m.SizeDecision) -> None:
        sig = msg.request.idea.signal
        entry = self.entries.get(sig.symbol)
        if entry is None:
            return
        if msg.contracts <= 0:
            self._finish(sig.symbol, False, msg.reason)
            return
        self._place_bracket(entry, msg.request.contract, msg.contracts)

    def _place_bracket(self, entry: Entry, contract: m.OptionContract, qty: int) -> None:
        sig = entry.idea.signal
        if self.stopping:
            # An entry that was choosing its option when the stop began: nothing may be sent
            # now that could still be waiting on the wire when the connection closes.
            self._finish(sig.symbol, False, "stopping: the service is shutting down")
            return
        o = self.settings.orders
        try:
            take_profit, stop = bracket_prices(
                sig.symbol, entry.limit, o.take_profit_pct, o.stop_loss_pct
            )
        except ValueError as exc:
            self._finish(sig.symbol, False, f"no_price: {exc}")
            return
        now = self.clock.now()
        ref = new_bracket_ref(sig.symbol, now)
        legs = (
            m.BracketLeg(
                f"{ref}-E", "BUY", "LMT", qty, limit_price=entry.limit, transmit=False, tif="DAY"
            ),
            m.BracketLeg(
                f"{ref}-TP",
                "SELL",
                "LMT",
                qty,
                limit_price=take_profit,
                parent_ref=f"{ref}-E",
                oca_group=f"OCA-{ref}",
                transmit=False,
                tif="GTC",
            ),
            m.BracketLeg(
                f"{ref}-SL",
                "SELL",
                "STP",
                qty,
                aux_price=stop,
                parent_ref=f"{ref}-E",
                oca_group=f"OCA-{ref}",
                transmit=True,
                tif="GTC",
            ),
        )
        roles = {"E": "entry", "TP": "take_profit", "SL": "stop_loss"}
        rows = [
            {
                "order_ref": leg.order_ref,
                "bracket_ref": ref,
                "parent_ref": leg.parent_ref or None,
                "role": roles[leg.order_ref.rsplit("-", 1)[1]],
                "symbol": sig.symbol,
                "strategy": sig.kind,
                "con_id": contract.con_id,
                "local_symbol": contract.local_symbol,
                "expiry": contract.expiry,
                "strike": contract.strike,
                "right": contract.right,
                "action": leg.action,
                "order_type": leg.order_type,
                "quantity": float(leg.quantity),
                "limit_price": leg.limit_price,
                "aux_price": leg.aux_price,
                "oca_group": leg.oca_group or None,
                "dry_run": int(self.dry_run),
                "trading_date": MarketHours.trading_date(now).isoformat(),
                "created_at": iso(now),
            }
            for leg in legs
        ]
        # Write-ahead: the bracket is in SQLite before anything can reach the wire.
        self.orders.insert_many(rows, at=now)
        for leg in legs:
            self.machines[leg.order_ref] = model = OrderModel(
                order_ref=leg.order_ref, quantity=leg.quantity
            )
            order_machine(model, OrderState.NEW)
            self._fire(leg.order_ref, "submit")
        log.info(
            "%s bracket %s placed%s: BUY %d %s %s %g%s @ %.2f, take-profit %.2f, stop %.2f (%s %s)",
            sig.symbol,
            ref,
            " (dry-run)" if self.dry_run else "",
            qty,
            contract.local_symbol or sig.symbol,
            contract.expiry,
            contract.strike,
            contract.right,
            entry.limit,
            take_profit,
            stop,
            sig.kind,
            sig.direction.value if sig.direction else "",
        )
        crashpoint("after_write_before_send")
        if self.dry_run:
            for leg in legs:
                self.paper.add(
                    PaperOrder(
                        order_ref=leg.order_ref,
                        con_id=contract.con_id,
                        action=leg.action,
                        order_type=leg.order_type,
                        quantity=leg.quantity,
                        limit_price=leg.limit_price,
                        aux_price=leg.aux_price,
                        parent_ref=leg.parent_ref,
                        oca_group=leg.oca_group,
                        active=not leg.parent_ref,
                        tif=leg.tif,
                    )
                )
                self._fire(leg.order_ref, "accept", reason="paper")
            self._watch(contract)
        else:
            self.connection.tell(
                m.PlaceBracket(contract=contract, legs=legs, reply_to=self.actor_ref)
            )
        self.submitted_at[f"{ref}-E"] = now.timestamp()
        self._publish()  # the working entry's exposure reaches RiskActor before its EntryFinished
        self._finish(sig.symbol, True)

    def _watch(self, contract: m.OptionContract) -> None:
        if contract.con_id not in self.watched:
            self.watched[contract.con_id] = contract
            self.connection.tell(m.WatchQuotes(contract=contract, reply_to=self.actor_ref))

    # -- paper fills ----------------------------------------------------------------------------
    def on_QuoteUpdated(self, msg: m.QuoteUpdated) -> None:
        q = msg.quote
        con_id = q.contract.con_id
        problem = quote_problem(q.bid, q.ask)
        if problem is not None:
            # Neither a paper fill nor a position's value may come from a quote that is none.
            code = problem.split(":", 1)[0]
            self.metrics.quotes_rejected.labels(q.contract.symbol, code).inc()
            if con_id not in self.bad_quote_seen:  # a bad feed ticks many times a second
                self.bad_quote_seen.add(con_id)
                log.warning(
                    "%s quote ignored: %s (counted, logged again after a good one)",
                    q.contract.local_symbol or q.contract.symbol,
                    problem,
                )
            return
        self.bad_quote_seen.discard(con_id)
        self.book.last_mid[con_id] = (q.bid + q.ask) / 2
        if self.dry_run:
            slip = self.settings.orders.paper_slippage_ticks * tick_size(q.contract.symbol, q.ask)
            for fill in self.paper.on_quote(con_id, q.bid, q.ask, slip):
                # Filled when the quote came, not when its bid/ask last changed.
                self._paper_fill(fill, self.clock.now())
        self._publish()

    def _paper_fill(self, fill: PaperFill, at: datetime) -> None:
        row = self.orders.get(fill.order_ref)
        if row is None:
            return
        self.fill_seq += 1
        commission = max(1.0, self.settings.orders.commission_per_contract * fill.quantity)
        exec_id = f"paper.{fill.order_ref}.{int(at.timestamp())}.{self.fill_seq}"
        self._apply_execution(
            m.BrokerExecution(
                order_ref=fill.order_ref,
                exec_id=exec_id,
                side="BOT" if row["action"] == "BUY" else "SLD",
                quantity=fill.quantity,
                price=fill.price,
                time=at,
                commission=commission,
            )
        )
        # OCA: a filled exit cancels its sibling.
        for sibling in self.paper.oca_siblings(fill.order_ref, row["oca_group"] or ""):
            self.paper.remove(sibling)
            self._fire(sibling, "cancelled", reason=f"OCA: {fill.order_ref} filled")

    # -- executions (paper and live share this) ----------------------------------------------------
    def _apply_execution(self, e: m.BrokerExecution) -> None:
        """Record a fill, the order's transition, the position and the day's P&L atomically:
        a crash leaves either all of them or none, so a restart never half-counts a fill."""
        with write(self.db):
            self._record_execution(e)
        self._publish()
        self._enforce_protection("execution")

    def _record_execution(self, e: m.BrokerExecution) -> None:
        row = self.orders.get(e.order_ref)
        if row is None:
            log.warning(
                "execution %s for unknown order %r: flagged for reconciliation",
                e.exec_id,
                e.order_ref,
            )
            self.metrics.reconciliation_mismatches.inc()
            return
        prior = self.orders.fill_with_base(e.exec_id)
        if prior is not None and prior["exec_id"] != e.exec_id:
            self._correct(prior, e, row)
            return
        if not self.orders.add_fill(
            {
                "exec_id": e.exec_id,
                "order_ref": e.order_ref,
                "at": iso(e.time),
                "side": e.side,
                "quantity": e.quantity,
                "price": e.price,
                "commission": e.commission,
                "con_id": row["con_id"],
                "symbol": row["symbol"],
            }
        ):
            log.debug("duplicate execution %s ignored", e.exec_id)
            return
        crashpoint("after_fill_recorded")
        if row["con_id"] in self.broker_cap:  # the broker's count moves with every fill too
            self.broker_cap[row["con_id"]] += (
                e.quantity if e.side in ("BOT", "BUY") else -e.quantity
            )
        filled = (row["filled"] or 0.0) + e.quantity
        avg = (
            (row["avg_fill_price"] or 0.0) * (row["filled"] or 0.0) + e.price * e.quantity
        ) / filled
        model = self.machines.get(e.order_ref)
        trigger = "fill" if filled >= row["quantity"] - 1e-9 else "partial_fill"
        if model is None and row["state"] == OrderState.CANCELLED:
            # The fill crossed the cancel: the broker executed it first. A real transition, so
            # the position it makes is recorded, seen and protected.
            log.warning("order %s: %s %g after it was cancelled", e.order_ref, e.side, e.quantity)
            model = OrderModel(order_ref=e.order_ref, quantity=row["quantity"])
            order_machine(model, OrderState.CANCELLED)
            self.machines[e.order_ref] = model
            trigger = "late_fill"
        if model is not None:
            model.filled = filled
        if not self._fire(
            e.order_ref,
            trigger,
            reason=f"{e.side} {e.quantity:g} @ {e.price:.2f}",
            filled=filled,
            avg_fill_price=avg,
        ):
            # Still recorded (the contracts are held all the same), but never silently: a fill on
            # an order in a state that admits none (rejected, inactive) needs a person's eyes.
            log.error(
                "order %s: %s %g recorded outside its machine (state %s)",
                e.order_ref,
                e.side,
                e.quantity,
                row["state"],
            )
            self.metrics.reconciliation_mismatches.inc()
            self.orders.update(e.order_ref, filled=filled, avg_fill_price=avg)
        self.metrics.fills.labels(
            row["symbol"], "buy" if e.side in ("BOT", "BUY") else "sell"
        ).inc()
        realized = self._update_position(row, e)
        log.info(
            "%s fill: %s %g %s @ %.2f (commission %.2f)%s",
            row["symbol"],
            e.side,
            e.quantity,
            row["local_symbol"] or row["order_ref"],
            e.price,
            e.commission,
            f", realized P&L {realized:+.2f}" if row["action"] == "SELL" else "",
        )

    def _correct(self, prior: dict[str, Any], e: m.BrokerExecution, row: dict[str, Any]) -> None:
        """An execution correction (same execId up to its last dot) replaces the fill it corrects;
        the order's fill totals and the position are rebuilt from the fills, not patched."""
        self.orders.replace_fill(
            prior["exec_id"],
            {
                "exec_id": e.exec_id,
                "order_ref": e.order_ref,
                "at": prior["at"],
                "side": e.side,
                "quantity": e.quantity,
                "price": e.price,
                "commission": e.commission or prior["commission"],
                "con_id": row["con_id"],
                "symbol": row["symbol"],
            },
        )
        fills = self.orders.fills(e.order_ref)
        filled = sum(f["quantity"] for f in fills)
        avg = sum(f["quantity"] * f["price"] for f in fills) / filled if filled else 0.0
        self.orders.update(e.order_ref, filled=filled, avg_fill_price=avg)
        if e.order_ref in self.machines:
            self.machines[e.order_ref].filled = filled
        pos = self.positions.get(row["con_id"])
        if pos is not None:
            before = pos["realized_pnl"] or 0.0
            held = fold(
                (f["side"], f["quantity"], f["price"], f["commission"] or 0.0)
                for f in self.orders.fills_for_contract(row["con_id"])
            )
            pos.update(quantity=held.quantity, avg_cost=held.avg_cost, realized_pnl=held.realized)
            self.positions.upsert(pos)
            day = MarketHours.trading_date(self.clock.now())
            if self.days.get(day) is not None:
                self.days.add_realized(day, held.realized - before)
        log.warning(
            "%s execution %s corrected by %s: now %g @ %.2f",
            row["symbol"],
            prior["exec_id"],
            e.exec_id,
            e.quantity,
            e.price,
        )
        self._publish()

    def _update_position(self, row: dict[str, Any], e: m.BrokerExecution) -> float:
        pos = self.positions.get(row["con_id"]) or {
            "con_id": row["con_id"],
            "symbol": row["symbol"],
            "local_symbol": row["local_symbol"],
            "expiry": row["expiry"],
            "strike": row["strike"],
            "right": row["right"],
            "quantity": 0.0,
            "avg_cost": 0.0,
            "realized_pnl": 0.0,
            "bracket_ref": row["bracket_ref"],
            "strategy": row["strategy"],
        }
        held = Holding(pos["quantity"], pos["avg_cost"], pos["realized_pnl"] or 0.0)
        held, realized = apply_fill(held, e.side, e.quantity, e.price, e.commission)
        pos["quantity"], pos["avg_cost"] = held.quantity, held.avg_cost
        if e.side in ("BOT", "BUY"):
            pos["bracket_ref"] = row["bracket_ref"]
        pos["realized_pnl"] = (pos["realized_pnl"] or 0.0) + realized
        self.positions.upsert(pos)
        day = MarketHours.trading_date(self.clock.now())
        if self.days.get(day) is None:
            self.days.start_day(day, self._equity())
        self.days.add_realized(day, realized)
        if pos["quantity"] <= 0:
            contract = self.watched.pop(row["con_id"], None)
            if contract is not None and not any(
                o.con_id == row["con_id"] for o in self.paper.orders.values()
            ):
                self.connection.tell(m.UnwatchQuotes(contract=contract))
        return realized

    def _equity(self) -> float:
        realized = sum(p["realized_pnl"] or 0.0 for p in self.positions.all())
        return self.settings.risk.paper_equity + realized + self._unrealized()

    def _unrealized(self) -> float:
        total = 0.0
        for p in self.positions.open():
            mid = self.book.last_mid.get(p["con_id"])
            if mid is not None:
                total += mid * 100.0 * p["quantity"] - p["avg_cost"] * p["quantity"]
        return total

    def _publish(self) -> None:
        open_pos = self.positions.open()
        exposure: dict[str, float] = {}
        for p in open_pos:
            exposure[p["symbol"]] = exposure.get(p["symbol"], 0.0) + p["avg_cost"] * p["quantity"]
        # Working entries count as exposure too, paper or live: their premium is committed, and
        # a symbol with an entry still working is busy (no second bracket on top of it). The
        # machines are the non-terminal orders, so no scan of the orders table per quote.
        for ref in self.machines:
            row = self.orders.get(ref) if ref.endswith("-E") else None
            if row is not None:
                left = row["quantity"] - (row["filled"] or 0.0)
                exposure[row["symbol"]] = (
                    exposure.get(row["symbol"], 0.0) + (row["limit_price"] or 0.0) * 100 * left
                )
        day = self.days.get(MarketHours.trading_date(self.clock.now()))
        realized_today = (day or {}).get("realized_pnl", 0.0) or 0.0
        unrealized = self._unrealized()
        equity = self._equity()
        self.metrics.open_positions.set(len(open_pos))
        for symbol in self.settings.symbols:
            self.metrics.position_contracts.labels(symbol).set(
                sum(p["quantity"] for p in open_pos if p["symbol"] == symbol)
            )
        self.metrics.realized_pnl.set(realized_today)
        self.metrics.unrealized_pnl.set(unrealized)
        if self.dry_run:
            self.metrics.equity.set(equity)
        self.risk.tell(
            m.PositionsChanged(
                open_positions=len(open_pos),
                exposure_by_symbol=tuple(sorted(exposure.items())),
                realized_today=realized_today,
                unrealized=unrealized,
                equity=equity,
            )
        )

    # -- timers ----------------------------------------------------------------------------------
    def on_Tick(self, msg: m.Tick) -> None:
        self.kv.set("clock", msg.now.isoformat())
        self._adoption_tick()
        is_open = self.hours.is_open(msg.now)
        if self.dry_run and self.was_open and not is_open:
            self._expire_paper_day_orders()
        elif self.dry_run and self.was_open is None:
            # The first Tick after a start: DAY orders from an earlier trading date expired at a
            # close the service did not see.
            self._expire_paper_day_orders(before=MarketHours.trading_date(msg.now).isoformat())
        self.was_open = is_open
        self._exit_expiring(msg.now)
        self._enforce_protection("periodic")
        limit = timedelta(seconds=self.settings.orders.entry_timeout_s)
        for ref, model in list(self.machines.items()):
            if not ref.endswith("-E") or model.state not in (
                OrderState.SUBMITTED,
                OrderState.PENDING_SUBMIT,
            ):
                continue
            row = self.orders.get(ref)
            if row and msg.now - datetime.fromisoformat(row["created_at"]) > limit:
                self._cancel_bracket(row["bracket_ref"], f"entry not filled within {limit}")

    def _expire_paper_day_orders(self, before: str | None = None) -> None:
        """The session closed: paper DAY orders expire as they would at the broker (with
        `before`, only those of a trading date before it)."""
        keep = set()
        if before is not None:
            for ref in self.paper.orders:
                row = self.orders.get(ref)
                if row is not None and (row["trading_date"] or "") >= before:
                    keep.add(ref)
        for ref in self.paper.expire_day_orders(keep=keep):
            self._fire(ref, "cancelled", reason="day order expired at the close")
        self._publish()

    def _exit_expiring(self, now: datetime) -> None:
        """Never hold an option into its expiry day: close it once that day's market is open."""
        if (
            not self.settings.orders.close_on_expiry_day
            or not self.hours.is_open(now)
            or not self.reconciled
        ):
            return
        today = MarketHours.trading_date(now).strftime("%Y%m%d")
        working = {r["bracket_ref"] for r in self.orders.open_orders() if r["role"] == "exit"}
        for pos in self.positions.open():
            if pos["expiry"] and pos["expiry"] <= today and pos["bracket_ref"] not in working:
                log.warning(
                    "%s %s expires today: closing it at market", pos["symbol"], pos["local_symbol"]
                )
                self._place_exit(pos, "expiry day")

    def _cancel_bracket(self, bracket_ref: str, reason: str) -> None:
        """Cancel a bracket whose entry has not filled.

        Live, only the entry is cancelled: IB takes the children down with their parent, and
        if the entry filled in the meantime the cancel is refused and the take-profit and stop
        stay to protect the position. Cancelling the children too would race that fill and could
        leave a position with no exits at all.
        """
        for row in self.orders.by_bracket(bracket_ref):
            ref = row["order_ref"]
            if ref not in self.machines:
                continue
            if self.dry_run:
                self.paper.remove(ref)
                self._fire(ref, "cancel", reason=reason)
                self._fire(ref, "cancelled", reason=reason)
            elif row["role"] == "entry":
                if self._fire(ref, "cancel", reason=reason):
                    self.connection.tell(m.CancelOrder(order_ref=ref))
        log.info("bracket %s cancelled: %s", bracket_ref, reason)
        self._publish()

    def on_Flatten(self, msg: m.Flatten) -> None:
        """Cancel working entries; with `positions`, close open positions at market.

        The exit joins the bracket's OCA group, so its fill cancels the take-profit and the
        stop at the broker (and in the paper book) without a window in which both could fill.
        """
        wanted = (
            (lambda r: True) if msg.strategy is None else (lambda r: r["strategy"] == msg.strategy)
        )
        for row in self.orders.open_orders():
            if row["role"] == "entry" and wanted(row) and row["state"] != OrderState.FILLED:
                self._cancel_bracket(row["bracket_ref"], msg.reason)
        exits = 0
        if msg.positions:
            working_exits = {
                r["bracket_ref"] for r in self.orders.open_orders() if r["role"] == "exit"
            }
            for pos in self.positions.open():
                if not wanted(pos) or pos["bracket_ref"] in working_exits:
                    continue
                self._place_exit(pos, msg.reason)
                exits += 1
        log.warning(
            "flatten (%s): working %s entries cancelled, %d positions closing at market",
            msg.reason,
            msg.strategy or "all",
            exits,
        )

    def _position_contract(self, pos: dict[str, Any]) -> m.OptionContract:
        return self.watched.get(pos["con_id"]) or m.OptionContract(
            symbol=pos["symbol"],
            expiry=pos["expiry"],
            strike=pos["strike"],
            right=pos["right"],
            con_id=pos["con_id"],
            local_symbol=pos["local_symbol"] or "",
            trading_class=pos["symbol"],
        )

    def _send_exits(
        self,
        pos: dict[str, Any],
        legs: tuple[m.BracketLeg, ...],
        roles: tuple[str, ...],
        reason: str,
    ) -> None:
        """Write-ahead, then send (or hand to the paper book) SELL orders closing `pos`."""
        now = self.clock.now()
        contract = self._position_contract(pos)
        self.orders.insert_many(
            [
                {
                    "order_ref": leg.order_ref,
                    "bracket_ref": pos["bracket_ref"],
                    "role": role,
                    "symbol": pos["symbol"],
                    "strategy": pos["strategy"],
                    "con_id": pos["con_id"],
                    "local_symbol": pos["local_symbol"],
                    "expiry": pos["expiry"],
                    "strike": pos["strike"],
                    "right": pos["right"],
                    "action": "SELL",
                    "order_type": leg.order_type,
                    "quantity": float(leg.quantity),
                    "limit_price": leg.limit_price or None,
                    "aux_price": leg.aux_price or None,
                    "oca_group": leg.oca_group,
                    "dry_run": int(self.dry_run),
                    "reason": reason,
                    "trading_date": MarketHours.trading_date(now).isoformat(),
                    "created_at": iso(now),
                }
                for leg, role in zip(legs, roles, strict=True)
            ],
            at=now,
        )
        for leg in legs:
            self.machines[leg.order_ref] = model = OrderModel(
                order_ref=leg.order_ref, quantity=leg.quantity
            )
            order_machine(model, OrderState.NEW)
            self._fire(leg.order_ref, "submit", reason=reason)
        if self.dry_run:
            for leg in legs:
                self.paper.add(
                    PaperOrder(
                        order_ref=leg.order_ref,
                        con_id=pos["con_id"],
                        action="SELL",
                        order_type=leg.order_type,
                        quantity=leg.quantity,
                        limit_price=leg.limit_price,
                        aux_price=leg.aux_price,
                        oca_group=leg.oca_group,
                        tif=leg.tif,
                    )
                )
                self._fire(leg.order_ref, "accept", reason="paper")
            self._watch(contract)
        else:
            self.connection.tell(
                m.PlaceBracket(contract=contract, legs=legs, reply_to=self.actor_ref)
            )

    def _place_exit(
        self, pos: dict[str, Any], reason: str, quantity: float | None = None, oca: str = ""
    ) -> list[str]:
        """Close `quantity` (all of the position by default) at market, inside the bracket's OCA
        group so its fill cancels the take-profit and stop and nothing can double-sell. GTC, so
        an exit sent while the market is closed waits for the open instead of expiring."""
        ref = f"{pos['bracket_ref']}-X{secrets.token_hex(2)}"
        oca = oca or f"OCA-{pos['bracket_ref']}"
        qty = int(quantity if quantity is not None else pos["quantity"])
        leg = m.BracketLeg(ref, "SELL", "MKT", qty, oca_group=oca, transmit=True, tif=TIF["exit"])
        self._send_exits(pos, (leg,), ("exit",), reason)
        return [ref]

    def _place_protection(self, pos: dict[str, Any], quantity: int, reason: str) -> list[str]:
        """A take-profit and a stop (GTC) for `quantity` contracts of `pos`, priced from its
        average cost with the bracket's percentages. They join the bracket's OCA group, as every
        exit does: a flatten's market exit then cancels them too, so nothing can double-sell."""
        premium = (pos["avg_cost"] or 0.0) / 100.0
        o = self.settings.orders
        try:
            take_profit, stop = bracket_prices(
                pos["symbol"], premium, o.take_profit_pct, o.stop_loss_pct
            )
        except ValueError as exc:
            log.error(
                "%s %s: no protection price from average cost %.4f (%s); flattening instead",
                pos["symbol"],
                pos["local_symbol"],
                premium,
                exc,
            )
            return self._place_exit(pos, f"unprotected, no price: {reason}", quantity)
        ref = f"{pos['bracket_ref']}-P{secrets.token_hex(2)}"
        oca = self._protection_group(pos, ref)
        legs = (
            m.BracketLeg(
                f"{ref}-TP",
                "SELL",
                "LMT",
                quantity,
                limit_price=take_profit,
                oca_group=oca,
                transmit=True,
                tif=TIF["take_profit"],
            ),
            m.BracketLeg(
                f"{ref}-SL",
                "SELL",
                "STP",
                quantity,
                aux_price=stop,
                oca_group=oca,
                transmit=True,
                tif=TIF["stop_loss"],
            ),
        )
        self._send_exits(pos, legs, ("take_profit", "stop_loss"), f"protection: {reason}")
        log.warning(
            "%s %s: protection placed for %d contracts: take-profit %.2f, stop %.2f (GTC, %s)",
            pos["symbol"],
            pos["local_symbol"] or pos["con_id"],
            quantity,
            take_profit,
            stop,
            reason,
        )
        return [leg.order_ref for leg in legs]

    # -- the protection invariant ----------------------------------------------------------------
    def _protection_group(self, pos: dict[str, Any], ref: str) -> str:
        """Into the bracket's group when nothing else covers the contract (the usual case: exits
        expired, cancelled with a partly filled entry, or by someone else), so a later flatten
        cancels it. If some exits still work, a group of its own: one OCA group closes at most
        its largest member, and joining would leave the gap as bare as before."""
        partly = any(
            e.con_id == pos["con_id"] and e.role in ("stop_loss", "exit")
            for e in self._exit_orders()
        )
        return f"OCA-{ref}" if partly else f"OCA-{pos['bracket_ref']}"

    def _exit_orders(self) -> list[ExitOrder]:
        rows = self.orders.open_orders()
        working_entries = {r["order_ref"] for r in rows if r["role"] == "entry"}
        return [
            ExitOrder(
                order_ref=r["order_ref"],
                con_id=r["con_id"],
                role=r["role"],
                remaining=r["quantity"] - (r["filled"] or 0.0),
                state=r["state"],
                oca_group=r["oca_group"] or "",
                pending_parent=bool(r["parent_ref"]) and r["parent_ref"] in working_entries,
            )
            for r in rows
            if r["action"] == "SELL"
        ]

    def _refused_lately(self, con_id: int, now: float) -> bool:
        """The last protection for this contract was refused by the broker (rejected, inactive)
        less than PROTECT_RETRY_S ago: wait rather than resend on every Tick. Protection that was
        working and then went away (cancelled, expired) is a new incident and is replaced at once."""
        last = self.protect_tried.get(con_id)
        if last is None or now - last[0] >= PROTECT_RETRY_S:
            return False
        for ref in last[1]:
            row = self.orders.get(ref)
            if row is not None and row["state"] in (OrderState.REJECTED, OrderState.INACTIVE):
                return True
        return False

    def _enforce_protection(self, reason: str) -> list[Intent]:
        """Every open position (ours or adopted: anything in the positions table) must be covered
        by working exits for its full quantity. Place what is missing (or flatten the gap, as
        `orders.unprotected_action` says), log each incident once, export the gauge.

        Not before reconciliation: until the broker's word is in, an order the service thinks
        lost may be working, and protection on top of it could sell more than is held.
        """
        if not self.reconciled or self.stopping:
            return []
        held = {p["con_id"]: p for p in self.positions.open()}
        qty = {
            c: min(p["quantity"], self.broker_cap.get(c, p["quantity"])) for c, p in held.items()
        }
        exits = self._exit_orders()
        todo = intents(qty, exits, self.settings.orders.unprotected_action)
        cover = coverage(qty, exits)
        gaps = {c: v.gap for c, v in cover.items() if v.gap > 1e-9}
        excess = {c: v.excess for c, v in cover.items() if v.excess > 1e-9}
        for con_id, gap in gaps.items():
            if self.uncovered.get(con_id) != gap:
                pos = held[con_id]
                log.error(
                    "%s %s: %g of %g contracts held without a working stop (%s)",
                    pos["symbol"],
                    pos["local_symbol"] or con_id,
                    gap,
                    pos["quantity"],
                    reason,
                )
        for con_id in set(self.uncovered) - set(gaps):
            log.info("contract %d: protected again", con_id)
        if reason not in ("periodic", "reconciliation"):
            # Between an exit's fill and its OCA siblings' cancel, the siblings outnumber what is
            # held for a moment: excess is judged on the periodic check only.
            excess = dict(self.excess)
        for con_id, over in excess.items():
            if self.excess.get(con_id) != over:
                self.metrics.reconciliation_mismatches.inc()
                log.error(
                    "contract %d: exits for %g more contracts than held (%g): a stop would sell "
                    "short; check the broker's orders",
                    con_id,
                    over,
                    cover[con_id].held,
                )
        self.uncovered, self.excess = gaps, excess
        self.metrics.overprotected_positions.set(len(excess))
        now = time.monotonic()
        for intent in todo:
            if intent.kind == "excess":
                continue
            if self._refused_lately(intent.con_id, now):
                continue
            pos = held[intent.con_id]
            if intent.kind == "flatten":
                oca = self._protection_group(pos, f"{pos['bracket_ref']}-F{secrets.token_hex(2)}")
                refs = self._place_exit(pos, f"unprotected: {reason}", intent.quantity, oca)
            else:
                refs = self._place_protection(pos, int(intent.quantity), reason)
            self.protect_tried[intent.con_id] = (now, refs)
            self.metrics.protection_placed.labels(reason, intent.kind).inc()
        # The gauge counts what is uncovered now, after what was just placed (working at once in
        # the machines; the broker's answer follows).
        after = coverage(qty, self._exit_orders()) if todo else cover
        self.metrics.unprotected_positions.set(sum(1 for v in after.values() if v.gap >= 1 - 1e-9))
        return todo

    # -- live broker events -------------------------------------------------------------------------
    def on_BrokerOrderStatus(self, msg: m.BrokerOrderStatus) -> None:
        if msg.order_ref not in self.machines:
            return
        self.orders.update(msg.order_ref, order_id=msg.order_id, perm_id=msg.perm_id)
        trigger = STATUS_TRIGGER.get(msg.status)
        model = self.machines[msg.order_ref]
        if trigger == "fill":
            return  # fills are counted from executions, which carry the quantities
        code = error_code(msg.reason)
        if trigger == "cancelled" and code == ORDER_REJECTED:
            trigger = "reject"
        elif trigger == "cancelled" and code in CANCEL_REFUSED:
            # ib_async reports any order error as Cancelled, a refused cancel too: the order is
            # still working (or already filled) at the broker.
            log.warning("order %s: cancel refused (%s)", msg.order_ref, msg.reason)
            trigger = "cancel_failed"
        if trigger and not (trigger == "accept" and model.state == OrderState.SUBMITTED):
            if self._fire(msg.order_ref, trigger, reason=msg.reason) and model.is_terminal:
                self._publish()  # a cancelled or rejected entry no longer holds its symbol
                if trigger != "fill":
                    # An exit cancelled at the broker (by another client, a person, IB) or a
                    # rejected protection: the position may be bare now.
                    self._enforce_protection("exit_gone")

    def on_BrokerExecution(self, msg: m.BrokerExecution) -> None:
        self._apply_execution(msg)

    def _settle(self, ref: str, model: OrderModel, status: m.BrokerOrderStatus | None) -> None:
        """Settle one order left unknown by a crash, from the broker's word and the fills we hold."""
        recorded = self.orders.filled_quantity(ref)
        model.filled = recorded
        complete = recorded >= model.quantity - 1e-9
        if status is None:
            # Never seen by the broker (or gone from today's lists): never resent.
            trigger = "fill" if complete else "not_found"
            self._fire(ref, trigger, reason="reconciled: not at the broker", filled=recorded)
            return
        s = status.status
        if s == "Filled" or complete:
            if not complete:
                log.warning(
                    "%s: the broker says filled but %g of %g executions are known",
                    ref,
                    recorded,
                    model.quantity,
                )
            self._fire(ref, "fill", reason=f"reconciled: {s}", filled=max(recorded, status.filled))
        elif s in ("Cancelled", "ApiCancelled"):
            self._fire(
                ref,
                "reject" if error_code(status.reason) == ORDER_REJECTED else "cancelled",
                reason=f"reconciled: {s}",
            )
        elif s == "Inactive":
            self._fire(ref, "deactivate", reason=f"reconciled: {s}")
        else:  # at the broker and working: PreSubmitted, Submitted, PendingCancel, PendingSubmit
            self._fire(ref, "accept", reason=f"reconciled: {s}")
            if recorded > 0:
                self._fire(
                    ref, "partial_fill", reason="reconciled: fills recorded", filled=recorded
                )

    def _chase_cancels(self, statuses: dict[str, m.BrokerOrderStatus]) -> None:
        """A cancel sent before a disconnect may never have reached the broker: settle it from the
        broker's word, or send it again while the order is still working there."""
        for ref, model in list(self.machines.items()):
            status = statuses.get(ref)
            if model.state != OrderState.PENDING_CANCEL or status is None:
                continue
            if status.status in ("Cancelled", "ApiCancelled"):
                self._fire(ref, "cancelled", reason=f"reconciled: {status.status}")
            elif status.status in ("PreSubmitted", "Submitted", "PendingSubmit"):
                log.info("order %s still working at the broker: cancelling it again", ref)
                self.connection.tell(m.CancelOrder(order_ref=ref))

    def on_BrokerCommission(self, msg: m.BrokerCommission) -> None:
        delta = self.orders.set_commission(msg.exec_id, msg.commission)
        if not delta:
            return
        fill = self.orders.db["fills"].get(msg.exec_id)
        pos = self.positions.get(fill["con_id"])
        if pos is not None:
            pos["realized_pnl"] = (pos["realized_pnl"] or 0.0) - delta
            self.positions.upsert(pos)
        day = MarketHours.trading_date(self.clock.now())
        if self.days.get(day) is not None:
            self.days.add_realized(day, -delta)
        self._publish()

    def on_BrokerState(self, msg: m.BrokerState) -> None:
        """Reconciliation: settle every unknown order from what the broker reports."""
        if self._foreign(msg):
            return
        statuses = {s.order_ref: s for s in msg.statuses if s.order_ref}
        for e in msg.executions:
            self._apply_execution(e)
        crashpoint("during_reconciliation")
        settled = 0
        for ref, model in list(self.machines.items()):
            if model.state != OrderState.UNKNOWN:
                continue
            settled += 1
            self._settle(ref, model, statuses.get(ref))
        self._chase_cancels(statuses)
        ours = {r["order_ref"] for r in self.orders.open_orders()}
        strangers = [
            s.order_ref or str(s.order_id)
            for s in msg.statuses
            if s.order_ref not in ours and not self.orders.get(s.order_ref or "")
        ]
        # Positions: ours (from fills) against the broker's. A difference is flagged for a person,
        # never "fixed" by trading: a guess here is how money gets lost.
        ours_held = {p["con_id"]: p["quantity"] for p in self.positions.open()}
        theirs = dict(msg.positions)
        # Protection covers no more than the broker holds: a SELL stop for contracts that are not
        # there (a fill the service never saw) would open a short when it fires.
        self.broker_cap = {
            c: max(0.0, theirs.get(c, 0.0))
            for c, q in ours_held.items()
            if theirs.get(c, 0.0) < q - 1e-9
        }
        for con_id in sorted(set(ours_held) | set(theirs)):
            if abs(ours_held.get(con_id, 0.0) - theirs.get(con_id, 0.0)) > 1e-9:
                self.metrics.reconciliation_mismatches.inc()
                log.error(
                    "position mismatch for contract %d: ours %g, broker %g",
                    con_id,
                    ours_held.get(con_id, 0.0),
                    theirs.get(con_id, 0.0),
                )
        if strangers:
            self.metrics.reconciliation_mismatches.inc(len(strangers))
            log.warning(
                "orders at the broker that this service did not place: %s",
                ", ".join(strangers[:10]),
            )
        self._vouch(msg)
        self.reconciled = True
        log.info(
            "reconciliation done: %d unknown orders settled, %d foreign orders",
            settled,
            len(strangers),
        )
        self._enforce_protection("reconciliation")

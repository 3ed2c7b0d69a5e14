"""OrderActor: owns the working orders (one shared order machine), persists every step before it
acts (write-ahead), and does the I/O. The decisions are elsewhere in this package: the entry
saga (entry), money (accounting), the broker's word (reconcile), the protection invariant
(protection), the lost-database defence (adoption) and dry-run fills (paper)."""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from datetime import datetime, timedelta
from typing import Any

from transitions import MachineError

from actors import messages as m
from actors.base import BaseActor
from actors.crash import crashpoint
from actors.hours import MarketHours
from actors.metrics import Metrics
from actors.orders import accounting, reconcile
from actors.orders.adoption import Adoption
from actors.orders.entry import (
    TIF,
    WARM_MARGIN,
    Candidates,
    Entry,
    bracket_legs,
    candidates,
    choose,
    leg_rows,
    new_bracket_ref,
    next_contracts,
    option_params,
    role_of,
    warm_contracts,
)
from actors.orders.paper import PaperBook, PaperFill, PaperOrder
from actors.orders.protection import Protection
from configs.settings import Settings
from machines.order import OrderMachines, OrderModel, OrderState, status_trigger
from storage import JournalRepo, KeyValueRepo, OrderRepo, PositionRepo, TradingDayRepo, open_db
from storage.db import write
from storage.repos import iso
from storage.rows import Fill, Order, Position, multiplier
from strategies.options import entry_quote_budget, later_ask_wait, quote_problem
from strategies.ticks import bracket_prices, tick_size

log = logging.getLogger("optionsbot.orders")


@dataclasses.dataclass
class Book:
    """Money view of the open positions, for risk and the P&L gauges."""

    last_mid: dict[int, float] = dataclasses.field(default_factory=dict)


class OrderActor(Adoption, Protection, BaseActor):
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
        # The non-terminal orders' models, on one machine (machines.order.OrderMachines).
        self.order_machine = OrderMachines()
        self.machines: dict[str, OrderModel] = {}
        self.chains: dict[str, tuple[Any, m.Chain]] = {}
        # Warm quotes: the last spot per symbol, the day a chain was asked for (once a day
        # each), and the contracts last asked to be kept warm.
        self.spots: dict[str, float] = {}
        self.chain_asked: dict[str, Any] = {}
        # Symbols whose chain has been asked for and not answered yet: an entry waits for that
        # answer (on_ChainFetched carries it on) rather than ask again at the same bar close.
        # Monotonic time of the ask; past chain_wait_s it counts as lost and is asked again.
        self.chain_pending: dict[str, float] = {}
        b = settings.broker
        self.chain_wait_s = sum(
            b.timeouts_s.get(kind, b.request_timeout_s) for kind in ("contract_details", "sec_def")
        )
        self.warmed: dict[str, tuple[m.OptionContract, ...]] = {}
        self.paper = PaperBook()
        self.bad_quote_seen: set[int] = set()  # conIds whose bad quote was logged (once a run)
        self.book = Book()
        self.watched: dict[int, m.OptionContract] = {}
        self.reconciled = self.dry_run
        # The orders the book held when the broker's state was last asked at a resync: its
        # lists are a snapshot from then (reconcile.ended_meanwhile).
        self.state_asked: set[str] = set()
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
            state = OrderState(row.state)
            self._track(row, state)
            if state is OrderState.NEW:
                self._fire(row.order_ref, "abandon", reason="never sent before the restart")
            elif self.dry_run:
                self.paper.add(
                    PaperOrder(
                        order_ref=row.order_ref,
                        con_id=row.con_id or 0,
                        action=row.action,
                        order_type=row.order_type or "",
                        quantity=row.remaining,
                        limit_price=row.limit_price or 0.0,
                        aux_price=row.aux_price or 0.0,
                        parent_ref=row.parent_ref or "",
                        oca_group=row.oca_group or "",
                        active=not row.parent_ref or self._parent_filled(row.parent_ref),
                        tif=TIF.get(row.role or "", "DAY"),
                    )
                )
                self.watched[row.con_id or 0] = self._contract_of(row)
            elif state is not OrderState.UNKNOWN:  # still unknown from an earlier crash: stays so
                self._fire(row.order_ref, "lose_track", reason="restart: reconcile with the broker")
        if rows:
            log.info(
                "restored %d open orders from SQLite (%s)",
                len(rows),
                "paper book rebuilt" if self.dry_run else "reconciling with the broker",
            )

    def _parent_filled(self, parent_ref: str) -> bool:
        row = self.orders.get(parent_ref)
        return bool(row and row.state == OrderState.FILLED)

    @staticmethod
    def _contract_of(row: Order | Position) -> m.OptionContract:
        return m.OptionContract(
            symbol=row.symbol or "",
            expiry=row.expiry or "",
            strike=row.strike or 0.0,
            right=row.right or "",
            con_id=row.con_id or 0,
            local_symbol=row.local_symbol or "",
            trading_class=row.symbol or "",
            multiplier=int(multiplier(row)),
        )

    # -- the machines ----------------------------------------------------------------------------
    def _track(self, row: Order, state: OrderState = OrderState.NEW) -> OrderModel:
        """Put an order on the machine in `state` (a restore fires no callbacks)."""
        model = OrderModel(order_ref=row.order_ref, quantity=row.quantity, filled=row.filled or 0.0)
        self.machines[row.order_ref] = self.order_machine.add(model, state)
        return model

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
            # Off the machine: a long-running service keeps only its working orders there.
            self.machines.pop(order_ref, None)
            self.order_machine.remove(model)
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
        self.warmed.clear()  # the lines died with the socket: warmed again at the next bar
        if not self.dry_run:
            self.reconciled = False
            self.state_asked = set(self.machines)
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
                quote_asks=entry.asks,  # 2: the target failed and the other strikes were asked
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
            self._fetch_chain(symbol)

    def _fetch_chain(self, symbol: str) -> None:
        """Ask for the chain unless an ask for it is under way (its answer serves all)."""
        asked = self.chain_pending.get(symbol)
        if asked is not None and time.monotonic() - asked < self.chain_wait_s:
            return
        self.chain_pending[symbol] = time.monotonic()
        self.connection.tell(m.FetchChain(symbol=symbol, reply_to=self.actor_ref))

    def on_ChainFetched(self, msg: m.ChainFetched) -> None:
        self.chain_pending.pop(msg.symbol, None)
        today = MarketHours.trading_date(self.clock.now())
        if msg.chain is not None:
            self.chains[msg.symbol] = (today, msg.chain)
            if msg.symbol in self.spots:
                self._warm(msg.symbol, msg.chain, self.spots[msg.symbol], today)
        entry = self.entries.get(msg.symbol)
        if entry is None or entry.chain is not None:
            return  # a chain asked for warming, or a second answer for a running entry
        if msg.chain is None:
            self._finish(msg.symbol, False, f"no_chain: {msg.reason}")
            return
        self._with_chain(entry, msg.chain)

    def on_SpotMoved(self, msg: m.SpotMoved) -> None:
        """The strikes in play follow the spot: their quotes are kept streaming, so an entry
        finds them there when its bar closes (no quote request after the bar)."""
        if not self.settings.options.warm_quotes:
            return
        self.spots[msg.symbol] = msg.price
        today = MarketHours.trading_date(self.clock.now())
        cached = self.chains.get(msg.symbol)
        if cached and cached[0] == today:
            self._warm(msg.symbol, cached[1], msg.price, today)
        elif self.chain_asked.get(msg.symbol) != today:
            self.chain_asked[msg.symbol] = today  # once a day: a failure waits for tomorrow's
            self._fetch_chain(msg.symbol)

    def _warm(self, symbol: str, chain: m.Chain, spot: float, today: Any) -> None:
        core = warm_contracts(chain, spot, today, self.params)
        wide = warm_contracts(chain, spot, today, self.params, margin=WARM_MARGIN)
        in_core = set(core)
        wanted = core + tuple(c for c in wide if c not in in_core)
        if self.warmed.get(symbol) != wanted:
            self.warmed[symbol] = wanted
            self.connection.tell(m.WarmQuotes(symbol=symbol, contracts=wanted, core=len(core)))

    def _with_chain(self, entry: Entry, chain: m.Chain) -> None:
        sig = entry.idea.signal
        entry.chain = chain
        today = MarketHours.trading_date(self.clock.now())
        found = candidates(sig, chain, today, self.params)
        if not isinstance(found, Candidates):
            self._finish(sig.symbol, False, found)
            return
        entry.expiry, entry.target, entry.found = found.expiry, found.target, found
        entry.first_ask = time.monotonic()
        first = next_contracts(found, (), (), self.clock.now(), 1.0, self.params)
        self._ask_quotes(entry, first, self.settings.options.quote_wait_s)

    def _ask_quotes(
        self, entry: Entry, contracts: tuple[m.OptionContract, ...], wait_s: float
    ) -> None:
        entry.asks += 1
        entry.waiting = True
        self.connection.tell(
            m.FetchQuotes(
                contracts=contracts,
                reply_to=self.actor_ref,
                wait_s=wait_s,
                tag=entry.idea.signal.symbol,
            )
        )

    def on_QuotesFetched(self, msg: m.QuotesFetched) -> None:
        entry = self.entries.get(msg.tag)
        if entry is None or not entry.waiting or entry.found is None:
            return  # an answer for an entry that has ended (or been answered already)
        entry.waiting = False
        sig = entry.idea.signal
        o, now, scale = self.settings.options, self.clock.now(), getattr(self.clock, "scale", 1.0)
        entry.quotes += msg.quotes
        entry.missing += msg.missing
        elapsed = time.monotonic() - entry.first_ask
        budget = entry_quote_budget(o.quote_wait_s, o.quote_recheck_s)
        if not elapsed <= budget:
            # The later ask's wait was cut to fit the budget; an answer later still (a stalled
            # actor, a loaded Pi, a line that waited in our message gate), the first ask's too,
            # is not acted on: its signal is older than any entry's may be.
            self._finish(
                sig.symbol,
                False,
                f"too_late: quotes took {elapsed:.1f}s over {entry.asks}"
                f" ask{'s' if entry.asks > 1 else ''}, more than"
                f" the {budget:g}s one ask may take (2 x options.quote_wait_s +"
                " options.quote_recheck_s)",
            )
            return
        more = next_contracts(entry.found, entry.quotes, entry.missing, now, scale, self.params)
        if more:
            wait = later_ask_wait(elapsed, o.quote_wait_s, o.quote_recheck_s)
            if wait is not None:
                self._ask_quotes(entry, more, wait)
                return
            entry.missing += [
                (c, f"not asked: {elapsed:.1f}s of the entry's {budget:g}s for quotes spent")
                for c in more
            ]
        # Quotes are stamped with their last change on the service clock; ages in real seconds.
        choice = choose(
            sig.symbol,
            entry.quotes,
            entry.missing,
            entry.target,
            now,
            scale,
            self.params,
        )
        if isinstance(choice, str):
            self._finish(sig.symbol, False, choice)
            return
        entry.contract, entry.limit = choice.contract, choice.limit
        view = choice.view
        log.info(
            "%s option chosen: %s %s %g%s bid %.2f ask %.2f vol %g -> limit %.2f (%s)",
            sig.symbol,
            choice.contract.local_symbol or sig.symbol,
            entry.expiry,
            view.strike,
            view.right,
            view.bid,
            view.ask,
            view.volume,
            choice.limit,
            "; ".join(view.reasons),
        )
        self.risk.tell(
            m.SizeRequest(
                idea=entry.idea,
                contract=choice.contract,
                premium=choice.limit,
                reply_to=self.actor_ref,
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
        legs = bracket_legs(ref, qty, entry.limit, take_profit, stop)
        rows = leg_rows(
            legs,
            [role_of(leg.order_ref) for leg in legs],
            bracket_ref=ref,
            strategy=sig.kind,
            contract=contract,
            dry_run=self.dry_run,
            now=now,
        )
        self._write(rows, reason="")
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
        self._send(legs, contract)
        self.submitted_at[f"{ref}-E"] = now.timestamp()
        self._publish()  # the working entry's exposure reaches RiskActor before its EntryFinished
        self._finish(sig.symbol, True)

    def _write(self, rows: list[Order], reason: str) -> None:
        """Write-ahead: the orders are in SQLite, submitted, before anything can reach the wire."""
        self.orders.insert_many(rows, at=self.clock.now())
        for row in rows:
            self._track(row)
            self._fire(row.order_ref, "submit", reason=reason)

    def _send(self, legs: tuple[m.BracketLeg, ...], contract: m.OptionContract) -> None:
        """Send written orders, or hand them to the paper book in dry-run."""
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
                side="BOT" if row.action == "BUY" else "SLD",
                quantity=fill.quantity,
                price=fill.price,
                time=at,
                commission=commission,
            )
        )
        # OCA: a filled exit cancels its sibling.
        for sibling in self.paper.oca_siblings(fill.order_ref, row.oca_group or ""):
            self.paper.remove(sibling)
            self._fire(sibling, "cancelled", reason=f"OCA: {fill.order_ref} filled")
        # Only now is the closed position's contract free of paper orders.
        self._unwatch_if_idle(row.con_id or 0)

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
        if prior is not None and prior.exec_id != e.exec_id:
            self._correct(prior, e, row)
            return
        if not self.orders.add_fill(
            Fill(
                exec_id=e.exec_id,
                order_ref=e.order_ref,
                at=iso(e.time),
                side=e.side,
                quantity=e.quantity,
                price=e.price,
                commission=e.commission,
                con_id=row.con_id,
                symbol=row.symbol,
            )
        ):
            log.debug("duplicate execution %s ignored", e.exec_id)
            return
        crashpoint("after_fill_recorded")
        con_id = row.con_id or 0
        if con_id in self.broker_cap:  # the broker's count moves with every fill too
            self.broker_cap[con_id] += e.quantity if accounting.is_buy(e.side) else -e.quantity
        filled, avg = accounting.order_fill_totals(row, e.quantity, e.price)
        model = self.machines.get(e.order_ref)
        trigger = "fill" if filled >= row.quantity - 1e-9 else "partial_fill"
        if model is None and row.state == OrderState.CANCELLED:
            # The fill crossed the cancel: the broker executed it first. A real transition, so
            # the position it makes is recorded, seen and protected.
            log.warning("order %s: %s %g after it was cancelled", e.order_ref, e.side, e.quantity)
            model = self._track(row, OrderState.CANCELLED)
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
                row.state,
            )
            self.metrics.reconciliation_mismatches.inc()
            self.orders.update(e.order_ref, filled=filled, avg_fill_price=avg)
        self.metrics.fills.labels(row.symbol, "buy" if accounting.is_buy(e.side) else "sell").inc()
        realized = self._update_position(row, e)
        log.info(
            "%s fill: %s %g %s @ %.2f (commission %.2f)%s",
            row.symbol,
            e.side,
            e.quantity,
            row.local_symbol or row.order_ref,
            e.price,
            e.commission,
            f", realized P&L {realized:+.2f}" if row.action == "SELL" else "",
        )

    def _correct(self, prior: Fill, e: m.BrokerExecution, row: Order) -> None:
        """IB corrected an execution (same execId up to its last dot): the corrected fill
        replaces the old one, and the order's fill totals and the position are rebuilt from the
        fills, not patched."""
        self.orders.replace_fill(
            prior.exec_id,
            Fill(
                exec_id=e.exec_id,
                order_ref=e.order_ref,
                at=prior.at,
                side=e.side,
                quantity=e.quantity,
                price=e.price,
                commission=e.commission or prior.commission,
                con_id=row.con_id,
                symbol=row.symbol,
            ),
        )
        filled, avg = accounting.fill_totals(self.orders.fills(e.order_ref))
        self.orders.update(e.order_ref, filled=filled, avg_fill_price=avg)
        if e.order_ref in self.machines:
            self.machines[e.order_ref].filled = filled
        pos = self.positions.get(row.con_id or 0)
        if pos is not None:
            before = pos.realized_pnl or 0.0
            pos = accounting.rebuilt_position(pos, self.orders.fills_for_contract(pos.con_id))
            self.positions.upsert(pos)
            day = MarketHours.trading_date(self.clock.now())
            if self.days.get(day) is not None:
                self.days.add_realized(day, (pos.realized_pnl or 0.0) - before)
        log.warning(
            "%s execution %s corrected by %s: now %g @ %.2f",
            row.symbol,
            prior.exec_id,
            e.exec_id,
            e.quantity,
            e.price,
        )
        self._publish()

    def _update_position(self, row: Order, e: m.BrokerExecution) -> float:
        pos, realized = accounting.position_after_fill(
            self.positions.get(row.con_id or 0), row, e.side, e.quantity, e.price, e.commission
        )
        self.positions.upsert(pos)
        day = MarketHours.trading_date(self.clock.now())
        if self.days.get(day) is None:
            self.days.start_day(day, self._equity())
        self.days.add_realized(day, realized)
        if pos.quantity <= 0:
            self._unwatch_if_idle(pos.con_id)
        return realized

    def _unwatch_if_idle(self, con_id: int) -> None:
        """Stop a contract's quotes once nothing needs them: no paper order works on it and
        none is held. A cancelled or expired entry's line would otherwise stay open for good,
        and IB grants only so many (broker.max_market_data_lines)."""
        if con_id not in self.watched or any(
            o.con_id == con_id for o in self.paper.orders.values()
        ):
            return
        pos = self.positions.get(con_id)
        if pos is not None and pos.quantity > 0:
            return
        self.connection.tell(m.UnwatchQuotes(contract=self.watched.pop(con_id)))

    def _equity(self) -> float:
        # The realized sum in SQL: every contract ever traded has a row, and this runs per quote.
        return accounting.equity_of(
            self.settings.risk.paper_equity, self.positions.realized_total(), self._unrealized()
        )

    def _unrealized(self) -> float:
        return accounting.unrealized(self.positions.open(), self.book.last_mid)

    def _publish(self) -> None:
        open_pos = self.positions.open()
        # The machines are the non-terminal orders, so no scan of the orders table per quote.
        working_entries = [
            row
            for row in (self.orders.get(ref) for ref in self.machines if ref.endswith("-E"))
            if row is not None
        ]
        exposure = accounting.exposure(open_pos, working_entries)
        day = self.days.get(MarketHours.trading_date(self.clock.now()))
        realized_today = day.realized_pnl if day is not None else 0.0
        unrealized = self._unrealized()
        equity = self._equity()
        self.metrics.open_positions.set(len(open_pos))
        for symbol in self.settings.symbols:
            self.metrics.position_contracts.labels(symbol).set(
                sum(p.quantity for p in open_pos if p.symbol == symbol)
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
                # One filled in part is counted above, as the position it opened.
                pending_entries=sum(1 for o in working_entries if not o.filled),
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
            if row and msg.now - datetime.fromisoformat(row.created_at or "") > limit:
                self._cancel_bracket(row.bracket_ref or "", f"entry not filled within {limit}")

    def _expire_paper_day_orders(self, before: str | None = None) -> None:
        """The session closed: paper DAY orders expire as they would at the broker (with
        `before`, only those of a trading date before it)."""
        keep = set()
        if before is not None:
            for ref in self.paper.orders:
                row = self.orders.get(ref)
                if row is not None and (row.trading_date or "") >= before:
                    keep.add(ref)
        con_ids = {o.con_id for o in self.paper.orders.values()}
        for ref in self.paper.expire_day_orders(keep=keep):
            self._fire(ref, "cancelled", reason="day order expired at the close")
        for con_id in sorted(con_ids):
            self._unwatch_if_idle(con_id)
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
        working = {r.bracket_ref for r in self.orders.open_orders() if r.role == "exit"}
        for pos in self.positions.open():
            if pos.expiry and pos.expiry <= today and pos.bracket_ref not in working:
                log.warning(
                    "%s %s expires today: closing it at market", pos.symbol, pos.local_symbol
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
            ref = row.order_ref
            if ref not in self.machines:
                continue
            if self.dry_run:
                self.paper.remove(ref)
                self._fire(ref, "cancel", reason=reason)
                self._fire(ref, "cancelled", reason=reason)
                self._unwatch_if_idle(row.con_id or 0)
            elif row.role == "entry":
                if self._fire(ref, "cancel", reason=reason):
                    self.connection.tell(m.CancelOrder(order_ref=ref))
        log.info("bracket %s cancelled: %s", bracket_ref, reason)
        self._publish()

    def on_Flatten(self, msg: m.Flatten) -> None:
        """Cancel working entries; with `positions`, close open positions at market.

        The exit joins the bracket's OCA group, so its fill cancels the take-profit and the
        stop at the broker (and in the paper book) without a window in which both could fill.
        """

        def wanted(row: Order | Position) -> bool:
            return msg.strategy is None or row.strategy == msg.strategy

        for row in self.orders.open_orders():
            if row.role == "entry" and wanted(row) and row.state != OrderState.FILLED:
                self._cancel_bracket(row.bracket_ref or "", msg.reason)
        exits = 0
        if msg.positions:
            working_exits = {r.bracket_ref for r in self.orders.open_orders() if r.role == "exit"}
            for pos in self.positions.open():
                if not wanted(pos) or pos.bracket_ref in working_exits:
                    continue
                self._place_exit(pos, msg.reason)
                exits += 1
        log.warning(
            "flatten (%s): working %s entries cancelled, %d positions closing at market",
            msg.reason,
            msg.strategy or "all",
            exits,
        )

    def _send_exits(
        self,
        pos: Position,
        legs: tuple[m.BracketLeg, ...],
        roles: tuple[str, ...],
        reason: str,
    ) -> None:
        """Write-ahead, then send (or hand to the paper book) SELL orders closing `pos`."""
        contract = self.watched.get(pos.con_id) or self._contract_of(pos)
        rows = leg_rows(
            legs,
            roles,
            bracket_ref=pos.bracket_ref or "",
            strategy=pos.strategy,
            contract=self._contract_of(pos),
            dry_run=self.dry_run,
            now=self.clock.now(),
            reason=reason,
        )
        self._write(rows, reason)
        self._send(legs, contract)

    def _place_exit(
        self, pos: Position, reason: str, quantity: float | None = None, oca: str = ""
    ) -> list[str]:
        """Close `quantity` (all of the position by default) at market, inside the bracket's OCA
        group so its fill cancels the take-profit and stop and nothing can double-sell. GTC, so
        an exit sent while the market is closed waits for the open instead of expiring."""
        ref = f"{pos.bracket_ref}-X{secrets.token_hex(2)}"
        oca = oca or f"OCA-{pos.bracket_ref}"
        qty = int(quantity if quantity is not None else pos.quantity)
        leg = m.BracketLeg(ref, "SELL", "MKT", qty, oca_group=oca, transmit=True, tif=TIF["exit"])
        self._send_exits(pos, (leg,), ("exit",), reason)
        return [ref]

    # -- live broker events -------------------------------------------------------------------------
    def on_BrokerOrderStatus(self, msg: m.BrokerOrderStatus) -> None:
        if msg.order_ref not in self.machines:
            return
        self.orders.update(msg.order_ref, order_id=msg.order_id, perm_id=msg.perm_id)
        trigger = status_trigger(msg.status, msg.reason)
        model = self.machines[msg.order_ref]
        self._take_broker_total(msg, model)
        if trigger == "fill":
            return  # fills are counted from executions, which carry the quantities
        if trigger == "cancel_failed":
            # The order is still working (or already filled) at the broker.
            log.warning("order %s: cancel refused (%s)", msg.order_ref, msg.reason)
        if trigger and not (trigger == "accept" and model.state == OrderState.SUBMITTED):
            if self._fire(msg.order_ref, trigger, reason=msg.reason) and model.is_terminal:
                self._publish()  # a cancelled or rejected entry no longer holds its symbol
                # An exit cancelled at the broker (by another client, a person, IB) or a
                # rejected protection: the position may be bare now.
                self._enforce_protection("exit_gone")

    def _take_broker_total(self, msg: m.BrokerOrderStatus, model: OrderModel) -> None:
        """The broker shrank a working order (its OCA group re-balanced after a partial fill of
        a sibling): the smaller total is what protects, and what protection counts."""
        total = reconcile.reduced_total(msg, model.quantity)
        if total is None:
            return
        row = self.orders.get(msg.order_ref)
        parent = row.parent_ref if row is not None else None
        if parent is not None and parent in self.machines:
            # A child of an entry still working: IB may size it to what the entry has filled so
            # far and grow it as it fills (attached orders follow their parent), and a total
            # taken now would never grow back. Protection counts such a child as covering the
            # whole entry anyway (strategies.protection, pending_parent).
            return
        log.info(
            "order %s: the broker reduced it from %g to %g (OCA group re-balanced)",
            msg.order_ref,
            model.quantity,
            total,
        )
        model.quantity = total
        self.orders.update(msg.order_ref, quantity=total)

    def on_BrokerExecution(self, msg: m.BrokerExecution) -> None:
        self._apply_execution(msg)

    def on_BrokerCommission(self, msg: m.BrokerCommission) -> None:
        delta = self.orders.set_commission(msg.exec_id, msg.commission)
        if not delta:
            return
        fill = self.orders.fill(msg.exec_id)
        pos = self.positions.get(fill.con_id or 0) if fill is not None else None
        if pos is not None:
            self.positions.upsert(
                dataclasses.replace(pos, realized_pnl=(pos.realized_pnl or 0.0) - delta)
            )
        day = MarketHours.trading_date(self.clock.now())
        if self.days.get(day) is not None:
            self.days.add_realized(day, -delta)
        self._publish()

    def on_BrokerState(self, msg: m.BrokerState) -> None:
        """Reconciliation: settle every unknown order from what the broker reports."""
        if self._foreign(msg):
            return
        statuses = {s.order_ref: s for s in msg.statuses if s.order_ref}
        # Taken before the executions: one of them can move an unknown order to partially_filled,
        # and it is still to be settled from the broker's word (a stop that sold 1 of 4 and was
        # then cancelled must not stay working in the book, covering contracts it no longer does).
        unknown = {ref for ref, model in self.machines.items() if model.state == OrderState.UNKNOWN}
        for e in msg.executions:
            self._apply_execution(e)
        crashpoint("during_reconciliation")
        for ref, status in statuses.items():
            if ref in self.machines:
                self._take_broker_total(status, self.machines[ref])
        settled = 0
        for ref, model in list(self.machines.items()):
            if ref not in unknown:
                continue
            settled += 1
            recorded = self.orders.filled_quantity(ref)
            model.filled = recorded
            steps, warning = reconcile.settle(statuses.get(ref), recorded, model.quantity)
            if warning:
                log.warning("%s: %s", ref, warning)
            for step in steps:
                self._fire(ref, step.trigger, reason=step.reason, **step.fields)
        done, again = reconcile.chase_cancels(
            {ref: model.state for ref, model in self.machines.items()}, statuses
        )
        for ref, reason in done:
            self._fire(ref, "cancelled", reason=reason)
        for ref in again:
            log.info("order %s still working at the broker: cancelling it again", ref)
            self.connection.tell(m.CancelOrder(order_ref=ref))
        # Only at a resync: an adoption's fresh look comes while new orders may be in flight.
        asked = self.state_asked if not self.reconciled else set()
        states = {ref: model.state for ref, model in self.machines.items()}
        for ref, step in reconcile.ended_meanwhile(states, statuses, asked):
            log.warning("order %s: %s", ref, step.reason)
            self._fire(ref, step.trigger, reason=step.reason)
        ours = {r.order_ref for r in self.orders.open_orders()}
        strangers = reconcile.strangers(
            msg.statuses, ours, lambda ref: self.orders.get(ref) is not None
        )
        # Positions: ours (from fills) against the broker's. A difference is flagged for a person,
        # never "fixed" by trading: a guess here is how money gets lost.
        ours_held = {p.con_id: p.quantity for p in self.positions.open()}
        theirs = dict(msg.positions)
        self.broker_cap = reconcile.broker_cap(ours_held, theirs)
        for con_id, ours_qty, theirs_qty in reconcile.position_mismatches(ours_held, theirs):
            self.metrics.reconciliation_mismatches.inc()
            log.error(
                "position mismatch for contract %d: ours %g, broker %g",
                con_id,
                ours_qty,
                theirs_qty,
            )
        if strangers:
            self.metrics.reconciliation_mismatches.inc(len(strangers))
            log.warning(
                "orders at the broker that this service did not place: %s",
                ", ".join(strangers[:10]),
            )
        self._vouch(msg)
        self.reconciled = True
        self._publish()  # entries settled or ended here no longer hold their symbol and slot
        log.info(
            "reconciliation done: %d unknown orders settled, %d foreign orders",
            settled,
            len(strangers),
        )
        self._enforce_protection("reconciliation")

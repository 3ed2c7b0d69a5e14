"""The lost-database defence, as a part of OrderActor: vouching for the broker's state at each
reconciliation, refusing entries when the database cannot, and `optionsbot adopt`.

A database that was deleted, emptied, lost a table or rolled back (its -wal removed after a
SIGKILL) does not know what the broker holds. Trading on it would stack new entries on
positions already held, leave them without exits, and start the daily loss guard afresh from an
equity already down. The broker outlives the file, so it is the witness: at each reconciliation
the positions and working orders it reports are held against the database, and anything the
database does not account for blocks new entries until the operator adopts the broker's state.
"""

from __future__ import annotations

import logging
import math
import secrets
from typing import Any

from actors import messages as m
from actors.hours import MarketHours
from actors.orders.entry import ROLES
from machines.order import OrderState
from storage import identity
from storage.repos import iso
from storage.rows import Order, Position
from strategies.broker_state import (
    WORKING,
    Unknown,
    broker_start_equity,
    sane,
    seeded_start_equity,
    unknown_broker_state,
)

log = logging.getLogger("optionsbot.orders")

FOREIGN_DATABASE = (
    "foreign_database: this database belongs to another IB account; point storage.path at "
    "this account's database (or move this one away to start afresh)"
)


class Adoption:
    """Mixed into OrderActor; uses its db, repos, machines, metrics, clock, risk and connection."""

    unvouched: str = ""
    adopt_asked: bool = False
    history_ok: bool = False  # vouched for: its history mark may move on
    marked: dict[str, Any] | None = None

    # -- at each reconciliation ----------------------------------------------------------------
    def _foreign(self: Any, msg: m.BrokerState) -> bool:
        """Another account's database: refuse before reconciliation touches a row of it.

        Nothing may act on its rows (settle its orders, exit positions this account does not
        hold): OrderActor stays unreconciled, entries are refused and so is `optionsbot adopt`."""
        if identity.ensure(self.db, msg.account) != identity.OTHER:
            return False
        if identity.pending_adoption(self.db) is not None:
            identity.finish_adoption(self.db, f"refused: {FOREIGN_DATABASE}")
        self.adopt_asked = self.history_ok = self.reconciled = False
        self._set_vouch(FOREIGN_DATABASE, Unknown())
        self.risk.tell(m.BrokerVouch(reason=FOREIGN_DATABASE))
        return True

    def _vouch(self: Any, msg: m.BrokerState) -> None:
        """Hold the broker's state against the database, after reconciliation settled it."""
        whose = identity.ensure(self.db, msg.account)
        known = identity.meta(self.db)
        if whose == identity.NEW:
            log.warning("database %s is new: bound to this IB account", known["db_id"][:8])
        if known.get("damaged"):
            log.error("database %s was damaged: %s", known["db_id"][:8], known["damaged"])
        request = identity.pending_adoption(self.db)
        path = self.settings.storage.path
        mark, now_history = identity.read_mark(path), identity.history(self.db)
        if mark and mark.get("db_id") not in (None, now_history["db_id"]):
            log.error(
                "database %s replaces database %s, whose history reached %s fills: the old one "
                "was deleted or emptied",
                now_history["db_id"][:8],
                str(mark["db_id"])[:8],
                mark.get("fills"),
            )
        rollback = identity.rolled_back(mark, now_history)
        unknown = self._unknown(msg)
        if request is not None:
            identity.finish_adoption(self.db, self._adopt(msg, unknown))
            identity.clear_damaged(self.db)
            unknown = self._unknown(msg)
            rollback = ""  # the operator accepts the history as it now stands
        reason = unknown.reason() if unknown else rollback
        self.adopt_asked = False
        self.history_ok = not reason
        if self.history_ok:
            self._mark_history()
        # A database that is new, cannot vouch for the broker, lost part of its history or was
        # just adopted knows nothing sure of the day's beginning: the broker decides.
        trust_broker = (
            whose == identity.NEW or bool(unknown) or bool(rollback) or request is not None
        )
        start = self._seed_day(msg, trust_broker=trust_broker)
        self._set_vouch(reason, unknown)
        self.risk.tell(m.BrokerVouch(reason=reason, start_equity=start))

    def _unknown(self: Any, msg: m.BrokerState) -> Unknown:
        return unknown_broker_state(
            {p.con_id: p.quantity for p in self.positions.open()},
            msg.positions,
            [(w.order_ref, w.perm_id, w.status) for w in msg.working],
            lambda ref: self.orders.get(ref) is not None,
            identity.foreign_perm_ids(self.db),
        )

    def _set_vouch(self: Any, reason: str, unknown: Unknown) -> None:
        # At least 1 while blocked: a rolled-back or another account's database counts no item.
        count = len(unknown.positions) + len(unknown.orders)
        self.metrics.unvouched.set(max(count, 1) if reason else 0)
        if reason == self.unvouched:
            return
        was, self.unvouched = self.unvouched, reason
        now = self.clock.now()
        if reason and not was:  # journaled once per incident, not per refused entry
            log.error("no new entries: %s", reason)
            self.journal.decision(
                symbol="*",
                stage="reconcile",
                outcome="blocked",
                reason=reason,
                detail={
                    "positions": [list(p) for p in unknown.positions],
                    "orders": list(unknown.orders),
                },
                at=now,
            )
        elif not reason:
            log.warning("the database accounts for the broker's state again: entries allowed")
            self.journal.decision(
                symbol="*",
                stage="reconcile",
                outcome="cleared",
                reason=f"vouched again (was {was.split(':', 1)[0]})",
                at=now,
            )
        else:
            log.error("no new entries: %s", reason)

    def _seed_day(self: Any, msg: m.BrokerState, trust_broker: bool) -> float:
        """Today's start equity and realized P&L from the broker (net liquidation less today's
        P&L; today's realized) when the database cannot know them (`trust_broker`) or has no row
        for the day; otherwise the stored start, raised to the broker's when that is higher (the
        database began the day late): a loss already made is never hidden from the guard."""
        day = MarketHours.trading_date(self.clock.now())
        row = self.days.get(day)
        stored = row.start_equity if row is not None else None
        if msg.pnl is None:
            return stored if stored is not None else math.nan
        from_broker = broker_start_equity(msg.net_liquidation, msg.pnl.daily)
        start = from_broker if trust_broker else seeded_start_equity(stored, from_broker)
        if start is None:
            return stored if stored is not None else math.nan
        fresh = trust_broker or row is None
        realized = msg.pnl.realized if fresh and sane(msg.pnl.realized) else None
        if row is None or abs(start - (stored or 0.0)) > 0.005 or realized is not None:
            row = self.days.seed(day, start, realized)
            log.warning(
                "trading day %s: start-of-day equity $%.2f and realized P&L %+.2f from the broker "
                "(reqPnL: today's P&L %+.2f)",
                day,
                row.start_equity,
                row.realized_pnl,
                msg.pnl.daily,
            )
        return row.start_equity

    def _mark_history(self: Any) -> None:
        """Move the history mark on (never while unvouched: it is the evidence of a rollback)."""
        now = identity.history(self.db)
        if now != self.marked and now["db_id"]:
            identity.write_mark(self.settings.storage.path, now)
            self.marked = now

    # -- the operator's consent ------------------------------------------------------------------
    def _adoption_tick(self: Any) -> None:
        if self.history_ok and self.reconciled and not self.dry_run:
            self._mark_history()
        if self.adopt_asked:
            return
        if identity.pending_adoption(self.db) is None:
            return
        if self.dry_run:
            identity.finish_adoption(
                self.db, "nothing to adopt: dry-run trades a paper book, no broker holds it"
            )
            return
        if self.reconciled:
            # A fresh look at the broker; the answer (on_BrokerState) adopts.
            self.adopt_asked = True
            self.connection.tell(m.FetchBrokerState(reply_to=self.actor_ref))

    def _adopt(self: Any, msg: m.BrokerState, unknown: Unknown) -> str:
        now = self.clock.now()
        day = MarketHours.trading_date(now)
        foreign_ids = identity.foreign_perm_ids(self.db)
        adopted_orders, foreign = 0, []
        for w in msg.working:
            if w.status not in WORKING or w.perm_id in foreign_ids:
                continue
            if w.order_ref and self.orders.get(w.order_ref) is not None:
                continue
            if w.order_ref and w.sec_type == "OPT":
                self._adopt_order(w, now, day)
                adopted_orders += 1
            else:
                foreign.append(
                    {
                        "perm_id": w.perm_id,
                        "order_ref": w.order_ref or None,
                        "order_id": w.order_id,
                        "status": w.status,
                    }
                )
        identity.record_foreign(self.db, foreign)
        holdings = {h.con_id: h for h in msg.holdings}
        adopted_positions = []
        for con_id, _broker_qty, _ours in unknown.positions:
            h = holdings.get(con_id)
            if h is None:
                continue
            self._adopt_position(h, day)
            adopted_positions.append(h.local_symbol or str(con_id))
        summary = (
            f"adopted {len(adopted_positions)} positions ({', '.join(adopted_positions) or '-'}), "
            f"{adopted_orders} working orders as ours, {len(foreign)} as foreign"
        )
        log.warning("optionsbot adopt: %s", summary)
        self.journal.decision(
            symbol="*",
            stage="reconcile",
            outcome="adopted",
            reason=summary,
            detail={"positions": adopted_positions, "foreign": [f["perm_id"] for f in foreign]},
            at=now,
        )
        enforce = getattr(self, "_enforce_protection", None)
        if enforce is not None:  # the protection invariant: exits for what lacks them
            enforce("adopted")
        self._publish()
        return summary

    def _adopt_order(self: Any, w: m.BrokerWorkingOrder, now: Any, day: Any) -> None:
        """A working option order with an orderRef the database lost (ours, from before a
        rollback): recorded as working, so its fills are counted and its exits protect."""
        stem, _, suffix = w.order_ref.rpartition("-")
        role = ROLES.get(suffix) or ("exit" if w.action == "SELL" else "entry")
        bracket = stem if suffix in ROLES and stem else w.order_ref
        row = Order(
            order_ref=w.order_ref,
            bracket_ref=bracket,
            role=role,
            symbol=w.symbol,
            strategy="adopted",
            con_id=w.con_id,
            local_symbol=w.local_symbol,
            expiry=w.expiry,
            strike=w.strike,
            right=w.right,
            action=w.action,
            order_type=w.order_type,
            quantity=w.quantity,
            limit_price=w.limit_price or None,
            aux_price=w.aux_price or None,
            oca_group=w.oca_group or None,
            state=OrderState.SUBMITTED.value,
            order_id=w.order_id,
            perm_id=w.perm_id,
            dry_run=0,
            reason="adopted",
            trading_date=day.isoformat(),
            created_at=iso(now),
            multiplier=w.multiplier or None,
        )
        self.orders.insert(row, at=now)
        self._track(row, OrderState.SUBMITTED)
        self._count_states()

    def _adopt_position(self: Any, h: m.BrokerPosition, day: Any) -> None:
        existing = self.positions.get(h.con_id)
        # Exits already working at the broker for this contract name its bracket.
        exits = [
            r.bracket_ref
            for r in self.orders.open_orders()
            if r.con_id == h.con_id and r.action == "SELL" and r.bracket_ref
        ]
        bracket = (
            (existing and existing.bracket_ref)
            or (exits[0] if exits else None)
            or f"ADOPT-{day:%Y%m%d}-{secrets.token_hex(3)}"
        )
        self.positions.upsert(
            Position(
                con_id=h.con_id,
                symbol=h.symbol,
                local_symbol=h.local_symbol,
                expiry=h.expiry,
                strike=h.strike,
                right=h.right,
                quantity=h.quantity,
                avg_cost=h.avg_cost,
                realized_pnl=(existing and existing.realized_pnl) or 0.0,
                bracket_ref=bracket,
                strategy=(existing and existing.strategy) or "adopted",
                # The broker's (its position message carries it); else one stored before is
                # kept; else (None) the standard 100.
                multiplier=h.multiplier or (existing.multiplier if existing else None),
            )
        )
        self._watch(self._contract_of(self.positions.get(h.con_id)))

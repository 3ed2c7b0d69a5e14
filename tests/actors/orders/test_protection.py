"""OrderActor keeps the protection invariant through generated sequences of broker events:
partial fills, timeouts, cancels that cross fills, exits cancelled by someone else, stops that
fill, restarts. After every event and a Tick, every contract held is covered by a working stop
for its full quantity, and protection never makes the stops exceed what is held."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import LIVE_OPT_IN, SESSION_TIME, SIM_ACCOUNT, FakeRef

from actors import messages as m
from actors.metrics import Metrics, new_registry
from actors.orders import OrderActor
from configs.settings import load_settings
from sim.clock import ManualClock
from storage import OrderRepo, PositionRepo
from strategies.protection import ExitOrder, coverage
from strategies.signals import Direction, Signal

CONTRACT = m.OptionContract(
    "SPY", "20261123", 680.0, "C", con_id=1680, local_symbol="SPY 680C", trading_class="SPY"
)


def make_actor(root: Path, clock: ManualClock) -> OrderActor:
    path = root / "settings.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "dry_run": False,
                "broker": {"mode": "gateway", "account": SIM_ACCOUNT},
                "live": LIVE_OPT_IN,
                "storage": {"path": str(root / "bot.sqlite")},
                "risk": {"kill_switch_file": str(root / "KILL")},
                "log": {"json_file": None},
                "metrics": {"port": 0},
            }
        )
    )
    actor = OrderActor(
        load_settings(path, environ={}),
        Metrics(new_registry(process=False)),
        clock,
        FakeRef("connection"),
        FakeRef("risk"),
    )
    actor.on_start()
    return actor


def place_bracket(actor: OrderActor, clock: ManualClock, qty: int) -> list[str]:
    sig = Signal("scalp", "SPY", Direction.CALL, 0.7, ("test",), SESSION_TIME, 680.2)
    entry = m.EntryApproved(idea=m.TradeIdea(signal=sig), equity=100_000.0)
    actor.on_EntryApproved(entry)
    actor.entries["SPY"].limit = 2.43
    actor.entries["SPY"].contract = CONTRACT
    request = m.SizeRequest(
        idea=entry.idea, contract=CONTRACT, premium=2.43, reply_to=actor.actor_ref
    )
    actor.on_SizeDecision(m.SizeDecision(request=request, contracts=qty, reason="ok"))
    return [leg.order_ref for leg in actor.connection.last(m.PlaceBracket).legs]


def status(ref: str, state: str, reason: str = "") -> m.BrokerOrderStatus:
    return m.BrokerOrderStatus(
        order_ref=ref,
        status=state,
        filled=0,
        remaining=0,
        avg_fill_price=0,
        order_id=1,
        perm_id=2,
        reason=reason,
    )


def snapshot(actor: OrderActor):
    rows = OrderRepo(actor.db).open_orders()
    entries = {r.order_ref for r in rows if r.role == "entry"}
    exits = [
        ExitOrder(
            r.order_ref,
            r.con_id,
            r.role,
            r.quantity - (r.filled or 0),
            r.state,
            r.oca_group or "",
            bool(r.parent_ref) and r.parent_ref in entries,
        )
        for r in rows
        if r.action == "SELL"
    ]
    held = {p.con_id: p.quantity for p in PositionRepo(actor.db).open()}
    return held, coverage(held, exits), rows


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(
            ["fill", "timeout", "late_fill", "cancel_exit", "ack", "stop_fill", "restart"]
        ),
        st.integers(1, 4),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(qty=st.integers(1, 4), events=EVENTS)
def test_every_held_contract_stays_covered(qty, events):
    with tempfile.TemporaryDirectory() as tmp:
        clock = ManualClock(SESSION_TIME)
        actor = make_actor(Path(tmp), clock)
        actor.reconciled = True
        entry, tp, sl = place_bracket(actor, clock, qty)
        seq = 0
        try:
            for kind, n in events:
                seq += 1
                row = OrderRepo(actor.db).get(entry)
                left = row.quantity - (row.filled or 0)
                sent = len(actor.connection.of(m.PlaceBracket))
                if kind in ("fill", "late_fill") and left > 0:
                    if kind == "fill" and row.state == "cancelled":
                        continue
                    actor.on_BrokerExecution(
                        m.BrokerExecution(
                            order_ref=entry,
                            exec_id=f"x.{seq}",
                            side="BOT",
                            quantity=min(n, left),
                            price=2.43,
                            time=clock.now(),
                        )
                    )
                elif kind == "timeout" and row.state not in ("cancelled", "filled"):
                    # IB cancels the entry and its children unless the entry is filled already.
                    actor.on_BrokerOrderStatus(status(entry, "Cancelled"))
                    for child in (tp, sl):
                        actor.on_BrokerOrderStatus(status(child, "Cancelled"))
                elif kind == "cancel_exit":
                    working = [r for r in OrderRepo(actor.db).open_orders() if r.action == "SELL"]
                    if working:
                        victim = working[n % len(working)]
                        actor.on_BrokerOrderStatus(status(victim.order_ref, "Cancelled"))
                elif kind == "ack":
                    for r in OrderRepo(actor.db).open_orders():
                        if r.state == "pending_submit":
                            actor.on_BrokerOrderStatus(status(r.order_ref, "Submitted"))
                elif kind == "stop_fill":
                    held = {p.con_id: p.quantity for p in PositionRepo(actor.db).open()}
                    stops = [
                        r
                        for r in OrderRepo(actor.db).open_orders()
                        if r.role == "stop_loss"
                        and r.state == "submitted"
                        and (r.parent_ref is None or r.parent_ref != entry or row.state == "filled")
                    ]
                    if stops and held.get(CONTRACT.con_id, 0) > 0:
                        stop = stops[0]
                        k = min(n, stop.quantity - (stop.filled or 0), held[CONTRACT.con_id])
                        actor.on_BrokerExecution(
                            m.BrokerExecution(
                                order_ref=stop.order_ref,
                                exec_id=f"s.{seq}",
                                side="SLD",
                                quantity=k,
                                price=1.90,
                                time=clock.now(),
                            )
                        )
                elif kind == "restart":
                    actor.on_stop()
                    actor = make_actor(Path(tmp), clock)
                    statuses = tuple(
                        status(r.order_ref, "Submitted") for r in OrderRepo(actor.db).open_orders()
                    )
                    held = tuple((p.con_id, p.quantity) for p in PositionRepo(actor.db).open())
                    actor.on_BrokerState(
                        m.BrokerState(statuses=statuses, executions=(), positions=held)
                    )
                clock.advance(timedelta(seconds=40))  # past the retry window
                actor.on_Tick(m.Tick(now=clock.now()))
                held, cover, rows = snapshot(actor)
                for c in cover.values():
                    assert c.gap < 1, (kind, c, rows)
                protected = len(actor.connection.of(m.PlaceBracket)) > sent
                if protected:
                    for c in cover.values():
                        assert c.live_stop <= c.held + 1e-9, (kind, c, rows)
        finally:
            actor.on_stop()

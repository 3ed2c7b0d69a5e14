"""OrderActor's entry flow, paper fills and restart, by calling its handlers directly."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from support import LIVE_OPT_IN, SESSION_TIME, SIM_ACCOUNT, FakeRef

from actors import messages as m
from actors.orders import OrderActor
from machines.order import OrderState
from sim.clock import ManualClock
from storage import JournalRepo, OrderRepo, PositionRepo
from strategies.signals import Direction, Signal

CHAIN = m.Chain(
    "SPY",
    756733,
    "SPY",
    100,
    ("20261120", "20261123", "20261125"),
    tuple(float(k) for k in range(670, 691)),
)


def approved(direction=Direction.CALL) -> m.EntryApproved:
    sig = Signal("scalp", "SPY", direction, 0.7, ("test",), SESSION_TIME, 680.2)
    return m.EntryApproved(idea=m.TradeIdea(signal=sig), equity=100_000.0)


def quote(contract, bid, ask, clock, volume=5000.0) -> m.OptionQuote:
    return m.OptionQuote(
        contract=contract, bid=bid, ask=ask, last=(bid + ask) / 2, volume=volume, time=clock.now()
    )


def start(settings, metrics, clock):
    actor = OrderActor(settings, metrics, clock, FakeRef("connection"), FakeRef("risk"))
    actor.on_start()
    return actor


@pytest.fixture
def env(make_settings, metrics):
    settings = make_settings()
    clock = ManualClock(SESSION_TIME)
    actor = start(settings, metrics, clock)
    yield settings, metrics, clock, actor
    actor.on_stop()


def place(actor, clock, direction=Direction.CALL):
    """Drive an approved idea through chain, quotes and sizing to a placed bracket."""
    actor.on_EntryApproved(approved(direction))
    actor.on_ChainFetched(m.ChainFetched(symbol="SPY", chain=CHAIN, spot=680.2))
    ask = actor.connection.last(m.FetchQuotes)
    # The expiry day (Friday) is skipped with min_dte 1: Monday's expiry, the strike nearest
    # 680.2 asked alone (its neighbours only if it fails).
    assert {c.expiry for c in ask.contracts} == {"20261123"}
    assert [c.strike for c in ask.contracts] == [680.0]
    right = "C" if direction is Direction.CALL else "P"
    assert {c.right for c in ask.contracts} == {right}
    quotes = tuple(
        quote(
            m.OptionContract(
                "SPY",
                "20261123",
                c.strike,
                right,
                con_id=1000 + int(c.strike),
                local_symbol=f"SPY {c.strike}{right}",
            ),
            2.40,
            2.46,
            clock,
        )
        for c in ask.contracts
    )
    actor.on_QuotesFetched(m.QuotesFetched(quotes=quotes, missing=(), tag="SPY"))
    size = actor.risk.last(m.SizeRequest)
    assert size.contract.strike == 680.0 and size.premium == 2.43
    actor.on_SizeDecision(m.SizeDecision(request=size, contracts=4, reason="ok"))
    return size.contract


def test_idea_to_bracket_is_written_before_it_is_sent(env):
    settings, metrics, clock, actor = env
    contract = place(actor, clock)
    rows = OrderRepo(actor.db).open_orders()
    assert [(r.role, r.action, r.order_type) for r in rows] == [
        ("entry", "BUY", "LMT"),
        ("take_profit", "SELL", "LMT"),
        ("stop_loss", "SELL", "STP"),
    ]
    entry, tp, sl = rows
    assert entry.limit_price == 2.43 and tp.limit_price == 3.16 and sl.aux_price == 1.94
    assert tp.oca_group == sl.oca_group and tp.parent_ref == entry.order_ref
    assert all(r.state == OrderState.SUBMITTED for r in rows)
    events = OrderRepo(actor.db).events(entry.order_ref)
    assert [e.event for e in events] == ["created", "submit", "accept"]
    assert actor.connection.last(m.WatchQuotes).contract.con_id == contract.con_id
    assert actor.risk.last(m.EntryFinished).placed


def test_paper_fills_entry_then_take_profit_cancels_the_stop(env):
    settings, metrics, clock, actor = env
    contract = place(actor, clock)
    actor.on_QuoteUpdated(
        m.QuoteUpdated(quote=quote(contract, 2.40, 2.45, clock))
    )  # ask above the limit
    assert PositionRepo(actor.db).open() == []
    actor.on_QuoteUpdated(
        m.QuoteUpdated(quote=quote(contract, 2.38, 2.42, clock))
    )  # ask reaches 2.43
    pos = PositionRepo(actor.db).open()
    assert [(p.quantity, pytest.approx(p.avg_cost)) for p in pos] == [(4.0, 243.0)]
    actor.on_QuoteUpdated(m.QuoteUpdated(quote=quote(contract, 3.20, 3.25, clock)))
    assert PositionRepo(actor.db).open() == []
    states = {
        r.role: r.state
        for r in OrderRepo(actor.db).by_bracket(
            OrderRepo(actor.db).fills()[0].order_ref.rsplit("-", 1)[0]
        )
    }
    assert states == {"entry": "filled", "take_profit": "filled", "stop_loss": "cancelled"}
    # Limits fill at their limit: (3.16 - 2.43) x 100 x 4 = 292 less two commissions of 2.60.
    realized = PositionRepo(actor.db).all()[0].realized_pnl
    assert realized == pytest.approx(292.0 - 5.20)
    assert (
        metrics.registry.get_sample_value(
            "optionsbot_fills_total", {"symbol": "SPY", "side": "sell"}
        )
        == 1
    )
    changed = actor.risk.last(m.PositionsChanged)
    assert changed.open_positions == 0 and changed.equity == pytest.approx(100_000 + 286.8)


def test_a_duplicate_execution_is_ignored(env):
    settings, metrics, clock, actor = env
    place(actor, clock)
    ref = OrderRepo(actor.db).open_orders()[0].order_ref
    e = m.BrokerExecution(
        order_ref=ref, exec_id="x.1", side="BOT", quantity=4, price=2.43, time=clock.now()
    )
    actor.on_BrokerExecution(e)
    actor.on_BrokerExecution(e)
    assert len(OrderRepo(actor.db).fills(ref)) == 1
    assert PositionRepo(actor.db).open()[0].quantity == 4


def test_unfilled_entry_is_cancelled_after_its_timeout(env):
    settings, metrics, clock, actor = env
    place(actor, clock)
    clock.advance(timedelta(seconds=settings.orders.entry_timeout_s + 1))
    actor.on_Tick(m.Tick(now=clock.now()))
    assert OrderRepo(actor.db).open_orders() == []
    assert OrderRepo(actor.db).count_by_state() == {"cancelled": 3}


@pytest.fixture
def live(make_settings, metrics):
    settings = make_settings(
        dry_run=False, broker={"mode": "gateway", "account": SIM_ACCOUNT}, live=LIVE_OPT_IN
    )
    clock = ManualClock(SESSION_TIME)
    actor = start(settings, metrics, clock)
    actor.reconciled = True
    yield settings, clock, actor
    actor.on_stop()


def status(ref, state, reason="", filled=0.0):
    return m.BrokerOrderStatus(
        order_ref=ref,
        status=state,
        filled=filled,
        remaining=4 - filled,
        avg_fill_price=0,
        order_id=1,
        perm_id=2,
        reason=reason,
    )


def timed_out_bracket(settings, clock, actor):
    """A live bracket acknowledged by the broker whose entry then reaches its timeout."""
    place(actor, clock)
    entry, tp, sl = (leg.order_ref for leg in actor.connection.last(m.PlaceBracket).legs)
    for ref in (entry, tp, sl):
        actor.on_BrokerOrderStatus(status(ref, "Submitted" if ref == entry else "PreSubmitted"))
    clock.advance(timedelta(seconds=settings.orders.entry_timeout_s + 1))
    actor.on_Tick(m.Tick(now=clock.now()))
    return entry, tp, sl


def test_live_entry_timeout_cancels_only_the_entry_and_ib_takes_the_children(live):
    settings, clock, actor = live
    entry, tp, sl = timed_out_bracket(settings, clock, actor)
    assert [c.order_ref for c in actor.connection.of(m.CancelOrder)] == [entry]
    states = {r.order_ref: r.state for r in OrderRepo(actor.db).open_orders()}
    assert states == {entry: "pending_cancel", tp: "submitted", sl: "submitted"}
    for ref in (entry, tp, sl):  # the broker cancels the parent and, with it, the children
        actor.on_BrokerOrderStatus(status(ref, "Cancelled"))
    assert OrderRepo(actor.db).count_by_state() == {"cancelled": 3}


def test_an_entry_that_filled_before_its_cancel_keeps_its_exits(live):
    """The timeout races the fill: IB refuses the cancel (10148), which ib_async reports as
    Cancelled. The entry is not cancelled in our book, and its take-profit and stop stay."""
    settings, clock, actor = live
    entry, tp, sl = timed_out_bracket(settings, clock, actor)
    refused = "10148 OrderId 7 that needs to be cancelled cannot be cancelled, state: Filled."
    actor.on_BrokerOrderStatus(status(entry, "Cancelled", reason=refused))
    assert OrderRepo(actor.db).get(entry).state == "submitted"
    actor.on_BrokerExecution(
        m.BrokerExecution(
            order_ref=entry, exec_id="e.1", side="BOT", quantity=4, price=2.43, time=clock.now()
        )
    )
    for ref in (tp, sl):
        actor.on_BrokerOrderStatus(status(ref, "Submitted"))
    states = {r.order_ref: r.state for r in OrderRepo(actor.db).by_bracket(entry[:-2])}
    assert states == {entry: "filled", tp: "submitted", sl: "submitted"}
    assert [c.order_ref for c in actor.connection.of(m.CancelOrder)] == [entry]
    assert PositionRepo(actor.db).open()[0].quantity == 4


def test_a_working_live_entry_makes_its_symbol_busy_for_risk(live):
    settings, clock, actor = live
    place(actor, clock)
    exposure = dict(actor.risk.last(m.PositionsChanged).exposure_by_symbol)
    assert exposure["SPY"] == pytest.approx(2.43 * 100 * 4)


def test_a_cancel_lost_in_a_disconnect_is_sent_again_at_reconciliation(live):
    settings, clock, actor = live
    place(actor, clock)
    entry, tp, sl = (leg.order_ref for leg in actor.connection.last(m.PlaceBracket).legs)
    clock.advance(timedelta(seconds=settings.orders.entry_timeout_s + 1))
    actor.on_Tick(m.Tick(now=clock.now()))
    assert len(actor.connection.of(m.CancelOrder)) == 1
    working = tuple(status(ref, "Submitted") for ref in (entry, tp, sl))
    actor.on_BrokerState(m.BrokerState(statuses=working, executions=()))
    assert [c.order_ref for c in actor.connection.of(m.CancelOrder)] == [entry, entry]
    done = tuple(status(ref, "Cancelled") for ref in (entry, tp, sl))
    actor.on_BrokerState(m.BrokerState(statuses=done, executions=()))
    assert OrderRepo(actor.db).get(entry).state == "cancelled"


def test_restart_resumes_the_paper_book_without_sending_anything_twice(env, metrics):
    settings, _, clock, actor = env
    contract = place(actor, clock)
    actor.on_QuoteUpdated(m.QuoteUpdated(quote=quote(contract, 2.38, 2.42, clock)))
    actor.on_stop()
    again = start(settings, metrics, clock)
    try:
        assert again.connection.of(m.PlaceBracket) == []
        assert {r.role for r in OrderRepo(again.db).open_orders()} == {
            "take_profit",
            "stop_loss",
        }
        again.on_ConnectionChanged(
            m.ConnectionChanged(state="connected", may_trade=True, resync=True)
        )
        assert again.connection.last(m.WatchQuotes).contract.con_id == contract.con_id
        again.on_QuoteUpdated(
            m.QuoteUpdated(quote=quote(contract, 1.90, 1.95, clock))
        )  # stop at 1.94
        assert PositionRepo(again.db).open() == []
        assert OrderRepo(again.db).count_by_state() == {"filled": 2, "cancelled": 1}
    finally:
        again.on_stop()
        actor.on_start()  # the fixture stops it again


def test_live_restart_marks_orders_unknown_until_reconciled(make_settings, metrics):
    settings = make_settings(
        dry_run=False, broker={"mode": "gateway", "account": SIM_ACCOUNT}, live=LIVE_OPT_IN
    )
    clock = ManualClock(SESSION_TIME)
    actor = start(settings, metrics, clock)
    actor.reconciled = True
    place(actor, clock)
    sent = actor.connection.last(m.PlaceBracket)
    refs = [leg.order_ref for leg in sent.legs]
    actor.on_stop()
    again = start(settings, metrics, clock)
    try:
        assert {r.state for r in OrderRepo(again.db).open_orders()} == {"unknown"}
        again.on_ConnectionChanged(
            m.ConnectionChanged(state="connected", may_trade=True, resync=True)
        )
        assert again.connection.of(m.FetchBrokerState)
        # While reconciling, a new idea is refused.
        again.on_EntryApproved(approved())
        assert again.risk.last(m.EntryFinished).reason.startswith("reconciling")
        status = m.BrokerOrderStatus(
            order_ref=refs[0],
            status="Submitted",
            filled=0,
            remaining=4,
            avg_fill_price=0,
            order_id=5,
            perm_id=99,
        )
        again.on_BrokerState(m.BrokerState(statuses=(status,), executions=()))
        states = {r.order_ref: r.state for r in OrderRepo(again.db).by_bracket(refs[0][:-2])}
        assert states == {refs[0]: "submitted", refs[1]: "cancelled", refs[2]: "cancelled"}
        assert again.reconciled and again.connection.of(m.PlaceBracket) == []
        assert metrics.registry.get_sample_value("optionsbot_reconciliation_mismatches_total") == 0
        stranger = m.BrokerOrderStatus(
            order_ref="manual-order",
            status="Submitted",
            filled=0,
            remaining=1,
            avg_fill_price=0,
            order_id=900,
            perm_id=901,
        )
        again.on_BrokerState(m.BrokerState(statuses=(status, stranger), executions=()))
        assert metrics.registry.get_sample_value("optionsbot_reconciliation_mismatches_total") == 1
        # A position at the broker that our fills do not explain is flagged, not traded away.
        again.on_BrokerState(
            m.BrokerState(statuses=(status,), executions=(), positions=((424242, 2.0),))
        )
        assert metrics.registry.get_sample_value("optionsbot_reconciliation_mismatches_total") == 2
    finally:
        again.on_stop()


def test_no_option_is_a_skip_with_every_reason(env):
    settings, metrics, clock, actor = env
    actor.on_EntryApproved(approved())
    actor.on_ChainFetched(m.ChainFetched(symbol="SPY", chain=CHAIN, spot=680.2))
    for _ in range(2):  # the target, then its neighbours
        ask = actor.connection.last(m.FetchQuotes)
        actor.on_QuotesFetched(
            m.QuotesFetched(
                quotes=(),
                missing=tuple((c, "no quote (NaN): no entitlement") for c in ask.contracts),
                tag="SPY",
            )
        )
    assert len(actor.connection.of(m.FetchQuotes)) == 2
    done = actor.risk.last(m.EntryFinished)
    assert not done.placed and done.reason.startswith("no_option") and "NaN" in done.reason
    journal = JournalRepo(actor.db).decisions("SPY")
    assert [(d.stage, d.outcome) for d in journal] == [("option", "skipped")]
    assert "NaN" in journal[0].reason and journal[0].facts()["expiry"] == "20261123"
    assert journal[0].facts()["quote_asks"] == 2  # bench.latency counts the second asks


def test_empty_chain_is_a_skip(env):
    settings, metrics, clock, actor = env
    actor.on_EntryApproved(approved())
    actor.on_ChainFetched(
        m.ChainFetched(symbol="SPY", chain=None, spot=0, reason="empty option chain")
    )
    assert actor.risk.last(m.EntryFinished).reason == "no_chain: empty option chain"


def test_an_entry_at_the_first_bar_waits_for_the_chain_the_warming_asked_for(env, monkeypatch):
    """The day's first live bar both moves the spot (the chain is asked for, to warm quotes)
    and makes a signal: the entry takes that chain when it comes instead of asking again. An
    ask never answered is asked again once its requests' timeouts have passed."""
    settings, metrics, clock, actor = env
    actor.on_SpotMoved(m.SpotMoved(symbol="SPY", price=680.2, time=clock.now()))
    actor.on_EntryApproved(approved())
    assert len(actor.connection.of(m.FetchChain)) == 1
    actor.on_ChainFetched(m.ChainFetched(symbol="SPY", chain=CHAIN, spot=680.2))
    assert actor.connection.last(m.FetchQuotes).tag == "SPY"  # the entry went on
    actor.entries.clear()
    actor.chains.clear()  # as on the next trading day
    actor.on_EntryApproved(approved())
    actor.on_EntryApproved(approved())
    assert len(actor.connection.of(m.FetchChain)) == 2
    later = time.monotonic() + actor.chain_wait_s + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    actor.on_EntryApproved(approved())
    assert len(actor.connection.of(m.FetchChain)) == 3


def test_flatten_closes_positions_at_market_inside_the_oca_group(env):
    settings, metrics, clock, actor = env
    contract = place(actor, clock)
    actor.on_QuoteUpdated(m.QuoteUpdated(quote=quote(contract, 2.38, 2.42, clock)))  # entry fills
    actor.on_Flatten(m.Flatten(reason="10 min before the close", strategy="scalp"))
    actor.on_Flatten(m.Flatten(reason="again", strategy="scalp"))  # idempotent: one exit only
    exits = [r for r in OrderRepo(actor.db).open_orders() if r.role == "exit"]
    assert len(exits) == 1 and exits[0].order_type == "MKT"
    actor.on_QuoteUpdated(m.QuoteUpdated(quote=quote(contract, 2.50, 2.55, clock)))
    assert PositionRepo(actor.db).open() == []
    assert OrderRepo(actor.db).open_orders() == []
    states = sorted(r.state for r in OrderRepo(actor.db).by_bracket(exits[0].bracket_ref))
    assert states == [
        "cancelled",
        "cancelled",
        "filled",
        "filled",
    ]  # TP, SL cancelled; entry, exit filled


def test_flatten_for_whale_leaves_scalp_positions_alone(env):
    settings, metrics, clock, actor = env
    contract = place(actor, clock)
    actor.on_QuoteUpdated(m.QuoteUpdated(quote=quote(contract, 2.38, 2.42, clock)))
    actor.on_Flatten(m.Flatten(reason="test", strategy="whale"))
    assert [r for r in OrderRepo(actor.db).open_orders() if r.role == "exit"] == []
    assert PositionRepo(actor.db).open()


def test_an_execution_correction_replaces_the_fill_it_corrects(make_settings, metrics):
    settings = make_settings(
        dry_run=False, broker={"mode": "gateway", "account": SIM_ACCOUNT}, live=LIVE_OPT_IN
    )
    clock = ManualClock(SESSION_TIME)
    actor = start(settings, metrics, clock)
    actor.reconciled = True
    try:
        place(actor, clock)
        ref = actor.connection.last(m.PlaceBracket).legs[0].order_ref
        first = m.BrokerExecution(
            order_ref=ref,
            exec_id="0001.abcd.01.01",
            side="BOT",
            quantity=4,
            price=2.43,
            time=clock.now(),
            commission=2.60,
        )
        actor.on_BrokerExecution(first)
        fixed = m.BrokerExecution(
            order_ref=ref,
            exec_id="0001.abcd.01.02",
            side="BOT",
            quantity=4,
            price=2.41,
            time=clock.now(),
            commission=2.60,
        )
        actor.on_BrokerExecution(fixed)
        fills = OrderRepo(actor.db).fills(ref)
        assert [(f.exec_id, f.price) for f in fills] == [("0001.abcd.01.02", 2.41)]
        pos = PositionRepo(actor.db).open()[0]
        assert pos.quantity == 4 and pos.avg_cost == pytest.approx(241.0)
        assert OrderRepo(actor.db).get(ref).avg_fill_price == pytest.approx(2.41)
    finally:
        actor.on_stop()


def test_a_position_is_closed_at_the_open_of_its_expiry_day(env):
    settings, metrics, clock, actor = env
    contract = place(actor, clock)  # expires Monday 2026-11-23
    actor.on_QuoteUpdated(m.QuoteUpdated(quote=quote(contract, 2.38, 2.42, clock)))
    actor.on_Tick(m.Tick(now=clock.now()))
    assert not [r for r in OrderRepo(actor.db).open_orders() if r.role == "exit"]
    clock.set(datetime(2026, 11, 23, 14, 31, tzinfo=UTC))  # Monday, a minute after the open
    actor.on_Tick(m.Tick(now=clock.now()))
    actor.on_Tick(m.Tick(now=clock.now()))
    exits = [r for r in OrderRepo(actor.db).open_orders() if r.role == "exit"]
    assert len(exits) == 1
    submit = [e for e in OrderRepo(actor.db).events(exits[0].order_ref) if e.event == "submit"]
    assert json.loads(submit[0].detail) == {"reason": "expiry day"}


def test_after_shutdown_no_new_entry_starts_and_in_flight_orders_are_counted(
    make_settings, metrics
):
    settings = make_settings(
        dry_run=False, broker={"mode": "gateway", "account": SIM_ACCOUNT}, live=LIVE_OPT_IN
    )
    clock = ManualClock(SESSION_TIME)
    actor = start(settings, metrics, clock)
    actor.reconciled = True
    try:
        place(actor, clock)
        assert actor.in_flight() == 3  # sent, no acknowledgement yet
        ref = actor.connection.last(m.PlaceBracket).legs[0].order_ref
        actor.on_BrokerOrderStatus(
            m.BrokerOrderStatus(
                order_ref=ref,
                status="Submitted",
                filled=0,
                remaining=4,
                avg_fill_price=0,
                order_id=1,
                perm_id=2,
            )
        )
        assert actor.in_flight() == 2
        actor.on_Shutdown(m.Shutdown())
        actor.on_EntryApproved(approved())
        assert actor.risk.last(m.EntryFinished).reason.startswith("stopping")
        assert metrics.registry.get_sample_value("optionsbot_order_ack_seconds_count") == 1
    finally:
        actor.on_stop()


def test_an_entry_sized_after_the_stop_began_is_not_placed(env):
    """The entry was choosing its option when Shutdown came (the crash test's clean stop):
    it must not be placed, or its legs could still be queued when the socket closes."""
    settings, metrics, clock, actor = env
    actor.on_EntryApproved(approved())
    actor.on_ChainFetched(m.ChainFetched(symbol="SPY", chain=CHAIN, spot=680.2))
    ask = actor.connection.last(m.FetchQuotes)
    quotes = tuple(
        quote(
            m.OptionContract("SPY", "20261123", c.strike, "C", con_id=1000 + int(c.strike)),
            2.40,
            2.46,
            clock,
        )
        for c in ask.contracts
    )
    actor.on_QuotesFetched(m.QuotesFetched(quotes=quotes, missing=(), tag="SPY"))
    actor.on_Shutdown(m.Shutdown())
    size = actor.risk.last(m.SizeRequest)
    actor.on_SizeDecision(m.SizeDecision(request=size, contracts=4, reason="ok"))
    assert actor.connection.of(m.PlaceBracket) == []
    assert OrderRepo(actor.db).open_orders() == []
    finished = actor.risk.last(m.EntryFinished)
    assert not finished.placed and finished.reason.startswith("stopping")
    assert actor.in_flight() == 0


@pytest.mark.parametrize(
    ("bid", "ask", "code"),
    [(3.30, 3.25, "crossed"), (0.0, 0.0, "non_positive_quote"), (-1.0, -1.0, "non_positive_quote")],
)
def test_a_bad_streamed_quote_fills_nothing_and_is_counted(env, bid, ask, code):
    settings, metrics, clock, actor = env
    contract = place(actor, clock)
    actor.on_QuoteUpdated(m.QuoteUpdated(quote=quote(contract, 2.38, 2.42, clock)))  # entry fills
    fills = len(OrderRepo(actor.db).fills())
    # A bid above the take-profit (crossed) or under the stop (zero, -1) must not fill either.
    actor.on_QuoteUpdated(m.QuoteUpdated(quote=quote(contract, bid, ask, clock)))
    assert len(OrderRepo(actor.db).fills()) == fills
    assert PositionRepo(actor.db).open(), "the position was closed on a bad quote"
    assert (
        metrics.registry.get_sample_value(
            "optionsbot_quotes_rejected_total", {"symbol": "SPY", "reason": code}
        )
        == 1
    )


def test_a_quote_never_seen_to_change_is_stale(env):
    settings, metrics, clock, actor = env
    actor.on_EntryApproved(approved())
    actor.on_ChainFetched(m.ChainFetched(symbol="SPY", chain=CHAIN, spot=680.2))
    for _ in range(2):  # the target, then its neighbours
        ask = actor.connection.last(m.FetchQuotes)
        quotes = tuple(
            m.OptionQuote(
                contract=m.OptionContract("SPY", c.expiry, c.strike, c.right, con_id=int(c.strike)),
                bid=2.40,
                ask=2.46,
                last=2.43,
                volume=5000.0,
                time=clock.now(),  # arrived just now, but its age is unknown
                age_known=False,
            )
            for c in ask.contracts
        )
        actor.on_QuotesFetched(m.QuotesFetched(quotes=quotes, missing=(), tag="SPY"))
    finished = actor.risk.last(m.EntryFinished)
    assert not finished.placed and "never seen to change" in finished.reason
    assert OrderRepo(actor.db).open_orders() == []


# -- the protection invariant (issue 11) ------------------------------------------------------


def execution(ref, qty, exec_id, clock, side="BOT", price=2.43):
    return m.BrokerExecution(
        order_ref=ref, exec_id=exec_id, side=side, quantity=qty, price=price, time=clock.now()
    )


def gauge(metrics, name, labels=None):
    return metrics.registry.get_sample_value(name, labels or {})


def filled_live_bracket(settings, clock, actor):
    """A live bracket whose entry filled in full: TP and SL working at the broker."""
    place(actor, clock)
    entry, tp, sl = (leg.order_ref for leg in actor.connection.last(m.PlaceBracket).legs)
    for ref in (entry, tp, sl):
        actor.on_BrokerOrderStatus(status(ref, "Submitted"))
    actor.on_BrokerExecution(execution(entry, 4, "e.1", clock))
    return entry, tp, sl


def test_a_bracket_enters_for_the_day_and_protects_until_cancelled(live):
    """The defect: every leg was DAY, so a position held over the close lost its exits."""
    settings, clock, actor = live
    place(actor, clock)
    legs = {
        leg.order_ref.rsplit("-", 1)[1]: leg.tif
        for leg in actor.connection.last(m.PlaceBracket).legs
    }
    assert legs == {"E": "DAY", "TP": "GTC", "SL": "GTC"}


def test_a_stop_cancelled_at_the_broker_is_replaced_within_one_check(live, metrics):
    settings, clock, actor = live
    entry, tp, sl = filled_live_bracket(settings, clock, actor)
    sent = len(actor.connection.of(m.PlaceBracket))
    assert gauge(metrics, "optionsbot_unprotected_positions") == 0
    # Someone cancels the stop (and OCA takes the take-profit) from another client.
    for ref in (sl, tp):
        actor.on_BrokerOrderStatus(status(ref, "Cancelled"))
    placed = actor.connection.of(m.PlaceBracket)[sent:]
    assert len(placed) == 1
    legs = placed[0].legs
    assert [(leg.action, leg.order_type, leg.quantity, leg.tif) for leg in legs] == [
        ("SELL", "LMT", 4, "GTC"),
        ("SELL", "STP", 4, "GTC"),
    ]
    assert legs[0].limit_price == 3.16 and legs[1].aux_price == 1.94
    assert legs[0].oca_group == legs[1].oca_group and not legs[0].parent_ref
    # Written ahead like every order, and working in the machines: the next check adds nothing.
    rows = {r.order_ref: r for r in OrderRepo(actor.db).open_orders()}
    assert {rows[leg.order_ref].state for leg in legs} == {"pending_submit"}
    actor.on_Tick(m.Tick(now=clock.now()))
    assert len(actor.connection.of(m.PlaceBracket)) == sent + 1
    assert gauge(metrics, "optionsbot_unprotected_positions") == 0
    assert (
        gauge(
            metrics,
            "optionsbot_protection_placed_total",
            {"reason": "exit_gone", "action": "protect"},
        )
        == 1
    )


def test_a_fill_after_the_cancel_is_a_transition_and_its_position_is_protected(live, metrics):
    settings, clock, actor = live
    entry, tp, sl = timed_out_bracket(settings, clock, actor)
    for ref in (entry, tp, sl):
        actor.on_BrokerOrderStatus(status(ref, "Cancelled"))
    sent = len(actor.connection.of(m.PlaceBracket))
    # The broker had filled 2 before the cancel took; the execution arrives after it.
    actor.on_BrokerExecution(execution(entry, 2, "late.1", clock))
    assert PositionRepo(actor.db).open()[0].quantity == 2
    events = [e.event for e in OrderRepo(actor.db).events(entry)]
    assert events[-1] == "late_fill"
    assert OrderRepo(actor.db).get(entry).filled == 2
    placed = actor.connection.of(m.PlaceBracket)[sent:]
    assert [[(leg.order_type, leg.quantity) for leg in p.legs] for p in placed] == [
        [("LMT", 2), ("STP", 2)]
    ]


def test_a_late_fill_that_completes_the_order_makes_it_filled(live):
    settings, clock, actor = live
    entry, tp, sl = timed_out_bracket(settings, clock, actor)
    for ref in (entry, tp, sl):
        actor.on_BrokerOrderStatus(status(ref, "Cancelled"))
    actor.on_BrokerExecution(execution(entry, 4, "late.1", clock))
    assert OrderRepo(actor.db).get(entry).state == "filled"


def test_exits_that_expired_while_the_service_was_down_are_replaced_at_reconciliation(
    make_settings, metrics
):
    settings = make_settings(
        dry_run=False, broker={"mode": "gateway", "account": SIM_ACCOUNT}, live=LIVE_OPT_IN
    )
    clock = ManualClock(SESSION_TIME)
    actor = start(settings, metrics, clock)
    actor.reconciled = True
    entry, tp, sl = filled_live_bracket(settings, clock, actor)
    actor.on_stop()
    clock.advance(timedelta(days=3))  # Friday to Monday
    again = start(settings, metrics, clock)
    try:
        again.on_ConnectionChanged(
            m.ConnectionChanged(state="connected", may_trade=True, resync=True)
        )
        # The broker's word: the exits are gone (DAY orders, expired at Friday's close).
        gone = tuple(status(ref, "Cancelled") for ref in (tp, sl))
        again.on_BrokerState(m.BrokerState(statuses=gone, executions=(), positions=((1680, 4.0),)))
        placed = again.connection.last(m.PlaceBracket)
        assert [(leg.order_type, leg.quantity, leg.tif) for leg in placed.legs] == [
            ("LMT", 4, "GTC"),
            ("STP", 4, "GTC"),
        ]
        assert gauge(metrics, "optionsbot_unprotected_positions") == 0
    finally:
        again.on_stop()


def test_no_protection_is_placed_before_reconciliation(make_settings, metrics):
    settings = make_settings(
        dry_run=False, broker={"mode": "gateway", "account": SIM_ACCOUNT}, live=LIVE_OPT_IN
    )
    clock = ManualClock(SESSION_TIME)
    actor = start(settings, metrics, clock)
    actor.reconciled = True
    filled_live_bracket(settings, clock, actor)
    actor.on_stop()
    again = start(settings, metrics, clock)
    try:
        # Restored as unknown: they may be working at the broker; nothing is sent on a guess.
        again.on_Tick(m.Tick(now=clock.now()))
        assert again.connection.of(m.PlaceBracket) == []
    finally:
        again.on_stop()


def test_unprotected_action_flatten_closes_the_gap_at_market(make_settings, metrics):
    settings = make_settings(
        dry_run=False,
        broker={"mode": "gateway", "account": SIM_ACCOUNT},
        live=LIVE_OPT_IN,
        orders={"unprotected_action": "flatten"},
    )
    clock = ManualClock(SESSION_TIME)
    actor = start(settings, metrics, clock)
    actor.reconciled = True
    try:
        entry, tp, sl = filled_live_bracket(settings, clock, actor)
        for ref in (sl, tp):
            actor.on_BrokerOrderStatus(status(ref, "Cancelled"))
        legs = actor.connection.last(m.PlaceBracket).legs
        assert [(leg.action, leg.order_type, leg.quantity) for leg in legs] == [("SELL", "MKT", 4)]
    finally:
        actor.on_stop()


def test_paper_entries_expire_at_the_close_and_paper_exits_do_not(env):
    settings, metrics, clock, actor = env
    contract = place(actor, clock)
    actor.on_Tick(m.Tick(now=clock.now()))
    # The entry fills: its GTC exits go live in the paper book.
    actor.on_QuoteUpdated(m.QuoteUpdated(quote=quote(contract, 2.38, 2.42, clock)))
    assert PositionRepo(actor.db).open()[0].quantity == 4
    # A second bracket on another day would be DAY; here: over the close, the exits stay.
    close = actor.hours.session_at(clock.now()).close
    clock.set(close + timedelta(minutes=1))
    actor.on_Tick(m.Tick(now=clock.now()))
    states = {r.role: r.state for r in OrderRepo(actor.db).open_orders()}
    assert states == {"take_profit": "submitted", "stop_loss": "submitted"}
    assert len(actor.paper.orders) == 2


def test_an_unfilled_paper_entry_dies_at_the_close_with_its_children(make_settings, metrics):
    settings = make_settings(orders={"entry_timeout_s": 86_400})
    clock = ManualClock(SESSION_TIME)
    actor = start(settings, metrics, clock)
    try:
        place(actor, clock)
        actor.on_Tick(m.Tick(now=clock.now()))
        close = actor.hours.session_at(clock.now()).close
        clock.set(close + timedelta(minutes=1))
        actor.on_Tick(m.Tick(now=clock.now()))
        assert OrderRepo(actor.db).open_orders() == [] and actor.paper.orders == {}
        assert OrderRepo(actor.db).count_by_state() == {"cancelled": 3}
    finally:
        actor.on_stop()


def test_a_second_late_fill_gets_its_own_group_and_nothing_is_covered_twice(live):
    settings, clock, actor = live
    entry, tp, sl = timed_out_bracket(settings, clock, actor)
    actor.on_BrokerExecution(execution(entry, 2, "part.1", clock))
    for ref in (entry, tp, sl):
        actor.on_BrokerOrderStatus(status(ref, "Cancelled"))
    first = actor.connection.last(m.PlaceBracket).legs
    assert [leg.quantity for leg in first] == [2, 2]
    assert first[0].oca_group == f"OCA-{entry[:-2]}"
    for leg in first:
        actor.on_BrokerOrderStatus(status(leg.order_ref, "Submitted"))
    # One more contract crossed the cancel: covered by a group of its own, for exactly 1.
    actor.on_BrokerExecution(execution(entry, 1, "late.2", clock))
    second = actor.connection.last(m.PlaceBracket).legs
    assert [leg.quantity for leg in second] == [1, 1]
    assert second[0].oca_group == second[1].oca_group != first[0].oca_group
    sent = len(actor.connection.of(m.PlaceBracket))
    actor.on_Tick(m.Tick(now=clock.now()))
    assert len(actor.connection.of(m.PlaceBracket)) == sent


def test_a_rejected_protection_is_retried_but_not_on_every_tick(live, metrics):
    settings, clock, actor = live
    entry, tp, sl = filled_live_bracket(settings, clock, actor)
    for ref in (sl, tp):
        actor.on_BrokerOrderStatus(status(ref, "Cancelled"))
    legs = actor.connection.last(m.PlaceBracket).legs
    for leg in legs:
        actor.on_BrokerOrderStatus(status(leg.order_ref, "Cancelled", reason="201 Order rejected"))
    sent = len(actor.connection.of(m.PlaceBracket))
    for _ in range(5):
        actor.on_Tick(m.Tick(now=clock.now()))
    assert len(actor.connection.of(m.PlaceBracket)) == sent
    assert gauge(metrics, "optionsbot_unprotected_positions") == 1


def test_a_paper_entry_from_an_earlier_day_expires_at_the_first_tick_after_a_restart(
    make_settings, metrics
):
    settings = make_settings(orders={"entry_timeout_s": 86_400 * 7})
    clock = ManualClock(SESSION_TIME)
    actor = start(settings, metrics, clock)
    place(actor, clock)
    actor.on_stop()  # down over the close and the weekend
    clock.advance(timedelta(days=3))
    again = start(settings, metrics, clock)
    try:
        assert len(again.paper.orders) == 3
        again.on_Tick(m.Tick(now=clock.now()))
        assert again.paper.orders == {}
        assert OrderRepo(again.db).count_by_state() == {"cancelled": 3}
    finally:
        again.on_stop()


def test_a_fill_on_a_rejected_order_is_recorded_and_flagged(live, metrics):
    settings, clock, actor = live
    place(actor, clock)
    entry = actor.connection.last(m.PlaceBracket).legs[0].order_ref
    actor.on_BrokerOrderStatus(status(entry, "Cancelled", reason="201 Order rejected"))
    assert OrderRepo(actor.db).get(entry).state == "rejected"
    before = gauge(metrics, "optionsbot_reconciliation_mismatches_total")
    actor.on_BrokerExecution(execution(entry, 1, "odd.1", clock))
    assert OrderRepo(actor.db).get(entry).filled == 1
    assert gauge(metrics, "optionsbot_reconciliation_mismatches_total") == before + 1
    assert PositionRepo(actor.db).open()[0].quantity == 1


def test_protection_never_covers_more_than_the_broker_holds(make_settings, metrics):
    """A stop for contracts the broker does not hold (a sell the service never saw) would open a
    short when it fires: the broker's count caps the protection, and the difference is flagged."""
    settings = make_settings(
        dry_run=False, broker={"mode": "gateway", "account": SIM_ACCOUNT}, live=LIVE_OPT_IN
    )
    clock = ManualClock(SESSION_TIME)
    actor = start(settings, metrics, clock)
    actor.reconciled = True
    entry, tp, sl = filled_live_bracket(settings, clock, actor)
    actor.on_stop()
    again = start(settings, metrics, clock)
    try:
        again.on_ConnectionChanged(
            m.ConnectionChanged(state="connected", may_trade=True, resync=True)
        )
        before = gauge(metrics, "optionsbot_reconciliation_mismatches_total")
        gone = tuple(status(ref, "Cancelled") for ref in (tp, sl))
        again.on_BrokerState(m.BrokerState(statuses=gone, executions=(), positions=((1680, 1.0),)))
        assert [leg.quantity for leg in again.connection.last(m.PlaceBracket).legs] == [1, 1]
        assert gauge(metrics, "optionsbot_reconciliation_mismatches_total") > before
        # The broker holds nothing: nothing is placed at all.
        again.on_stop()
        third = start(settings, metrics, clock)
        third.on_ConnectionChanged(
            m.ConnectionChanged(state="connected", may_trade=True, resync=True)
        )
        rows = OrderRepo(third.db).open_orders()
        gone = tuple(status(r.order_ref, "Cancelled") for r in rows)
        third.on_BrokerState(m.BrokerState(statuses=gone, executions=(), positions=()))
        assert third.connection.of(m.PlaceBracket) == []
        again = third
    finally:
        again.on_stop()


def test_a_stop_the_broker_shrank_counts_at_its_new_size(live):
    """ocaType 2: when the take-profit fills in part, IB shrinks the stop. The order's row and
    machine take the broker's smaller total, so protection and reconciliation count what really
    stands at the broker (and a later status cannot grow it back)."""
    settings, clock, actor = live
    filled_live_bracket(settings, clock, actor)  # a take-profit fills only once the entry has
    legs = actor.connection.last(m.PlaceBracket).legs
    sl = next(leg for leg in legs if leg.order_ref.endswith("-SL"))
    size = sl.quantity
    shrunk = m.BrokerOrderStatus(sl.order_ref, "Submitted", 0, size - 1, 0, 3, 4)
    actor.on_BrokerOrderStatus(shrunk)
    assert OrderRepo(actor.db).get(sl.order_ref).quantity == size - 1
    assert actor.machines[sl.order_ref].quantity == size - 1
    # A status with no quantities yet (IB's first word on a new order) changes nothing.
    actor.on_BrokerOrderStatus(m.BrokerOrderStatus(sl.order_ref, "PreSubmitted", 0, 0, 0, 3, 4))
    assert OrderRepo(actor.db).get(sl.order_ref).quantity == size - 1


def test_a_closed_paper_position_releases_its_quote_line(env):
    """After the take-profit fills (and OCA cancels the stop) nothing needs the contract's
    quotes: the line is released, or every trade of the day would keep one open."""
    settings, metrics, clock, actor = env
    contract = place(actor, clock)
    actor.on_QuoteUpdated(m.QuoteUpdated(quote=quote(contract, 2.38, 2.42, clock)))
    assert actor.connection.of(m.UnwatchQuotes) == []  # held: still watched
    actor.on_QuoteUpdated(m.QuoteUpdated(quote=quote(contract, 3.20, 3.25, clock)))
    assert [u.contract.con_id for u in actor.connection.of(m.UnwatchQuotes)] == [contract.con_id]
    assert actor.watched == {}


def test_a_cancelled_or_expired_paper_entry_releases_its_quote_line(env):
    settings, metrics, clock, actor = env
    contract = place(actor, clock)
    clock.advance(timedelta(seconds=settings.orders.entry_timeout_s + 1))
    actor.on_Tick(m.Tick(now=clock.now()))
    assert [u.contract.con_id for u in actor.connection.of(m.UnwatchQuotes)] == [contract.con_id]
    # An entry still working at the close expires with the session: its line goes too.
    place(actor, clock)
    actor.on_Tick(m.Tick(now=clock.now()))
    actor.on_Tick(m.Tick(now=clock.now().replace(hour=21, minute=5)))  # after the close
    assert len(actor.connection.of(m.UnwatchQuotes)) == 2 and actor.watched == {}


def test_paper_equity_counts_every_closed_position_realized(env):
    settings, metrics, clock, actor = env
    contract = place(actor, clock)
    actor.on_QuoteUpdated(m.QuoteUpdated(quote=quote(contract, 2.38, 2.42, clock)))
    actor.on_QuoteUpdated(m.QuoteUpdated(quote=quote(contract, 3.20, 3.25, clock)))
    realized = sum(p.realized_pnl or 0.0 for p in PositionRepo(actor.db).all())
    assert PositionRepo(actor.db).realized_total() == pytest.approx(realized)
    assert actor._equity() == pytest.approx(settings.risk.paper_equity + realized)


def test_a_working_entry_is_published_as_pending_until_its_first_fill(live):
    """RiskActor counts an entry still working at the broker as an open position to be: it may
    fill. Once it has filled in part it is the position itself and counts once."""
    settings, clock, actor = live
    place(actor, clock)
    entry = actor.connection.last(m.PlaceBracket).legs[0].order_ref
    changed = actor.risk.last(m.PositionsChanged)
    assert (changed.open_positions, changed.pending_entries) == (0, 1)
    actor.on_BrokerOrderStatus(status(entry, "Submitted"))
    actor.on_BrokerExecution(execution(entry, 1, "e.1", clock))
    changed = actor.risk.last(m.PositionsChanged)
    assert (changed.open_positions, changed.pending_entries) == (1, 0)
    actor.on_BrokerOrderStatus(status(entry, "Cancelled", filled=1))
    changed = actor.risk.last(m.PositionsChanged)
    assert (changed.open_positions, changed.pending_entries) == (1, 0)


def test_an_exit_that_filled_in_part_and_ended_while_down_is_settled_from_the_broker(
    make_settings, metrics
):
    """While the service was down the stop sold 1 of 4, then the broker cancelled the rest (a
    GTC cancelled by IB, or by a person). Reconciliation applies the execution first, which moves
    the unknown stop to partially_filled: it must still be settled from the broker's Cancelled,
    or the book keeps a phantom stop for 3 and the 3 contracts held stay bare."""
    settings = make_settings(
        dry_run=False, broker={"mode": "gateway", "account": SIM_ACCOUNT}, live=LIVE_OPT_IN
    )
    clock = ManualClock(SESSION_TIME)
    actor = start(settings, metrics, clock)
    actor.reconciled = True
    entry, tp, sl = filled_live_bracket(settings, clock, actor)
    con_id = PositionRepo(actor.db).open()[0].con_id
    actor.on_stop()
    again = start(settings, metrics, clock)
    try:
        again.on_ConnectionChanged(
            m.ConnectionChanged(state="connected", may_trade=True, resync=True)
        )
        sold = execution(sl, 1, "sl.1", clock, side="SLD", price=1.94)
        gone = (status(entry, "Filled", filled=4), status(tp, "Cancelled"))
        gone += (status(sl, "Cancelled", filled=1),)
        again.on_BrokerState(
            m.BrokerState(statuses=gone, executions=(sold,), positions=((con_id, 3.0),))
        )
        assert OrderRepo(again.db).get(sl).state == "cancelled"
        assert PositionRepo(again.db).open()[0].quantity == 3
        placed = again.connection.last(m.PlaceBracket)
        assert [(leg.order_type, leg.quantity) for leg in placed.legs] == [("LMT", 3), ("STP", 3)]
        assert gauge(metrics, "optionsbot_unprotected_positions") == 0
    finally:
        again.on_stop()


def resync(actor):
    actor.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    assert not actor.reconciled


def test_exits_cancelled_during_a_disconnect_are_settled_at_the_resync(live, metrics):
    """A reconnect is not a restart: the book's orders stay as they were, and a status the
    broker sent while the socket was closed never came (ib_async's sync after a reconnect emits
    none for completed orders). The reconciliation's word settles them, or the book keeps a stop
    the broker no longer holds and the position stays bare."""
    settings, clock, actor = live
    entry, tp, sl = filled_live_bracket(settings, clock, actor)
    con_id = PositionRepo(actor.db).open()[0].con_id
    sent = len(actor.connection.of(m.PlaceBracket))
    resync(actor)
    gone = (status(entry, "Filled", filled=4), status(sl, "Cancelled"), status(tp, "Cancelled"))
    actor.on_BrokerState(m.BrokerState(statuses=gone, executions=(), positions=((con_id, 4.0),)))
    assert {OrderRepo(actor.db).get(ref).state for ref in (tp, sl)} == {"cancelled"}
    placed = actor.connection.of(m.PlaceBracket)[sent:]
    assert [[(leg.order_type, leg.quantity) for leg in p.legs] for p in placed] == [
        [("LMT", 4), ("STP", 4)]
    ]
    assert gauge(metrics, "optionsbot_unprotected_positions") == 0


def test_a_refused_cancel_seen_at_the_resync_leaves_the_order_working(live):
    """ib_async marks a trade Cancelled when its cancel is refused (10148): not an end."""
    settings, clock, actor = live
    entry, tp, sl = filled_live_bracket(settings, clock, actor)
    resync(actor)
    refused = "10148 OrderId 7 that needs to be cancelled cannot be cancelled, state: Submitted."
    words = (status(sl, "Cancelled", reason=refused), status(tp, "Submitted"))
    actor.on_BrokerState(m.BrokerState(statuses=words, executions=()))
    assert {OrderRepo(actor.db).get(ref).state for ref in (tp, sl)} == {"submitted"}


def test_exits_lost_with_the_connection_before_the_broker_saw_them_are_replaced(live, metrics):
    """Protection written and sent just before the socket closed: the send gate drops what it
    still queued, so the broker never saw it. At the resync it is in none of the broker's lists;
    left pending_submit, it would cover the position in the book and nowhere else."""
    settings, clock, actor = live
    entry, tp, sl = filled_live_bracket(settings, clock, actor)
    con_id = PositionRepo(actor.db).open()[0].con_id
    for ref in (sl, tp):
        actor.on_BrokerOrderStatus(status(ref, "Cancelled"))
    lost = [leg.order_ref for leg in actor.connection.last(m.PlaceBracket).legs]
    assert {OrderRepo(actor.db).get(ref).state for ref in lost} == {"pending_submit"}
    sent = len(actor.connection.of(m.PlaceBracket))
    resync(actor)
    words = (status(entry, "Filled", filled=4), status(sl, "Cancelled"), status(tp, "Cancelled"))
    actor.on_BrokerState(m.BrokerState(statuses=words, executions=(), positions=((con_id, 4.0),)))
    assert {OrderRepo(actor.db).get(ref).state for ref in lost} == {"cancelled"}
    placed = actor.connection.of(m.PlaceBracket)[sent:]
    assert [[(leg.order_type, leg.quantity) for leg in p.legs] for p in placed] == [
        [("LMT", 4), ("STP", 4)]
    ]
    assert gauge(metrics, "optionsbot_unprotected_positions") == 0


def test_an_exit_sent_after_the_broker_state_was_asked_is_not_taken_for_lost(live):
    """The broker's lists are a snapshot from the moment they were asked: an exit placed after
    that (a flatten during the reconciliation) is missing from them and is still working."""
    settings, clock, actor = live
    entry, tp, sl = filled_live_bracket(settings, clock, actor)
    resync(actor)
    actor.on_Flatten(m.Flatten(reason="kill switch", positions=True))
    exit_ref = actor.connection.last(m.PlaceBracket).legs[0].order_ref
    words = (status(entry, "Filled", filled=4), status(sl, "Submitted"), status(tp, "Submitted"))
    actor.on_BrokerState(m.BrokerState(statuses=words, executions=()))
    assert OrderRepo(actor.db).get(exit_ref).state == "pending_submit"


def test_an_entry_the_reconciliation_ends_frees_its_symbol_for_risk_at_once(live):
    settings, clock, actor = live
    place(actor, clock)
    refs = [leg.order_ref for leg in actor.connection.last(m.PlaceBracket).legs]
    assert actor.risk.last(m.PositionsChanged).pending_entries == 1
    resync(actor)
    ended = tuple(status(ref, "Cancelled") for ref in refs)
    actor.on_BrokerState(m.BrokerState(statuses=ended, executions=()))
    changed = actor.risk.last(m.PositionsChanged)
    assert changed.pending_entries == 0 and dict(changed.exposure_by_symbol).get("SPY", 0) == 0


def test_a_childs_smaller_total_while_its_entry_works_is_not_taken(live):
    """While the entry works, IB may size its attached children to what the entry has filled so
    far and grow them as it fills (attached orders follow their parent). The service only ever
    shrinks an order to the broker's total: a child taken down to 1 of 4 would stay at 1 when IB
    grows it back, protection would add 3 more on top, and a triggered stop would sell short.
    Until the entry has filled or ended, its children's totals are not the broker's last word."""
    settings, clock, actor = live
    place(actor, clock)
    entry, tp, sl = (leg.order_ref for leg in actor.connection.last(m.PlaceBracket).legs)
    actor.on_BrokerOrderStatus(status(entry, "Submitted"))
    actor.on_BrokerExecution(execution(entry, 1, "e1.01", clock))
    actor.on_BrokerOrderStatus(m.BrokerOrderStatus(sl, "Submitted", 0, 1, 0, 3, 4))
    actor.on_BrokerOrderStatus(m.BrokerOrderStatus(tp, "Submitted", 0, 1, 0, 3, 5))
    assert {OrderRepo(actor.db).get(ref).quantity for ref in (tp, sl)} == {4.0}
    actor.on_BrokerExecution(execution(entry, 3, "e2.01", clock))
    for ref in (tp, sl):
        actor.on_BrokerOrderStatus(m.BrokerOrderStatus(ref, "Submitted", 0, 4, 0, 3, 4))
    actor.on_Tick(m.Tick(now=clock.now()))
    assert len(actor.connection.of(m.PlaceBracket)) == 1, "no protection on top of the bracket"
    # Once the entry has filled, a smaller total is the OCA group's re-balance: taken.
    actor.on_BrokerOrderStatus(m.BrokerOrderStatus(sl, "Submitted", 0, 3, 0, 3, 4))
    assert OrderRepo(actor.db).get(sl).quantity == 3


def test_exits_gone_from_every_broker_list_at_the_resync_are_replaced(live, metrics):
    """A long disconnect (the Gateway down overnight): IB cancelled the GTC exits (quarter end,
    a corporate action) before today's completed orders begin, so they are in no list at all.
    Absent from the open orders they work nowhere: settled as a restart settles them."""
    settings, clock, actor = live
    entry, tp, sl = filled_live_bracket(settings, clock, actor)
    con_id = PositionRepo(actor.db).open()[0].con_id
    sent = len(actor.connection.of(m.PlaceBracket))
    resync(actor)
    actor.on_BrokerState(m.BrokerState(statuses=(), executions=(), positions=((con_id, 4.0),)))
    assert {OrderRepo(actor.db).get(ref).state for ref in (tp, sl)} == {"cancelled"}
    placed = actor.connection.of(m.PlaceBracket)[sent:]
    assert [[(leg.order_type, leg.quantity) for leg in p.legs] for p in placed] == [
        [("LMT", 4), ("STP", 4)]
    ]
    assert gauge(metrics, "optionsbot_unprotected_positions") == 0


def test_exits_gone_with_the_contracts_they_sold_are_not_replaced(live, metrics):
    """The stop filled yesterday, while the service was cut off: no execution today, no status,
    and the broker holds nothing. The book still says 4; protection covers what the broker holds
    (none), so no SELL is sent for contracts that are not there."""
    settings, clock, actor = live
    entry, tp, sl = filled_live_bracket(settings, clock, actor)
    sent = len(actor.connection.of(m.PlaceBracket))
    resync(actor)
    actor.on_BrokerState(m.BrokerState(statuses=(), executions=(), positions=()))
    assert {OrderRepo(actor.db).get(ref).state for ref in (tp, sl)} == {"cancelled"}
    assert actor.connection.of(m.PlaceBracket)[sent:] == []
    assert gauge(metrics, "optionsbot_reconciliation_mismatches_total") >= 1


def test_an_entry_whose_cancel_was_pending_and_is_in_no_list_is_settled_at_the_resync(live):
    """Its cancel went out, then the socket closed; the broker lists it nowhere (the bracket never
    reached it, or ended before today). Left pending_cancel it would hold its symbol and an
    open-position slot for good: the cancel chase only acts on the broker's word."""
    settings, clock, actor = live
    entry, tp, sl = timed_out_bracket(settings, clock, actor)
    assert OrderRepo(actor.db).get(entry).state == "pending_cancel"
    resync(actor)
    actor.on_BrokerState(m.BrokerState(statuses=(), executions=()))
    assert {OrderRepo(actor.db).get(ref).state for ref in (entry, tp, sl)} == {"cancelled"}
    assert actor.risk.last(m.PositionsChanged).pending_entries == 0


# -- the target strike asked first (issue 17) ---------------------------------------------------


def _answer(actor, clock, ask, volume_of=lambda k: 5000.0, spread=0.06):
    quotes = tuple(
        quote(
            m.OptionContract("SPY", c.expiry, c.strike, c.right, con_id=1000 + int(c.strike)),
            2.40,
            2.40 + spread,
            clock,
            volume=volume_of(c.strike),
        )
        for c in ask.contracts
    )
    actor.on_QuotesFetched(m.QuotesFetched(quotes=quotes, missing=(), tag="SPY"))


def test_an_entry_asks_its_neighbours_only_when_its_target_fails_and_picks_as_before(env):
    """The target (680) is too thin: the four other candidates are asked together, once, and the
    most liquid of them is bought, as when all five were asked at once."""
    settings, metrics, clock, actor = env
    actor.on_EntryApproved(approved())
    actor.on_ChainFetched(m.ChainFetched(symbol="SPY", chain=CHAIN, spot=680.2))
    first = actor.connection.last(m.FetchQuotes)
    assert [c.strike for c in first.contracts] == [680.0]
    assert first.wait_s == settings.options.quote_wait_s
    volumes = {678.0: 900.0, 679.0: 3000.0, 680.0: 50.0, 681.0: 2000.0, 682.0: 150.0}
    _answer(actor, clock, first, volumes.get)
    second = actor.connection.last(m.FetchQuotes)
    assert sorted(c.strike for c in second.contracts) == [678.0, 679.0, 681.0, 682.0]
    assert 0.25 <= second.wait_s <= settings.options.quote_wait_s
    assert actor.risk.of(m.SizeRequest) == []
    _answer(actor, clock, second, volumes.get)
    assert len(actor.connection.of(m.FetchQuotes)) == 2
    size = actor.risk.last(m.SizeRequest)
    assert size.contract.strike == 679.0
    # A repeated answer (or one for an ask no longer out) changes nothing.
    _answer(actor, clock, second, volumes.get)
    assert len(actor.risk.of(m.SizeRequest)) == 1 and len(actor.connection.of(m.FetchQuotes)) == 2


def test_a_target_that_failed_too_late_is_not_followed_by_a_second_ask(env, monkeypatch):
    """The target's answer came 8 s after the ask (it waited for a line): what is left of the
    9 s one ask may take is too little for another; the entry is skipped, saying why."""
    settings, metrics, clock, actor = env
    actor.on_EntryApproved(approved())
    actor.on_ChainFetched(m.ChainFetched(symbol="SPY", chain=CHAIN, spot=680.2))
    first = actor.connection.last(m.FetchQuotes)
    later = time.monotonic() + 8.0
    monkeypatch.setattr(time, "monotonic", lambda: later)
    actor.on_QuotesFetched(
        m.QuotesFetched(
            quotes=(),
            missing=((first.contracts[0], "no market data line free within 4s"),),
            tag="SPY",
        )
    )
    assert len(actor.connection.of(m.FetchQuotes)) == 1
    done = actor.risk.last(m.EntryFinished)
    assert not done.placed
    assert done.reason.startswith("no_option: 680C: no market data line free")
    assert "not asked: 8.0s of the entry's 9s for quotes spent" in done.reason


def test_a_second_answer_past_the_bound_is_not_traded_on(env, monkeypatch):
    """The later ask's wait fits the bound; an answer later still (a stalled actor) is old."""
    settings, metrics, clock, actor = env
    actor.on_EntryApproved(approved())
    actor.on_ChainFetched(m.ChainFetched(symbol="SPY", chain=CHAIN, spot=680.2))
    _answer(actor, clock, actor.connection.last(m.FetchQuotes), spread=1.0)  # wide
    second = actor.connection.last(m.FetchQuotes)
    assert len(second.contracts) == 4
    later = time.monotonic() + 9.5
    monkeypatch.setattr(time, "monotonic", lambda: later)
    _answer(actor, clock, second)
    assert actor.risk.of(m.SizeRequest) == []
    done = actor.risk.last(m.EntryFinished)
    assert not done.placed and done.reason.startswith("too_late: quotes took 9.5s over 2 asks")


def test_a_single_answer_past_the_bound_is_not_traded_on(env, monkeypatch):
    """One ask has the same bound as two: a target quote that came 20 s after the ask (a line
    that waited in a jammed message gate, a stalled actor) is a fine quote on an old signal."""
    settings, metrics, clock, actor = env
    actor.on_EntryApproved(approved())
    actor.on_ChainFetched(m.ChainFetched(symbol="SPY", chain=CHAIN, spot=680.2))
    first = actor.connection.last(m.FetchQuotes)
    later = time.monotonic() + 20.0
    monkeypatch.setattr(time, "monotonic", lambda: later)
    c = first.contracts[0]
    q = quote(m.OptionContract("SPY", c.expiry, c.strike, c.right, con_id=1680), 2.40, 2.46, clock)
    actor.on_QuotesFetched(m.QuotesFetched(quotes=(q,), missing=(), tag="SPY"))
    assert actor.risk.of(m.SizeRequest) == [], "traded on a 20 s-old signal"
    done = actor.risk.last(m.EntryFinished)
    assert not done.placed and done.reason.startswith("too_late: quotes took 20.0s over 1 ask,")

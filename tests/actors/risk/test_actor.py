"""RiskActor's decisions, by calling its handlers directly (no threads)."""

import math
from datetime import timedelta

import pytest
from support import SESSION_TIME, FakeRef

from actors import messages as m
from actors.hours import MarketHours
from actors.risk import RiskActor
from sim.clock import ManualClock
from storage import JournalRepo, TradingDayRepo
from strategies.risk import entry_gate
from strategies.signals import Direction, Signal

HOURS = MarketHours()


def idea(symbol="SPY", direction=Direction.CALL) -> m.TradeIdea:
    sig = Signal("scalp", symbol, direction, 0.7, ("ema8 > ema21",), SESSION_TIME, 680.0)
    return m.TradeIdea(signal=sig)


@pytest.fixture
def risk(make_settings, metrics):
    settings = make_settings()
    clock = ManualClock(SESSION_TIME)
    actor = RiskActor(settings, metrics, clock, HOURS)
    actor.on_start()
    actor.order_actor = FakeRef("orders")
    actor.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    yield actor
    actor.on_stop()


def test_a_healthy_idea_is_approved(risk, metrics):
    risk.on_TradeIdea(idea())
    approved = risk.order_actor.last(m.EntryApproved)
    assert approved.equity == 100_000.0
    # Stamped on the service's clock (the simulator's session here), not the wall clock.
    assert JournalRepo(risk.db).decisions()[-1].at.startswith(SESSION_TIME.date().isoformat())
    assert (
        metrics.registry.get_sample_value(
            "optionsbot_decisions_total",
            {"stage": "risk_gate", "outcome": "approved", "reason": "ok"},
        )
        == 1
    )


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        (lambda r: r.on_KillSwitch(m.KillSwitch(engaged=True)), "kill_switch"),
        (
            lambda r: r.on_ConnectionChanged(
                m.ConnectionChanged(state="degraded", may_trade=False, resync=False)
            ),
            "connection",
        ),
        (lambda r: r.clock.set(SESSION_TIME.replace(hour=22)), "market_closed"),
        (lambda r: r.clock.set(SESSION_TIME.replace(hour=14, minute=32)), "opening_window"),
        (lambda r: r.clock.set(SESSION_TIME.replace(hour=20, minute=50)), "closing_window"),
        (
            lambda r: r.on_SymbolStale(m.SymbolStale(symbol="SPY", stale=True, age_s=600)),
            "stale_data",
        ),
        (lambda r: r.in_flight.update({0: "SPY"}), "busy"),
        (lambda r: setattr(r, "open_positions", 3), "max_open_positions"),
    ],
)
def test_every_gate_skips_with_its_reason(risk, metrics, setup, code):
    setup(risk)
    risk.on_TradeIdea(idea())
    assert risk.order_actor.of(m.EntryApproved) == []
    decisions = JournalRepo(risk.db).decisions("SPY")
    assert decisions[-1].outcome == "skipped" and decisions[-1].reason.startswith(code)
    assert (
        metrics.registry.get_sample_value(
            "optionsbot_decisions_total",
            {"stage": "risk_gate", "outcome": "skipped", "reason": code},
        )
        == 1
    )


def test_sizing_counts_the_multiplier(risk):
    reply = FakeRef("orders")
    contract = m.OptionContract("SPY", "20261123", 680.0, "C", con_id=1, multiplier=100)
    # 1% of 100k = $1000 at risk; one contract risks 2.50 x 100 x 20% = $50 -> 20, capped at 10 contracts
    # and at $2000 premium / $250 = 8.
    risk.on_SizeRequest(m.SizeRequest(idea=idea(), contract=contract, premium=2.50, reply_to=reply))
    assert reply.last(m.SizeDecision).contracts == 8


def test_zero_contracts_is_a_skip_with_the_reason(risk):
    reply = FakeRef("orders")
    contract = m.OptionContract("SPY", "20261123", 680.0, "C", con_id=1, multiplier=100)
    risk.on_SizeRequest(m.SizeRequest(idea=idea(), contract=contract, premium=60.0, reply_to=reply))
    decision = reply.last(m.SizeDecision)
    assert decision.contracts == 0 and decision.reason


def test_daily_loss_guard_survives_a_restart_and_resets_next_day(make_settings, metrics):
    settings = make_settings()
    clock = ManualClock(SESSION_TIME)
    first = RiskActor(settings, metrics, clock, HOURS)
    first.on_start()
    first.on_PositionsChanged(
        m.PositionsChanged(
            open_positions=0,
            exposure_by_symbol=(),
            realized_today=-2500,
            unrealized=0,
            equity=97_500,
        )
    )
    first.on_stop()
    # Restart the same day: start-of-day equity is the stored 100k, not today's 97.5k.
    again = RiskActor(settings, metrics, clock, HOURS)
    again.order_actor = FakeRef()
    again.on_start()
    again.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    again.on_PositionsChanged(
        m.PositionsChanged(
            open_positions=0, exposure_by_symbol=(), realized_today=0, unrealized=0, equity=97_500
        )
    )
    assert again.start_equity == 100_000
    again.on_TradeIdea(idea())
    assert again.order_actor.of(m.EntryApproved) == []
    assert JournalRepo(again.db).decisions()[-1].reason.startswith("daily_loss")
    # The next trading day starts fresh from the equity it opens with.
    clock.advance(timedelta(days=3))  # Monday
    again.on_Tick(m.Tick(now=clock.now()))
    assert again.start_equity == 97_500
    again.on_TradeIdea(idea())
    assert again.order_actor.of(m.EntryApproved)
    again.on_stop()


def test_kill_file_engages_and_resume_releases(risk, make_settings):
    path = risk.settings.risk.kill_switch_file
    path.write_text('{"flatten": true}')
    risk.on_Tick(m.Tick(now=risk.clock.now()))
    assert risk.kill and risk.order_actor.of(m.Flatten)
    path.unlink()
    risk.on_Tick(m.Tick(now=risk.clock.now()))
    assert not risk.kill


def test_gate_order_kill_switch_first():
    reason = entry_gate(
        kill_switch=True,
        may_trade=False,
        connection_state="breaker_open",
        minutes_since_open=None,
        minutes_to_close=None,
        no_entry_first=5,
        no_entry_last=15,
        stale=True,
        loss_reason="daily_loss: x",
        busy=True,
    )
    assert reason.startswith("kill_switch")


def test_scalps_are_flattened_once_before_the_close(risk):
    close = HOURS.session_at(SESSION_TIME).close
    risk.clock.set(close - timedelta(minutes=30))
    risk.on_Tick(m.Tick(now=risk.clock.now()))
    assert risk.order_actor.of(m.Flatten) == []
    risk.clock.set(close - timedelta(minutes=9))
    risk.on_Tick(m.Tick(now=risk.clock.now()))
    risk.on_Tick(m.Tick(now=risk.clock.now()))
    flattens = risk.order_actor.of(m.Flatten)
    assert len(flattens) == 1 and flattens[0].strategy == "scalp"


def test_whales_are_held_by_default_and_flattened_only_when_configured(make_settings, metrics):
    close = HOURS.session_at(SESSION_TIME).close
    for whale_minutes, expected in ((0, ["scalp"]), (20, ["scalp", "whale"])):
        settings = make_settings(risk={"flatten_whales_before_close_minutes": whale_minutes})
        actor = RiskActor(settings, metrics, ManualClock(close - timedelta(minutes=5)), HOURS)
        actor.on_start()
        actor.order_actor = FakeRef("orders")
        try:
            actor.on_Tick(m.Tick(now=actor.clock.now()))
            actor.on_Tick(m.Tick(now=actor.clock.now()))
            assert [f.strategy for f in actor.order_actor.of(m.Flatten)] == expected
        finally:
            actor.on_stop()


def test_pdt_guard_counts_round_trips_from_stored_fills(make_settings, metrics):
    settings = make_settings(risk={"paper_equity": 20_000})
    clock = ManualClock(SESSION_TIME)
    actor = RiskActor(settings, metrics, clock, HOURS)
    actor.on_start()
    try:
        for i, side in enumerate(["BOT", "SLD"] * 3):  # three round trips today
            actor.db["fills"].insert(
                {
                    "exec_id": f"e{i}",
                    "order_ref": None,
                    "at": SESSION_TIME.isoformat(),
                    "side": side,
                    "quantity": 1,
                    "price": 1.0,
                    "con_id": i // 2,
                }
            )
        assert actor._day_trades() == 3
        reply = FakeRef()
        contract = m.OptionContract("SPY", "20261123", 680.0, "C", con_id=9, multiplier=100)
        actor.on_SizeRequest(
            m.SizeRequest(idea=idea(), contract=contract, premium=1.0, reply_to=reply)
        )
        decision = reply.last(m.SizeDecision)
        assert decision.contracts == 0 and decision.reason.startswith("pdt")
    finally:
        actor.on_stop()


# -- the entry flow: OrderActor owns an approved entry; the gate keeps only its correlation id --


def test_the_approval_carries_the_ideas_correlation_id(risk):
    sent = idea()
    risk.on_TradeIdea(sent)
    assert risk.order_actor.last(m.EntryApproved).corr == sent.corr
    assert risk.in_flight == {sent.corr: "SPY"}


def test_entry_finished_is_matched_by_correlation_id_not_by_symbol(risk):
    spy, qqq = idea("SPY"), idea("QQQ")
    risk.on_TradeIdea(spy)
    risk.on_TradeIdea(qqq)
    assert len(risk.order_actor.of(m.EntryApproved)) == 2
    # The reply names QQQ's approval: SPY's stays in flight, whatever the symbol field says.
    risk.on_EntryFinished(m.EntryFinished(symbol="SPY", placed=False, reason="x", corr=qqq.corr))
    assert risk.in_flight == {spy.corr: "SPY"}
    risk.on_TradeIdea(idea("SPY"))
    assert len(risk.order_actor.of(m.EntryApproved)) == 2  # SPY still busy
    risk.on_TradeIdea(idea("QQQ"))
    assert len(risk.order_actor.of(m.EntryApproved)) == 3  # QQQ free again


def test_a_finished_entry_frees_its_symbol_and_its_open_position_slot(risk):
    first = idea("SPY")
    risk.on_TradeIdea(first)
    risk.on_TradeIdea(idea("SPY"))
    assert len(risk.order_actor.of(m.EntryApproved)) == 1
    assert JournalRepo(risk.db).decisions("SPY")[-1].reason.startswith("busy")
    risk.on_EntryFinished(m.EntryFinished(symbol="SPY", placed=False, reason="x", corr=first.corr))
    assert risk.in_flight == {}
    risk.on_TradeIdea(idea("SPY"))
    assert len(risk.order_actor.of(m.EntryApproved)) == 2


def test_in_flight_approvals_count_toward_max_open_positions(risk):
    risk.open_positions = 1
    for symbol in ("SPY", "QQQ", "IWM"):
        risk.on_TradeIdea(idea(symbol))
    # max 3: one open + two in flight fill it.
    assert [a.idea.signal.symbol for a in risk.order_actor.of(m.EntryApproved)] == ["SPY", "QQQ"]
    assert (
        JournalRepo(risk.db)
        .decisions("IWM")[-1]
        .reason.startswith("max_open_positions: 1 open + 2 pending >= 3")
    )


def test_a_reply_without_the_approvals_id_still_frees_its_symbol(risk):
    """Transitional: an OrderActor that does not echo the correlation id yet (see on_EntryFinished)."""
    risk.on_TradeIdea(idea("SPY"))
    risk.on_EntryFinished(m.EntryFinished(symbol="SPY", placed=True))
    assert risk.in_flight == {}


def test_a_stray_reply_frees_nothing(risk):
    risk.on_TradeIdea(idea("SPY"))
    risk.on_EntryFinished(m.EntryFinished(symbol="QQQ", placed=False, reason="x"))
    assert list(risk.in_flight.values()) == ["SPY"]


def test_placed_entries_still_working_hold_their_open_position_slots(risk):
    """An approval leaves the in-flight set when OrderActor has placed its bracket, but the entry
    is still working at the broker and may fill: until it fills or dies it holds a slot, or a
    burst of ideas on several symbols places more brackets than max_open_positions (3) allows."""
    placed: list[str] = []
    for n, symbol in enumerate(("SPY", "QQQ", "IWM", "DIA"), start=1):
        risk.on_TradeIdea(idea(symbol))
        approvals = risk.order_actor.of(m.EntryApproved)
        if len(approvals) < n:
            break
        placed.append(symbol)
        # OrderActor's order of messages: the working entry's exposure first, then the finish.
        risk.on_PositionsChanged(
            m.PositionsChanged(
                open_positions=0,
                exposure_by_symbol=tuple((s, 972.0) for s in placed),
                realized_today=0.0,
                unrealized=0.0,
                equity=100_000.0,
                pending_entries=len(placed),
            )
        )
        risk.on_EntryFinished(m.EntryFinished(symbol=symbol, placed=True))
    assert placed == ["SPY", "QQQ", "IWM"]
    assert JournalRepo(risk.db).decisions("DIA")[-1].reason.startswith("max_open_positions")


def _account(equity: float, realized: float = 0.0) -> m.PositionsChanged:
    return m.PositionsChanged(
        open_positions=0,
        exposure_by_symbol=(),
        realized_today=realized,
        unrealized=0,
        equity=equity,
    )


def test_a_tripped_guard_stays_tripped_for_the_day_even_if_equity_comes_back(
    make_settings, metrics
):
    """A bounce after the loss is not a new day: the guard latches until the next session."""
    settings = make_settings()
    clock = ManualClock(SESSION_TIME)
    risk = RiskActor(settings, metrics, clock, HOURS)
    risk.order_actor = FakeRef()
    risk.on_start()
    risk.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    risk.on_PositionsChanged(_account(97_000, realized=-3_000))
    risk.on_TradeIdea(idea())
    risk.on_PositionsChanged(_account(100_500, realized=500))  # back above the start
    risk.on_TradeIdea(idea())
    assert risk.order_actor.of(m.EntryApproved) == []
    assert "tripped earlier today" in JournalRepo(risk.db).decisions()[-1].reason
    assert TradingDayRepo(risk.db).get(SESSION_TIME.date()).guard_tripped
    clock.advance(timedelta(days=3))  # Monday: a new day, a new start
    risk.on_Tick(m.Tick(now=clock.now()))
    risk.on_TradeIdea(idea())
    assert risk.order_actor.of(m.EntryApproved)
    risk.on_stop()


def test_an_unknown_equity_refuses_entries_but_does_not_trip_the_day(make_settings, metrics):
    """A slow account answer at start leaves equity unknown for a while: no entry on it, but
    once it is known and fine, entries flow; the day is not written off."""
    settings = make_settings()
    clock = ManualClock(SESSION_TIME)
    risk = RiskActor(settings, metrics, clock, HOURS)
    risk.order_actor = FakeRef()
    risk.on_start()
    risk.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    risk.on_PositionsChanged(_account(math.nan))
    risk.on_TradeIdea(idea())
    assert risk.order_actor.of(m.EntryApproved) == []
    assert "equity unknown" in JournalRepo(risk.db).decisions()[-1].reason
    assert not TradingDayRepo(risk.db).get(SESSION_TIME.date()).guard_tripped
    risk.on_PositionsChanged(_account(100_000))
    risk.on_TradeIdea(idea())
    assert risk.order_actor.of(m.EntryApproved)
    risk.on_stop()


def test_a_tripped_guard_survives_a_kill_and_a_bounce(make_settings, metrics):
    """SIGKILL after the trip (no on_stop), restart the same day with equity back above the
    line: the trip is in SQLite, so entries stay refused; a bounce plus a crash is not a new day."""
    settings = make_settings()
    clock = ManualClock(SESSION_TIME)
    first = RiskActor(settings, metrics, clock, HOURS)
    first.order_actor = FakeRef()
    first.on_start()
    first.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    first.on_PositionsChanged(_account(97_000, realized=-3_000))
    first.on_TradeIdea(idea())
    assert first.order_actor.of(m.EntryApproved) == []
    # killed here: no on_stop
    again = RiskActor(settings, metrics, clock, HOURS)
    again.order_actor = FakeRef()
    again.on_start()
    again.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    again.on_PositionsChanged(_account(101_000, realized=1_000))
    again.on_TradeIdea(idea())
    assert again.order_actor.of(m.EntryApproved) == []
    assert "tripped earlier today" in JournalRepo(again.db).decisions()[-1].reason
    again.on_stop()

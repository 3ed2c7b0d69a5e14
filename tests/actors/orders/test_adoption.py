"""The lost-database defence in OrderActor and RiskActor: refuse entries on a broker state the
database cannot vouch for, adopt it on the operator's word, seed the loss guard from reqPnL."""

import dataclasses
import math
import sqlite3

import pytest
from support import LIVE_OPT_IN, SESSION_TIME, SIM_ACCOUNT, FakeRef

from actors import messages as m
from actors.orders import OrderActor
from sim.clock import ManualClock
from storage import JournalRepo, OrderRepo, PositionRepo, TradingDayRepo, identity, open_db
from storage.rows import Order, Position
from strategies.risk import entry_gate

from .test_actor import approved

ACCOUNT = "DU7654321"


def held(con_id=5001, qty=2.0, avg_cost=243.0) -> m.BrokerPosition:
    return m.BrokerPosition(
        con_id=con_id,
        symbol="SPY",
        local_symbol=f"SPY   261123C00680000#{con_id}",
        expiry="20261123",
        strike=680.0,
        right="C",
        quantity=qty,
        avg_cost=avg_cost,
    )


def working(ref, perm, action="SELL", order_type="LMT", con_id=5001) -> m.BrokerWorkingOrder:
    return m.BrokerWorkingOrder(
        order_ref=ref,
        perm_id=perm,
        order_id=perm - 100,
        status="Submitted",
        con_id=con_id,
        symbol="SPY",
        local_symbol="SPY   261123C00680000",
        expiry="20261123",
        strike=680.0,
        right="C",
        sec_type="OPT",
        action=action,
        order_type=order_type,
        quantity=2.0,
        limit_price=2.55 if order_type == "LMT" else 0.0,
        aux_price=2.31 if order_type == "STP" else 0.0,
        oca_group="OCA-SPY-20261120103000-abcdef",
        parent_id=0,
    )


def state(
    *positions, orders=(), daily=-3_000.0, realized=-2_500.0, net_liq=97_000.0, account=ACCOUNT
):
    return m.BrokerState(
        statuses=(),
        executions=(),
        positions=tuple((p.con_id, p.quantity) for p in positions),
        holdings=tuple(positions),
        working=tuple(orders),
        pnl=m.BrokerPnL(daily=daily, unrealized=daily - realized, realized=realized),
        net_liquidation=net_liq,
        account=account,
    )


@pytest.fixture
def live(make_settings, metrics):
    settings = make_settings(
        dry_run=False, broker={"mode": "gateway", "account": SIM_ACCOUNT}, live=LIVE_OPT_IN
    )
    clock = ManualClock(SESSION_TIME)
    actor = OrderActor(settings, metrics, clock, FakeRef("connection"), FakeRef("risk"))
    actor.on_start()
    actor.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    yield settings, metrics, clock, actor
    actor.on_stop()


def test_an_empty_database_refuses_entries_until_adopt(live):
    settings, metrics, clock, actor = live
    bracket = "SPY-20261120103000-abcdef"
    exits = (working(f"{bracket}-TP", 801), working(f"{bracket}-SL", 802, order_type="STP"))
    manual = working("", 803, action="BUY", con_id=777)
    actor.on_BrokerState(state(held(), orders=(*exits, manual)))

    vouch = actor.risk.last(m.BrokerVouch)
    assert vouch.reason.startswith("unknown_broker_state: the broker holds 1 position and 3")
    assert metrics.registry.get_sample_value("optionsbot_unvouched_broker_state") == 4
    # The loss guard starts from the broker's start of day, not from an equity already down.
    assert vouch.start_equity == 100_000.0
    day = TradingDayRepo(actor.db).get(SESSION_TIME.date())
    assert (day.start_equity, day.realized_pnl) == (100_000.0, -2_500.0)
    # Refused at the order actor too (RiskActor's gate is the first line), and journaled once.
    actor.on_EntryApproved(approved())
    actor.on_EntryApproved(approved())
    assert actor.risk.last(m.EntryFinished).reason == vouch.reason
    assert actor.connection.of(m.FetchChain) == []
    actor.on_BrokerState(state(held(), orders=(*exits, manual)))
    blocked = [d for d in JournalRepo(actor.db).decisions("*") if d.outcome == "blocked"]
    assert [d.reason for d in blocked] == [vouch.reason]
    assert PositionRepo(actor.db).open() == []

    # `optionsbot adopt`: the request is noticed on a Tick and adopted from a fresh broker state.
    identity.request_adoption(actor.db)
    actor.connection.told.clear()
    actor.on_Tick(m.Tick(now=clock.now()))
    assert len(actor.connection.of(m.FetchBrokerState)) == 1
    actor.on_Tick(m.Tick(now=clock.now()))
    assert len(actor.connection.of(m.FetchBrokerState)) == 1, "asked once"
    actor.on_BrokerState(state(held(), orders=(*exits, manual), daily=-3_100.0, realized=-2_600.0))

    [pos] = PositionRepo(actor.db).open()
    assert (pos.con_id, pos.quantity, pos.avg_cost) == (5001, 2.0, 243.0)
    assert pos.bracket_ref == bracket and pos.strategy == "adopted"
    roles = {r.order_ref: (r.role, r.state) for r in OrderRepo(actor.db).open_orders()}
    assert roles == {
        f"{bracket}-TP": ("take_profit", "submitted"),
        f"{bracket}-SL": ("stop_loss", "submitted"),
    }
    assert identity.foreign_perm_ids(actor.db) == {803}
    assert identity.pending_adoption(actor.db) is None
    assert identity.adoption_result(actor.db).startswith("adopted 1 positions")
    assert actor.risk.last(m.BrokerVouch).reason == ""
    assert metrics.registry.get_sample_value("optionsbot_unvouched_broker_state") == 0
    day = TradingDayRepo(actor.db).get(SESSION_TIME.date())
    assert (day.start_equity, day.realized_pnl) == (100_100.0, -2_600.0)
    outcomes = [d.outcome for d in JournalRepo(actor.db).decisions("*")]
    assert outcomes == ["blocked", "adopted", "cleared"]
    # An adopted exit's fill is counted against the adopted position.
    actor.on_BrokerExecution(
        m.BrokerExecution(
            order_ref=f"{bracket}-TP",
            exec_id="0001.01",
            side="SLD",
            quantity=2.0,
            price=2.55,
            time=clock.now(),
            commission=1.3,
        )
    )
    assert PositionRepo(actor.db).open() == []
    # Entries are allowed again.
    actor.on_EntryApproved(approved())
    assert actor.connection.of(m.FetchChain)


def test_a_known_broker_state_is_vouched_for(live):
    settings, metrics, clock, actor = live
    actor.on_BrokerState(state(daily=0.0, realized=0.0, net_liq=100_000.0))
    assert actor.risk.last(m.BrokerVouch).reason == ""
    assert JournalRepo(actor.db).decisions("*") == []


def test_without_positions_the_guard_still_knows_the_days_loss(live):
    settings, metrics, clock, actor = live
    days = TradingDayRepo(actor.db)
    days.start_day(SESSION_TIME.date(), 97_000.0)  # started afresh after the loss
    actor.on_BrokerState(state())
    vouch = actor.risk.last(m.BrokerVouch)
    assert (vouch.reason, vouch.start_equity) == ("", 100_000.0)
    assert days.get(SESSION_TIME.date()).start_equity == 100_000.0


def test_another_accounts_database_refuses_entries_and_adoption(live):
    settings, metrics, clock, actor = live
    actor.on_BrokerState(state(daily=0.0))
    identity.request_adoption(actor.db)
    actor.on_BrokerState(state(held(), account="DU0000001", daily=0.0))
    assert actor.risk.last(m.BrokerVouch).reason.startswith("foreign_database")
    # Nothing acts on another account's rows: no exits for positions this account does not hold.
    assert not actor.reconciled
    assert identity.adoption_result(actor.db).startswith("refused: foreign_database")
    assert PositionRepo(actor.db).open() == []
    # The account id itself is never stored: only its salted hash.
    raw = sqlite3.connect(settings.storage.path).iterdump()
    assert not any(ACCOUNT in line or "DU0000001" in line for line in raw)


def test_a_dropped_table_is_recreated_and_the_database_marked_damaged(tmp_path):
    path = tmp_path / "bot.sqlite"
    open_db(path).close()
    raw = sqlite3.connect(path)
    raw.execute("drop table positions")
    raw.commit()
    raw.close()
    db = open_db(path)
    assert "positions" in db.table_names()
    assert identity.meta(db)["damaged"] == "tables recreated empty: positions"
    identity.clear_damaged(db)
    assert "damaged" not in identity.meta(db)
    PositionRepo(db).upsert(Position(con_id=1, symbol="SPY", quantity=1.0, avg_cost=1.0))


def test_the_risk_gate_refuses_an_unvouched_state_first_after_the_kill_switch():
    common = dict(
        may_trade=True,
        connection_state="connected",
        minutes_since_open=60,
        minutes_to_close=60,
        no_entry_first=5,
        no_entry_last=5,
        stale=False,
        loss_reason=None,
        busy=False,
    )
    assert entry_gate(kill_switch=False, **common) is None
    why = "unknown_broker_state: the broker holds 1 position this database does not know"
    assert entry_gate(kill_switch=False, unvouched=why, **common) == why
    assert entry_gate(kill_switch=True, unvouched=why, **common).startswith("kill_switch")
    assert math.isnan(m.BrokerVouch().start_equity)


def test_risk_refuses_while_unvouched_and_takes_the_brokers_start_equity(make_settings, metrics):
    from risk.test_actor import idea

    from actors.hours import MarketHours
    from actors.risk import RiskActor

    settings = make_settings(
        dry_run=False, broker={"mode": "gateway", "account": SIM_ACCOUNT}, live=LIVE_OPT_IN
    )
    risk = RiskActor(settings, metrics, ManualClock(SESSION_TIME), MarketHours())
    risk.on_start()
    try:
        risk.order_actor = FakeRef("orders")
        risk.on_ConnectionChanged(
            m.ConnectionChanged(state="connected", may_trade=True, resync=True)
        )
        risk.on_AccountValues(m.AccountValues(net_liquidation=97_000.0))
        assert risk.start_equity == 97_000.0  # what a lost database would start the day from
        why = "unknown_broker_state: the broker holds 1 position this database does not know"
        risk.on_BrokerVouch(m.BrokerVouch(reason=why, start_equity=100_000.0))
        assert risk.start_equity == 100_000.0
        risk.on_TradeIdea(idea())
        assert risk.order_actor.of(m.EntryApproved) == []
        [d] = JournalRepo(risk.db).decisions("SPY")
        assert d.reason == why
        # Adopted: entries flow again, and the guard measures from the broker's start: down 3%.
        risk.on_BrokerVouch(m.BrokerVouch(reason="", start_equity=100_000.0))
        risk.on_PositionsChanged(
            m.PositionsChanged(
                open_positions=1,
                exposure_by_symbol=(("QQQ", 486.0),),
                realized_today=-2_500.0,
                unrealized=-500.0,
                equity=97_000.0,
            )
        )
        risk.on_TradeIdea(idea())
        assert risk.order_actor.of(m.EntryApproved) == []
        assert JournalRepo(risk.db).decisions("SPY")[-1].reason.startswith("daily_loss")
    finally:
        risk.on_stop()


def test_a_rolled_back_database_is_caught_by_its_history_mark(live):
    """The -wal removed after a SIGKILL, with nothing left at the broker: the file is older
    than the mark beside it, which it cannot roll back with itself."""
    settings, metrics, clock, actor = live
    actor.on_BrokerState(state(daily=0.0, realized=0.0, net_liq=100_000.0))
    orders = OrderRepo(actor.db)
    for i in range(3):
        orders.insert(
            Order(
                order_ref=f"SPY-x-{i}", symbol="SPY", action="BUY", quantity=1.0, state="cancelled"
            )
        )
    actor.on_Tick(m.Tick(now=clock.now()))
    mark = identity.read_mark(settings.storage.path)
    assert mark["last_event_id"] == 3 and mark["fills"] == 0
    # What a lost -wal does: the last transactions vanish from the file.
    actor.db.execute("delete from order_events where id > 1")
    actor.db.conn.commit()
    actor.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    actor.on_BrokerState(state(daily=-3_000.0, realized=-3_000.0, net_liq=97_000.0))
    vouch = actor.risk.last(m.BrokerVouch)
    assert vouch.reason.startswith("rolled_back: the database lost 2 order events and 0 fills")
    assert metrics.registry.get_sample_value("optionsbot_unvouched_broker_state") == 1
    assert vouch.start_equity == 100_000.0
    actor.on_Tick(m.Tick(now=clock.now()))
    assert identity.read_mark(settings.storage.path) == mark, "the evidence is kept"
    identity.request_adoption(actor.db)
    actor.on_Tick(m.Tick(now=clock.now()))
    actor.on_BrokerState(state(daily=-3_000.0, realized=-3_000.0, net_liq=97_000.0))
    assert actor.risk.last(m.BrokerVouch).reason == ""
    assert identity.read_mark(settings.storage.path)["last_event_id"] == 1


def test_rolled_back_is_pure_and_ignores_another_databases_mark():
    now = {"db_id": "a", "last_event_id": 10, "fills": 4}
    assert identity.rolled_back(None, now) == ""
    assert identity.rolled_back({**now, "db_id": "b", "last_event_id": 99}, now) == ""
    assert identity.rolled_back(now, now) == ""
    assert identity.rolled_back({**now, "fills": 5}, now).startswith(
        "rolled_back: the database lost 0 order events and 1 fills"
    )


def test_the_adopt_command_records_the_request_for_the_service(make_settings, tmp_path, capsys):
    from actors.cli import main

    settings = make_settings(
        dry_run=False, broker={"mode": "gateway", "account": SIM_ACCOUNT}, live=LIVE_OPT_IN
    )
    config = str(tmp_path / "settings.yaml")
    assert main(["adopt", "--config", config, "--wait", "0"]) == 0
    assert "no running service answered" in capsys.readouterr().out
    db = open_db(settings.storage.path)
    request = identity.pending_adoption(db)
    assert request is not None and request.at
    make_settings()  # dry-run: nothing at a broker to adopt
    assert main(["adopt", "--config", config]) == 0
    assert "nothing to adopt" in capsys.readouterr().out


def test_an_adopted_position_keeps_its_contracts_multiplier(live):
    """IB's position message carries the contract's multiplier (ib_async decoder.position). An
    adopted mini option (10 shares a contract) read as a standard 100 would price its protection
    from a premium ten times too small (a stop that never triggers) and ask IB for a contract
    that is not the one held."""
    settings, metrics, clock, actor = live
    mini = dataclasses.replace(held(qty=2.0, avg_cost=24.3), multiplier=10.0)
    buy = dataclasses.replace(
        working("SPY-20261120103000-abcdef-E", 811, action="BUY", con_id=5002), multiplier=10.0
    )
    actor.on_BrokerState(state(mini, orders=(buy,)))
    identity.request_adoption(actor.db)
    actor.on_Tick(m.Tick(now=clock.now()))
    actor.on_BrokerState(state(mini, orders=(buy,)))
    [pos] = PositionRepo(actor.db).open()
    assert pos.multiplier == 10.0
    assert OrderRepo(actor.db).get(buy.order_ref).multiplier == 10.0
    assert actor.connection.last(m.WatchQuotes).contract.multiplier == 10
    placed = actor.connection.last(m.PlaceBracket)
    assert placed.contract.multiplier == 10
    assert [(leg.order_type, leg.limit_price or leg.aux_price) for leg in placed.legs] == [
        ("LMT", 3.16),
        ("STP", 1.94),
    ]

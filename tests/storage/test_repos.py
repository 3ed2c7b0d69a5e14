"""The non-order repositories on a real SQLite file: typed rows in and out."""

import dataclasses
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import (
    FillRepo,
    JournalRepo,
    KeyValueRepo,
    OrderRepo,
    PositionRepo,
    TradingDayRepo,
    WhaleRepo,
)
from storage.rows import Decision, Fill, KeyValue, SignalRow, TradingDay, WhaleDebounce

DAY = date(2026, 11, 23)


def test_a_day_starts_once_and_keeps_its_first_equity(db):
    days = TradingDayRepo(db)
    assert days.get(DAY) is None
    first = days.start_day(DAY, 100_000.0)
    assert isinstance(first, TradingDay)
    assert (first.trading_date, first.start_equity, first.realized_pnl, first.guard_tripped) == (
        DAY,
        100_000.0,
        0.0,
        False,
    )
    again = days.start_day(DAY, 97_000.0)  # a restart later that day
    assert again.start_equity == 100_000.0


def test_realized_pnl_adds_up_and_the_guard_trips(db):
    days = TradingDayRepo(db)
    days.start_day(DAY, 100_000.0)
    days.add_realized(DAY, -120.5)
    days.add_realized(DAY, 20.5)
    days.trip_guard(DAY)
    row = days.get(DAY)
    assert row.realized_pnl == pytest.approx(-100.0) and row.guard_tripped is True


def test_seed_overrides_the_start_equity_with_the_brokers(db):
    days = TradingDayRepo(db)
    days.start_day(DAY, 90_000.0)
    seeded = days.seed(DAY, 100_000.0, realized=-250.0)
    assert (seeded.start_equity, seeded.realized_pnl) == (100_000.0, -250.0)
    assert days.seed(DAY, 101_000.0).realized_pnl == -250.0  # None keeps the realized P&L


def test_recent_days_newest_first(db):
    days = TradingDayRepo(db)
    for k in range(5):
        days.start_day(DAY + timedelta(days=k), 1000.0 + k)
    assert [d.trading_date for d in days.recent(3)] == [DAY + timedelta(days=k) for k in (4, 3, 2)]


def test_journal_rows_come_back_typed(db):
    journal = JournalRepo(db)
    t = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    journal.signal(
        symbol="SPY",
        strategy="scalp",
        direction=None,
        confidence=0.0,
        price=680.0,
        reasons=["warming up", "rsi 50"],
        bar_time=t,
        at=t,
    )
    journal.decision(
        symbol="SPY", stage="risk_gate", outcome="skipped", reason="busy", detail={"n": 1}, at=t
    )
    [sig] = journal.signals("SPY")
    assert isinstance(sig, SignalRow)
    assert (sig.direction, sig.reasons, sig.bar_time) == (
        "hold",
        ("warming up", "rsi 50"),
        "2026-11-23T15:00:00.000+00:00",
    )
    [d] = journal.decisions("SPY")
    assert isinstance(d, Decision) and d.id == 1
    assert (d.stage, d.outcome, d.reason, d.facts()) == ("risk_gate", "skipped", "busy", {"n": 1})
    assert journal.decisions("QQQ") == [] and journal.decisions() == [d]


def test_the_journal_never_stores_an_account_id(db):
    journal = JournalRepo(db)
    journal.decision(
        symbol="SPY", stage="order", outcome="skipped", reason="account DU1234567 refused"
    )
    assert "DU1234567" not in journal.decisions()[0].reason


def test_whale_debounce_round_trips_a_utc_time(db):
    repo = WhaleRepo(db)
    assert repo.get("SPY") is None and repo.last_fired("SPY") is None
    t = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
    repo.fired("SPY", t)
    repo.fired("SPY", t + timedelta(days=4))  # a later live fire replaces it
    assert repo.get("SPY") == WhaleDebounce("SPY", t + timedelta(days=4))
    assert repo.last_fired("SPY") == t + timedelta(days=4)


def test_key_values(db):
    kv = KeyValueRepo(db)
    assert kv.get("clock") is None and kv.get("clock", "x") == "x" and kv.row("clock") is None
    kv.set("clock", "2026-11-23T15:00:00+00:00")
    kv.set("clock", "2026-11-23T16:00:00+00:00")
    row = kv.row("clock")
    assert isinstance(row, KeyValue) and row.value == kv.get("clock") == "2026-11-23T16:00:00+00:00"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    offsets=st.lists(st.integers(-3 * 24 * 60, 3 * 24 * 60), max_size=12),
    since_days=st.integers(-2, 2),
)
def test_fills_since_returns_exactly_those_at_or_after_the_day(db, offsets, since_days):
    """The pattern-day-trader count reads fills by their stored UTC text: the cut must hold."""
    db.execute("delete from fills")
    base = datetime(2026, 11, 23, tzinfo=UTC)
    orders = OrderRepo(db)
    for i, minutes in enumerate(offsets):
        orders.add_fill(
            Fill(
                exec_id=f"e{i}",
                at=(base + timedelta(minutes=minutes)).isoformat(),
                side="BOT",
                quantity=1,
                price=1.0,
                con_id=i,
            )
        )
    since = DAY + timedelta(days=since_days)
    got = FillRepo(db).since(since)
    assert all(isinstance(f, Fill) for f in got)
    cut = datetime(since.year, since.month, since.day, tzinfo=UTC)
    want = {i for i, m in enumerate(offsets) if base + timedelta(minutes=m) >= cut}
    assert {f.con_id for f in got} == want


def test_recent_days_on_a_file_that_lost_the_table_raises_rather_than_reads_empty(db):
    """`optionsbot status` turns this into its one-line error; an empty answer would hide it."""
    import sqlite3

    db.execute("drop table trading_days")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        TradingDayRepo(db).recent(3)


@pytest.mark.parametrize(
    ("table", "read"),
    [
        ("positions", lambda db: PositionRepo(db).open()),
        ("positions", lambda db: PositionRepo(db).all()),
        ("orders", lambda db: OrderRepo(db).open_orders()),
        ("orders", lambda db: OrderRepo(db).by_bracket("B1")),
    ],
)
def test_holdings_on_a_file_that_lost_the_table_raise_rather_than_read_as_nothing(db, table, read):
    """sqlite-utils' rows_where reads a missing table as no rows: "nothing held, nothing working"
    is the one answer that must never come from a damaged file."""
    import sqlite3

    db.execute(f"drop table {table}")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        read(db)


def test_recorded_option_quotes_come_back_in_the_order_received(tmp_path):
    from storage import QuoteRepo, open_db
    from storage.repos import recorded_option_quotes
    from storage.rows import OptionQuoteRow

    path = tmp_path / "bot.sqlite"
    db = open_db(path)
    rows = [
        OptionQuoteRow(
            received_at=f"2026-11-18T15:00:0{i}.000+00:00",
            symbol="SPY",
            expiry="20261120",
            strike=600.0 + i,
            right="C" if i % 2 else "P",
            con_id=1_000_000_000 + i,
            bid=1.0 + i,
            ask=1.1 + i,
            last=None,
            volume=None,
            quote_time="2026-11-18T15:00:00.000+00:00",
            age_known=1,
        )
        for i in (2, 0, 1)
    ]
    assert QuoteRepo(db).record_many(rows) == 3 and QuoteRepo(db).record_many([]) == 0
    db.close()
    back = recorded_option_quotes(path)
    assert [r.strike for r in back] == [600.0, 601.0, 602.0]
    assert [dataclasses.replace(r, id=None) for r in back] == sorted(
        rows, key=lambda r: r.received_at
    )
    # A database from before the table existed reads as no quotes, not an error.
    import sqlite3

    old = tmp_path / "old.sqlite"
    sqlite3.connect(old).execute("create table bars (symbol text)").connection.close()
    assert recorded_option_quotes(old) == []

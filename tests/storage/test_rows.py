"""One definition of each row: the dataclasses of storage/rows.py against the migrated tables."""

import dataclasses
import types
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import OrderRepo, PositionRepo, open_db
from storage.db import ensure_option_quotes
from storage.rows import (
    ROWS,
    STANDARD_MULTIPLIER,
    Fill,
    OptionQuoteRow,
    Order,
    OrderEvent,
    Position,
    multiplier,
)

SQL_TYPE = {str: "TEXT", int: "INTEGER", float: "REAL"}
TABLES = {
    "orders": Order,
    "order_events": OrderEvent,
    "fills": Fill,
    "positions": Position,
    "option_quotes": OptionQuoteRow,
}


def sql_type(annotation) -> str:
    """The SQLite type sqlite-utils creates for a field's Python type (None stripped)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if isinstance(annotation, types.UnionType) else annotation
    return SQL_TYPE[base]


@pytest.mark.parametrize("table", sorted(TABLES))
def test_each_row_is_the_migrated_table_column_for_column(tmp_path, table):
    db = open_db(tmp_path / "bot.sqlite")
    ensure_option_quotes(db)  # the optional table, as the quote recorder creates it
    hints = typing.get_type_hints(TABLES[table])
    ours = [(f.name, sql_type(hints[f.name])) for f in dataclasses.fields(TABLES[table])]
    theirs = [(c.name, c.type) for c in db[table].columns]
    assert ours == theirs
    db.close()


def test_order_rows_are_typed_frozen_and_slotted():
    for cls in TABLES.values():
        assert dataclasses.is_dataclass(cls) and "__slots__" in cls.__dict__
        with pytest.raises(dataclasses.FrozenInstanceError):
            field = {OrderEvent: "at", Fill: "at", OptionQuoteRow: "bid"}.get(cls, "con_id")
            cls.__new__(cls).__setattr__(field, 1)


def test_a_row_without_the_multiplier_reads_as_a_standard_contract():
    assert multiplier(Position(con_id=1)) == STANDARD_MULTIPLIER
    assert multiplier(Position(con_id=1, multiplier=10.0)) == 10.0


orders = st.builds(
    Order,
    order_ref=st.from_regex(r"[A-Z]{1,4}-[0-9]{14}-[0-9a-f]{6}-(E|TP|SL)", fullmatch=True),
    symbol=st.sampled_from(["SPY", "QQQ", "IWM"]),
    action=st.sampled_from(["BUY", "SELL"]),
    quantity=st.integers(1, 50).map(float),
    strike=st.none() | st.floats(1, 1000, allow_nan=False),
    limit_price=st.none() | st.floats(0.01, 500, allow_nan=False),
    oca_group=st.none() | st.text(max_size=12),
    multiplier=st.none() | st.sampled_from([10.0, 100.0]),
    con_id=st.none() | st.integers(1, 2**31 - 1),
    created_at=st.just("2026-11-20T15:00:00.000+00:00"),
)


@given(order=orders)
def test_an_order_comes_back_as_it_went_in(tmp_path_factory, order):
    db = open_db(tmp_path_factory.mktemp("rows") / "bot.sqlite")
    repo = OrderRepo(db)
    repo.insert(order)
    back = repo.get(order.order_ref)
    assert back is not None
    assert dataclasses.replace(back, updated_at=None) == dataclasses.replace(order, updated_at=None)
    assert repo.open_orders() == [back] and repo.by_bracket("nothing") == []
    [event] = repo.events(order.order_ref)
    assert (event.event, event.dest) == ("created", "new")
    db.close()


def test_positions_and_fills_round_trip(tmp_path):
    db = open_db(tmp_path / "bot.sqlite")
    repo, positions = OrderRepo(db), PositionRepo(db)
    repo.insert(Order(order_ref="SPY-1-E", symbol="SPY", action="BUY", quantity=2.0, con_id=7))
    fill = Fill(exec_id="0001.a.01.01", order_ref="SPY-1-E", side="BOT", quantity=2.0, price=1.5)
    assert repo.add_fill(fill) and not repo.add_fill(fill)
    assert repo.fill(fill.exec_id) == fill and repo.fill("nope") is None
    assert repo.set_commission(fill.exec_id, 1.3) == pytest.approx(1.3)
    assert repo.fills() == [dataclasses.replace(fill, commission=1.3)]
    assert repo.fill_with_base("0001.a.01.02") == dataclasses.replace(fill, commission=1.3)
    pos = Position(con_id=7, symbol="SPY", quantity=2.0, avg_cost=150.0, multiplier=100.0)
    positions.upsert(pos)
    assert dataclasses.replace(positions.get(7), updated_at=None) == pos
    assert [p.con_id for p in positions.open()] == [7] and positions.get(8) is None
    positions.upsert(dataclasses.replace(pos, quantity=0.0))
    assert positions.open() == [] and len(positions.all()) == 1
    db.close()


@pytest.mark.parametrize("table", sorted(ROWS))
def test_each_row_class_has_exactly_its_tables_columns_in_order(db, table):
    fields = [f.name for f in dataclasses.fields(ROWS[table])]
    assert fields == [c.name for c in db[table].columns], table


def test_every_table_has_its_row_class(db):
    """A new table (or one dropped) must come with its row, or say why it has none."""
    # machine_states: (state, data) pairs; bars: written in bulk by the recorder, read as frames.
    without_rows = {"machine_states", "bars"}
    tables = {t for t in db.table_names() if not t.startswith("_")}
    assert tables - without_rows == set(ROWS)


def test_rows_are_slotted_and_frozen():
    for cls in ROWS.values():
        # A row is a value, not a handle on the table: no field set after the read.
        assert "__slots__" in cls.__dict__ and cls.__dataclass_params__.frozen, cls

"""One definition of each row: the dataclasses of storage/rows.py against the migrated tables."""

import dataclasses

import pytest

from storage.rows import ROWS, AdoptionRequest, Decision, TradingDay


@pytest.mark.parametrize("table", sorted(ROWS))
def test_each_row_class_has_exactly_its_tables_columns_in_order(db, table):
    fields = [f.name for f in dataclasses.fields(ROWS[table])]
    assert fields == [c.name for c in db[table].columns], table


def test_every_non_order_table_has_its_row_class(db):
    """A new table (or one dropped) must come with its row, or say it belongs to OrderRepo."""
    order_side = {"orders", "order_events", "fills", "positions", "machine_states", "bars"}
    tables = {t for t in db.table_names() if not t.startswith("_")}
    assert tables - order_side == set(ROWS)


def test_rows_are_slotted_and_frozen():
    for cls in ROWS.values():
        # A row is a value, not a handle on the table: no field set after the read.
        assert "__slots__" in cls.__dict__ and cls.__dataclass_params__.frozen, cls


def test_transitional_key_access_mirrors_the_attributes():
    day = TradingDay.from_row(
        {
            "trading_date": "2026-11-23",
            "start_equity": 100_000,
            "realized_pnl": None,
            "guard_tripped": 0,
            "updated_at": "t",
        }
    )
    assert day["start_equity"] == day.start_equity == 100_000.0
    assert day.get("realized_pnl") == 0.0 and day.get("nope", 7) == 7
    with pytest.raises(KeyError):
        day["nope"]
    assert set(AdoptionRequest(at="t")) == {"at"}
    decision = Decision(1, "t", "SPY", "risk_gate", "skipped", "busy", '{"a": 1}')
    assert decision["reason"] == "busy" and decision.facts() == {"a": 1}

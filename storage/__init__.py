"""SQLite persistence through sqlite-utils: schema, migrations and one repository per concern."""

from storage.db import open_db
from storage.repos import (
    BarRepo,
    JournalRepo,
    KeyValueRepo,
    MachineStateRepo,
    OrderRepo,
    PositionRepo,
    TradingDayRepo,
    WhaleRepo,
)

__all__ = [
    "BarRepo",
    "JournalRepo",
    "KeyValueRepo",
    "MachineStateRepo",
    "OrderRepo",
    "PositionRepo",
    "TradingDayRepo",
    "WhaleRepo",
    "open_db",
]

"""SQLite persistence through sqlite-utils: schema, migrations and one repository per concern."""

from storage import _lean  # noqa: F401, I001 - first: sqlite-utils without pandas
from storage.db import open_db
from storage.repos import (
    BarRepo,
    FillRepo,
    JournalRepo,
    KeyValueRepo,
    MachineStateRepo,
    OrderRepo,
    PositionRepo,
    QuoteRepo,
    TradingDayRepo,
    WhaleRepo,
)

__all__ = [
    "BarRepo",
    "FillRepo",
    "JournalRepo",
    "KeyValueRepo",
    "MachineStateRepo",
    "OrderRepo",
    "PositionRepo",
    "QuoteRepo",
    "TradingDayRepo",
    "WhaleRepo",
    "open_db",
]

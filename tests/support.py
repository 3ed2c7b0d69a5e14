"""Test helpers shared across directories (a module of its own: `conftest` is ambiguous, since
tests/wire has one too, and whichever is imported first takes the name)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# Friday 2026-11-20, 10:30 New York: an ordinary session, an hour after the open.
SESSION_TIME = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


class FakeRef:
    """Records what an actor tells it: enough to assert on messages without threads."""

    def __init__(self, name: str = "fake"):
        self.name = name
        self.told: list[Any] = []

    def tell(self, msg: Any) -> None:
        self.told.append(msg)

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.told if isinstance(m, kind)]

    def last(self, kind: type) -> Any:
        found = self.of(kind)
        assert found, (
            f"{self.name} was told no {kind.__name__}; got {[type(m).__name__ for m in self.told]}"
        )
        return found[-1]


# The opt-in a live configuration against a Gateway needs (configs/settings.py, live.*), and the
# simulator's own account (sim/config.py): the simulator refuses orders for any other.
LIVE_OPT_IN = {"enabled": True, "confirm": "I accept real orders"}
SIM_ACCOUNT = "DU123456"

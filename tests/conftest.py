"""Shared fixtures: settings on a temporary database, a manual clock, fake actor refs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from actors.metrics import Metrics, new_registry
from configs.settings import Settings, load_settings

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


@pytest.fixture
def make_settings(tmp_path):
    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "storage": {"path": str(tmp_path / "bot.sqlite")},
            "risk": {"kill_switch_file": str(tmp_path / "KILL")},
            "log": {"json_file": None},
            "metrics": {"port": 0},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        path = tmp_path / "settings.yaml"
        import yaml

        path.write_text(yaml.safe_dump(base))
        return load_settings(path, environ={})

    return make


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(new_registry(process=False))

"""Shared fixtures: settings on a temporary database, a metrics registry (helpers: support.py)."""

from __future__ import annotations

from typing import Any

import pytest

from actors.metrics import Metrics, new_registry
from configs.settings import Settings, load_settings


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

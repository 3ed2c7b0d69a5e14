"""Shared fixtures: settings on a temporary database, a metrics registry (helpers: support.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from actors.metrics import Metrics, new_registry
from configs.settings import Settings, load_settings

# Hypothesis' timing checks measure the machine, not the code: on a shared 2-core box a SQLite
# file per example can take longer than the default 200 ms deadline. Speed is shown by bench/.
settings.register_profile(
    "shared_machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared_machine")


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

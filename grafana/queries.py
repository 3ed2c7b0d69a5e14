"""Every dashboard panel's PromQL, with Grafana's variables filled in, for tests to run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parent / "dashboards"

# What Grafana would put in: every symbol ("All" is `.*` on the symbol variable), and
# the 1m a 5s scrape interval makes of $__rate_interval (at least four scrapes).
SUBSTITUTIONS = {"$symbol": ".*", "$__rate_interval": "1m"}


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Panels in order, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def fill(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    return expr


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard file name, panel title, expr) for every target of every panel."""
    found: list[tuple[str, str, str]] = []
    for path in dashboard_files():
        dashboard = json.loads(path.read_text())
        for panel in iter_panels(dashboard.get("panels") or []):
            for target in panel.get("targets") or []:
                if target.get("expr") and not target.get("hide"):
                    found.append((path.name, panel["title"], fill(target["expr"])))
    return found


if __name__ == "__main__":
    for name, title, expr in panel_queries():
        print(f"{name}\t{title}\t{' '.join(expr.split())}")

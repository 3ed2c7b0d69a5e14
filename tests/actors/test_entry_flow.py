"""The README's entry-flow diagram against the code: every arrow between two actors names a
message that exists, that the sender's modules build, and that the receiver handles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from actors import messages as m

ROOT = Path(__file__).resolve().parents[2]
# participant -> (the modules that may send for it, the module holding its handlers)
ACTORS = {
    "C": (sorted((ROOT / "actors/connection").glob("*.py")), ROOT / "actors/connection/actor.py"),
    "D": ([ROOT / "actors/data.py"], ROOT / "actors/data.py"),
    "S": ([ROOT / "actors/strategy.py"], ROOT / "actors/strategy.py"),
    "R": ([ROOT / "actors/risk.py"], ROOT / "actors/risk.py"),
    "O": (sorted((ROOT / "actors/orders").glob("*.py")), ROOT / "actors/orders/actor.py"),
}


def arrows() -> list[tuple[str, str, str]]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- BEGIN entry flow -->", 1)[1].split("<!-- END entry flow -->", 1)[0]
    found = re.findall(r"^\s*(\w+)->>(\w+): (\w+)\s*$", block, re.MULTILINE)
    return [(a, b, msg) for a, b, msg in found if a in ACTORS and b in ACTORS]


def test_the_diagram_has_the_whole_entry():
    names = [msg for _, _, msg in arrows()]
    for step in ("BarClosed", "TradeIdea", "EntryApproved", "PlaceBracket", "BrokerExecution"):
        assert step in names


@pytest.mark.parametrize(("sender", "receiver", "name"), arrows())
def test_each_arrow_is_in_the_code(sender, receiver, name):
    assert isinstance(getattr(m, name, None), type), f"no message {name} in actors/messages.py"
    sources, handlers = ACTORS[sender][0], ACTORS[receiver][1]
    assert any(f"m.{name}(" in p.read_text() for p in sources), f"{sender} never builds {name}"
    assert f"def on_{name}(" in handlers.read_text(), f"{receiver} has no on_{name}"

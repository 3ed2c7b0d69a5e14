"""The parts of SimServer: each module owns the state its class declares, and only it changes it.

Read by the source (ast), so a part that assigns or mutates another part's private state fails
here, not in some wire test three modules away.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sim.server
from sim.server import SimServer
from sim.server.core import ServerCore

PACKAGE = Path(sim.server.__file__).parent
PARTS = sorted(
    p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "core", "sessions")
)
MUTATORS = {"append", "extend", "insert", "remove", "pop", "popitem", "clear", "add", "discard"}
MUTATORS |= {"update", "setdefault"}


def _declared(tree: ast.Module) -> set[str]:
    """The attributes the module's class declares (class-level annotations)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.endswith(("Mixin", "Server")):
            names |= {
                n.target.id
                for n in node.body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
            }
    return names


def _self_attr(node: ast.AST) -> str | None:
    """`x` for self.x, self.x[...] (as a target), else None."""
    if isinstance(node, ast.Subscript):
        node = node.value
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    ):
        return node.attr
    return None


def _changed(tree: ast.Module) -> set[str]:
    """The private self attributes the module assigns or mutates in place."""
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in MUTATORS
        ):
            targets = [node.func.value]
        for t in targets:
            for elt in t.elts if isinstance(t, ast.Tuple) else [t]:
                name = _self_attr(elt)
                if name is not None and name.startswith("_"):
                    out.add(name)
    return out


@pytest.mark.parametrize("part", PARTS)
def test_a_part_changes_only_the_state_it_declares(part: str) -> None:
    tree = ast.parse((PACKAGE / f"{part}.py").read_text())
    foreign = _changed(tree) - _declared(tree)
    assert not foreign, f"sim/server/{part}.py changes another part's state: {sorted(foreign)}"


def test_no_two_parts_declare_the_same_state() -> None:
    owners: dict[str, list[str]] = {}
    for part in [*PARTS, "core"]:
        for name in _declared(ast.parse((PACKAGE / f"{part}.py").read_text())):
            owners.setdefault(name, []).append(part)
    assert {n: o for n, o in owners.items() if len(o) > 1} == {}


def test_each_part_sets_up_all_it_declares(server: SimServer) -> None:
    """Declared state exists once SimServer is built: an _init_ that forgets one fails here."""
    for part in [*PARTS, "core"]:
        for name in _declared(ast.parse((PACKAGE / f"{part}.py").read_text())):
            assert hasattr(server, name), f"{part}: {name} is declared but never set"


def test_the_server_is_made_of_the_parts() -> None:
    bases = {b.__module__.rsplit(".", 1)[-1] for b in SimServer.__mro__[1:]} - {"builtins"}
    assert bases == {*PARTS, "core"} - {"gateway"}
    assert issubclass(SimServer, ServerCore)

"""Mermaid diagrams of the machines, generated from their tables, kept in the README."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from transitions.extensions import GraphMachine

from machines.connection import ConnectionModel, ConnState, connection_machine
from machines.order import OrderModel, OrderState, order_machine

BEGIN = "<!-- BEGIN {name} diagram (python -m machines.diagram --write README.md) -->"
END = "<!-- END {name} diagram -->"


def mermaid(name: str) -> str:
    """The Mermaid source for the named machine ("connection" or "order")."""
    extra = {
        "machine_cls": GraphMachine,
        "graph_engine": "mermaid",
        "show_conditions": True,
        "title": f"{name} machine",
    }
    if name == "connection":
        m = connection_machine(ConnectionModel(), ConnState.DISCONNECTED, **extra)
    elif name == "order":
        m = order_machine(OrderModel(order_ref="diagram"), OrderState.NEW, **extra)
    else:
        raise ValueError(f"unknown machine {name!r}: use 'connection' or 'order'")
    source = m.get_graph().draw(None)
    # Drop the styling lines that mark the current state: a document has no current state.
    lines = [
        ln
        for ln in source.splitlines()
        if not ln.strip().lower().startswith(("classdef", "class "))
    ]
    return "\n".join(lines).strip() + "\n"


def block(name: str) -> str:
    return f"{BEGIN.format(name=name)}\n```mermaid\n{mermaid(name)}```\n{END.format(name=name)}"


def rewrite(text: str) -> str:
    for name in ("connection", "order"):
        pattern = re.compile(
            re.escape(BEGIN.format(name=name)) + r".*?" + re.escape(END.format(name=name)),
            re.S,
        )
        if not pattern.search(text):
            raise ValueError(f"README has no markers for the {name} diagram")
        text = pattern.sub(lambda _m, n=name: block(n), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="rewrite the diagrams inside this Markdown file")
    args = parser.parse_args(argv)
    if args.write:
        args.write.write_text(rewrite(args.write.read_text()))
        return 0
    for name in ("connection", "order"):
        sys.stdout.write(block(name) + "\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

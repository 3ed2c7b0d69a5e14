"""Shared construction of table-driven, side-effect-free `transitions` machines."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any

from transitions import Machine

# A row of a transition table: (trigger, sources, dest[, conditions]).
Row = tuple[Any, ...]


def expand(table: Sequence[Row]) -> list[dict[str, Any]]:
    """Turn compact table rows into the dicts `transitions` takes."""
    out: list[dict[str, Any]] = []
    for row in table:
        trigger, sources, dest = row[0], row[1], row[2]
        item: dict[str, Any] = {
            "trigger": trigger,
            "source": [s.value for s in sources]
            if isinstance(sources, list | tuple)
            else sources.value,
            "dest": dest.value,
        }
        if len(row) > 3 and row[3]:
            item["conditions"] = row[3]
        out.append(item)
    return out


def build(
    model: Any,
    states: type[Enum],
    table: Sequence[Row],
    initial: Enum,
    *,
    name: str,
    machine_cls: type[Machine] = Machine,
    **extra: Any,
) -> Machine:
    """A strict machine: unknown (state, trigger) pairs raise `MachineError`.

    `auto_transitions=False` makes the table the whole contract; `queued=True` keeps a
    trigger fired from a callback from re-entering the machine mid-transition.
    Restoring a saved state uses `initial`, so no on_enter callback fires on restore.
    Callbacks get an `EventData` (`send_event=True`), so keyword arguments such as
    `cause=` reach the model's callbacks in one uniform way.
    """
    return machine_cls(
        model=model,
        states=[s.value for s in states],
        transitions=expand(table),
        initial=initial.value,
        auto_transitions=False,
        queued=True,
        ignore_invalid_triggers=False,
        send_event=True,
        name=name,
        **extra,
    )


def triggers(table: Iterable[Row]) -> list[str]:
    """Every trigger named in a table, in first-seen order."""
    seen: dict[str, None] = {}
    for row in table:
        seen.setdefault(row[0], None)
    return list(seen)


def allowed_pairs(table: Iterable[Row]) -> set[tuple[str, str]]:
    """The (state, trigger) pairs a table accepts (conditions aside)."""
    pairs: set[tuple[str, str]] = set()
    for row in table:
        sources = row[1] if isinstance(row[1], list | tuple) else [row[1]]
        for s in sources:
            pairs.add((s.value, row[0]))
    return pairs


def destinations(table: Iterable[Row], state: str, trigger: str) -> set[str]:
    """Where a (state, trigger) pair can lead, whatever its conditions."""
    out: set[str] = set()
    for row in table:
        sources = row[1] if isinstance(row[1], list | tuple) else [row[1]]
        if row[0] == trigger and state in [s.value for s in sources]:
            out.add(row[2].value)
    return out

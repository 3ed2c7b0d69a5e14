"""The protection invariant: every position held is covered by working exits for its quantity.

Pure: given what is held and which exit orders are working, say what is uncovered (and what is
over-covered) per contract and what to do about it. OrderActor calls it after every execution,
every reconciliation and on every Tick, and carries the intents out.

What covers a position is its *stop side*: working stop-loss orders and market exits. A
take-profit alone is not protection (it never fires on the way down). Orders of one OCA group
(ocaType 2) cancel each other when one fills, and shrink each other when one fills in part, so a
group covers its largest member, never the sum:
a bracket's stop and a flatten's market exit in the same group cover the position once.

A child of an entry that is still working (the entry not filled in full yet) counts as covering:
it goes live when its parent fills, or IB takes it down with its parent (a cancelled entry), and
then the gap shows at the next check. Counting it as missing would put a second stop on the same
contracts, and when the parent filled the broker would hold stops for more than the position: a
triggered SELL stop for more than is held opens a short.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

EPS = 1e-9

# Order states in which an exit can still trade at the broker. `unknown` counts: until
# reconciliation says otherwise it may be working, and a second stop on top could over-sell.
# `pending_cancel` does not: it is on its way out and protects nothing the service can count on.
COVERING_STATES = frozenset({"new", "pending_submit", "submitted", "partially_filled", "unknown"})
STOP_ROLES = frozenset({"stop_loss", "exit"})
TAKE_PROFIT_ROLES = frozenset({"take_profit"})

Action = Literal["protect", "flatten"]


@dataclass(frozen=True, slots=True)
class ExitOrder:
    """One SELL order that closes (part of) a long position."""

    order_ref: str
    con_id: int
    role: str  # stop_loss | take_profit | exit
    remaining: float  # quantity - filled
    state: str  # the order machine's state
    oca_group: str = ""
    # A bracket child whose entry is still working: live at the broker only once the entry fills.
    pending_parent: bool = False


@dataclass(frozen=True, slots=True)
class Coverage:
    con_id: int
    held: float
    stop_covered: float
    take_profit_covered: float
    # The same, without children still waiting on their entry: what can trade right now.
    live_stop: float = 0.0
    live_take_profit: float = 0.0

    @property
    def gap(self) -> float:
        """Contracts held with no working stop or exit: what a fall in price would hit."""
        return max(0.0, self.held - self.stop_covered)

    @property
    def excess(self) -> float:
        """Live exit quantity beyond what is held: a stop that fires would sell short.

        Children of a working entry are left out: they cover the whole entry by design and go
        live only as it fills."""
        return max(0.0, max(self.live_stop, self.live_take_profit) - self.held)


@dataclass(frozen=True, slots=True)
class Intent:
    """What the actor should do for one contract.

    `protect`: place a take-profit and a stop for `quantity` in a new OCA group (GTC).
    `flatten`: close `quantity` at market.
    `excess`: more exit quantity than held; flagged for a person (never fixed by guessing).
    """

    kind: Literal["protect", "flatten", "excess"]
    con_id: int
    quantity: float


def coverage(positions: Mapping[int, float], exits: Iterable[ExitOrder]) -> dict[int, Coverage]:
    """Coverage of every contract held or exited; quantities <= 0 are not held."""
    # Members of one OCA group cancel each other when one fills: the group can close at most its
    # largest member, so within a group quantities are the max, across groups the sum.
    groups: dict[tuple[int, str], list[float]] = {}
    for e in exits:
        if e.state not in COVERING_STATES or e.remaining <= EPS:
            continue
        if e.role in STOP_ROLES:
            slot = 0
        elif e.role in TAKE_PROFIT_ROLES:
            slot = 1
        else:
            continue
        acc = groups.setdefault((e.con_id, e.oca_group or e.order_ref), [0.0, 0.0, 0.0, 0.0])
        acc[slot] = max(acc[slot], e.remaining)
        if not e.pending_parent:
            acc[slot + 2] = max(acc[slot + 2], e.remaining)
    stop: dict[int, float] = {}
    tp: dict[int, float] = {}
    live_stop: dict[int, float] = {}
    live_tp: dict[int, float] = {}
    for (con_id, _), (s_all, t_all, s_live, t_live) in groups.items():
        for into, value in ((stop, s_all), (tp, t_all), (live_stop, s_live), (live_tp, t_live)):
            if value > 0:
                into[con_id] = into.get(con_id, 0.0) + value
    out: dict[int, Coverage] = {}
    for con_id in sorted(set(positions) | set(stop) | set(tp)):
        held = max(0.0, float(positions.get(con_id, 0.0)))
        out[con_id] = Coverage(
            con_id,
            held,
            stop.get(con_id, 0.0),
            tp.get(con_id, 0.0),
            live_stop.get(con_id, 0.0),
            live_tp.get(con_id, 0.0),
        )
    return out


def intents(
    positions: Mapping[int, float], exits: Iterable[ExitOrder], action: Action = "protect"
) -> list[Intent]:
    """What restores the invariant: protection (or a market exit) for every gap, in whole
    contracts rounded down (an option trades in whole contracts, and a fraction over would be a
    short); every excess flagged."""
    out: list[Intent] = []
    for c in coverage(positions, exits).values():
        gap = float(int(c.gap + EPS))
        if gap >= 1:
            out.append(Intent(action, c.con_id, gap))
        if c.excess > EPS:
            out.append(Intent("excess", c.con_id, c.excess))
    return out

"""What every part of SimServer may rely on: the objects the server itself owns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.clock import Clock
    from sim.config import SimOptions
    from sim.faults import FaultInjector
    from sim.latency import Latency
    from sim.market import MarketModel
    from sim.orders import OrderBook
    from sim.pacing import Monotonic, Pacing
    from sim.server.sessions import ClientSession


class ServerCore:
    """The shared objects, set by SimServer.__init__ before any part's _init_ runs.

    The parts (ContractsMixin, GatesMixin, ...) are mixins of SimServer; they call each other's
    methods through self, and each owns only the state its own class lists.
    """

    options: SimOptions
    # Real seconds, for what the Gateway times by its own wall clock (pacing, delays, restarts).
    monotonic: Monotonic
    symbols: tuple[str, ...]
    market: MarketModel
    clock: Clock
    book: OrderBook
    pacing: Pacing
    faults: FaultInjector
    latency: Latency
    stats: dict[str, Any]
    # Sessions past the handshake, and those past startApi by client id.
    sessions: set[ClientSession]
    by_client: dict[int, ClientSession]

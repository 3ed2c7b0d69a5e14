"""One API connection (ClientSession) and the subscription records it holds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sim import protocol as P
from sim.orders import SimContract
from sim.pacing import MessageRate

if TYPE_CHECKING:
    from sim.arrivals import Arrivals
    from sim.server.gateway import SimServer


log = logging.getLogger(__name__)

# A client that lets this much output pile up is not reading; drop it rather than grow without bound.
MAX_WRITE_BUFFER = 64 * 1024 * 1024


@dataclass
class MktDataSub:
    req_id: int
    contract: SimContract
    generic: frozenset[str]
    last: dict[str, Any] = field(default_factory=dict)
    delayed: bool = False


@dataclass
class HistSub:
    req_id: int
    contract: SimContract
    bar_size: int | str
    what: str
    format_date: int
    last_bar_start: datetime
    last_update: datetime


@dataclass
class RealTimeSub:
    req_id: int
    contract: SimContract
    what: str
    next_start: datetime


class ClientSession:
    """One API connection: its negotiated version, client id and subscriptions."""

    def __init__(
        self,
        server: SimServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn_no: int,
    ):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.conn_no = conn_no
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.version = 0
        self.client_id: int | None = None
        self.api_started = False
        self.closed = False
        self.market_data_type = 1
        self.auto_open_orders = False
        self.mkt_subs: dict[int, MktDataSub] = {}
        self.hist_subs: dict[int, HistSub] = {}
        self.rt_subs: dict[int, RealTimeSub] = {}
        self.account_updates = False
        self.account_multi: set[int] = set()
        self.positions_sub = False
        self.positions_multi: set[int] = set()
        self.account_summary: dict[int, set[str] | None] = {}
        self.pnl_subs: set[int] = set()
        self.rate: MessageRate | None = None
        self.arrived: float | None = None  # monotonic time the current chunk arrived
        self.arrivals: Arrivals | None = None  # the thread that reads the socket
        # reqMktData ids the entitlement gate let through as delayed data.
        self.delayed_reqs: set[int] = set()
        # Dropped by a Gateway restart, which forgets the client rather than remembering its close.
        self.restart_dropped = False

    @property
    def is_master(self) -> bool:
        return self.client_id == 0

    def send(self, fields: Sequence[Any]) -> None:
        self.send_many([fields])

    def send_many(self, messages: Sequence[Sequence[Any]]) -> None:
        if self.closed or not messages:
            return
        data = b"".join(P.encode_frame(m) for m in messages)
        try:
            self.writer.write(data)
        except (ConnectionError, RuntimeError) as e:
            log.info("client %s: write failed: %s", self.peer, e)
            self.close()
            return
        self.server.stats["messages_sent"] += len(messages)
        transport = self.writer.transport
        if transport is not None and transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("client %s is not reading; closing it", self.peer)
            self.close()

    def send_error(self, req_id: int, code: int, text: str, advanced_json: str = "") -> None:
        self.server.stats["errors"][code] += 1
        self.send(P.msg_error(self.version, req_id, code, text, advanced_json))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.arrivals is not None:
            self.arrivals.stop()
        try:
            self.writer.close()
        except RuntimeError:
            pass

    def __repr__(self) -> str:
        return f"ClientSession(#{self.conn_no}, clientId={self.client_id}, {self.peer})"


Handler = Callable[[ClientSession, list[str]], Any]

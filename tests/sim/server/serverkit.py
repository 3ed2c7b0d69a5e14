"""Test kit for sim/server: a SimServer without a socket; requests go straight into its
dispatch and replies are decoded from what the session would have written."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sim import protocol as P
from sim.clock import ManualClock
from sim.config import SimOptions
from sim.protocol import In
from sim.server import ClientSession, SimServer

# A Friday afternoon in regular trading hours (as tests/wire/wirekit.py's START).
START = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


class Writer:
    """The part of asyncio.StreamWriter a ClientSession uses."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.transport = None

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000)

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True


class Client:
    """One client session of `server`, past the handshake; `send` runs one request through
    SimServer.dispatch and returns the messages it answered with."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.writer = Writer()
        self.session = ClientSession(server, None, self.writer, 1)  # type: ignore[arg-type]
        self.session.version = server.options.server_version
        server.sessions.add(self.session)
        self._frames = P.FrameBuffer()
        self._loop = asyncio.new_event_loop()

    def send(self, fields: list[Any]) -> list[list[str]]:
        self.session.arrived = self.server.monotonic()
        self._loop.run_until_complete(self.server.dispatch(self.session, [str(f) for f in fields]))
        data, self.writer.data = bytes(self.writer.data), bytearray()
        return self._frames.feed(data)

    def start_api(self, client_id: int = 1) -> list[list[str]]:
        return self.send([In.START_API, 2, client_id, ""])

    def close(self) -> None:
        self._loop.close()


class Mono:
    """time.monotonic for the server, one second later at each call: no request is ever
    refused for the message rate."""

    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        self.value += 1.0
        return self.value


def errors(messages: list[list[str]]) -> list[tuple[int, str]]:
    """(code, text) of each error message among `messages`."""
    return [(int(m[3]), m[4]) for m in messages if m[0] == str(int(P.Out.ERR_MSG))]


def new_server() -> SimServer:
    return SimServer(SimOptions(seed=7), clock=ManualClock(START), monotonic=Mono())

"""Fixtures for the sim/server tests: a SimServer on a manual clock and one client of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serverkit import Client, new_server

from sim.server import SimServer


@pytest.fixture
def server() -> SimServer:
    return new_server()


@pytest.fixture
def client(server: SimServer) -> Iterator[Client]:
    c = Client(server)
    yield c
    c.close()

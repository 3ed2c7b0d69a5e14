"""sim/server/sessions.py: a client that stops reading, or whose socket breaks, is dropped."""

from __future__ import annotations

from serverkit import Client

from sim.protocol import In
from sim.server import SimServer
from sim.server.sessions import MAX_WRITE_BUFFER


class Transport:
    def __init__(self, buffered: int) -> None:
        self.buffered = buffered

    def get_write_buffer_size(self) -> int:
        return self.buffered


def test_a_client_that_does_not_read_is_closed(client: Client) -> None:
    client.start_api()
    client.writer.transport = Transport(MAX_WRITE_BUFFER)
    client.send([In.REQ_CURRENT_TIME, 1])
    assert not client.session.closed, "at the limit is still within it"
    client.writer.transport = Transport(MAX_WRITE_BUFFER + 1)
    client.send([In.REQ_CURRENT_TIME, 1])
    assert client.session.closed
    assert client.writer.closed


def test_a_broken_socket_closes_the_session_and_sends_nothing_more(client: Client) -> None:
    client.start_api()
    sent = client.server.stats["messages_sent"]

    def broken(data: bytes) -> None:
        raise ConnectionResetError("peer gone")

    client.writer.write = broken  # type: ignore[method-assign]
    client.send([In.REQ_CURRENT_TIME, 1])
    assert client.session.closed
    assert client.server.stats["messages_sent"] == sent
    client.session.send([1, 2, 3])  # after close: a no-op, not an exception


def test_closing_a_session_releases_its_client_id_and_subscriptions(server: SimServer) -> None:
    a, b = Client(server), Client(server)
    a.start_api(1)
    b.start_api(2)
    a.session.mkt_subs[5] = object()  # type: ignore[assignment]
    server._drop_session(a.session)
    assert set(server.by_client) == {2}
    assert server.stats["active_clients"] == 1
    assert a.session.mkt_subs == {}
    # The client id is free again for a new session.
    c = Client(server)
    c.start_api(1)
    assert server.by_client[1] is c.session
    for x in (a, b, c):
        x.close()

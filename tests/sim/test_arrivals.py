"""The simulator's socket reader: chunks stamped when they arrive, and a flood held back."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from sim.arrivals import CHUNK, MAX_PENDING, Arrivals


def test_a_chunk_is_stamped_when_it_arrives_not_when_the_loop_takes_it() -> None:
    async def main() -> tuple[float, float, bytes]:
        ours, theirs = socket.socketpair()
        arrivals = Arrivals(ours, asyncio.get_running_loop(), time.monotonic)
        try:
            sent = time.monotonic()
            theirs.sendall(b"hello")
            time.sleep(0.5)  # the loop busy elsewhere: nothing taken meanwhile
            stamp, data = await asyncio.wait_for(arrivals.get(), 5)
            return sent, stamp, data
        finally:
            arrivals.stop()
            ours.close()
            theirs.close()

    sent, stamp, data = asyncio.run(main())
    assert data == b"hello"
    assert sent <= stamp < sent + 0.25  # read off the socket at once, not half a second later


def test_a_flooding_client_is_held_back_by_the_socket_not_buffered_without_end() -> None:
    total = 8 * MAX_PENDING

    async def main() -> tuple[int, int, bool]:
        ours, theirs = socket.socketpair()
        theirs.settimeout(30)
        arrivals = Arrivals(ours, asyncio.get_running_loop(), time.monotonic)
        done = threading.Event()

        def flood() -> None:
            theirs.sendall(b"x" * total)
            done.set()

        threading.Thread(target=flood, daemon=True).start()
        try:
            await asyncio.sleep(0.5)  # the loop takes nothing for a while
            held = arrivals.pending
            blocked = not done.is_set()
            got = 0
            while got < total:
                _, data = await asyncio.wait_for(arrivals.get(), 10)
                got += len(data)
            return held, got, blocked
        finally:
            arrivals.stop()
            ours.close()
            theirs.close()

    held, got, blocked = asyncio.run(main())
    assert MAX_PENDING // 2 < held <= MAX_PENDING + CHUNK
    assert blocked  # the rest waited in the socket, at the client
    assert got == total  # and nothing was lost

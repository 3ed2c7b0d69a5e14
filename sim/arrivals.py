"""A session's socket, read on a thread of its own so every chunk is stamped when it arrives.

IB states the message rate as a limit on what the client sends: "No more than 50 messages can be
sent from an API application ... to TWS per second" (interactivebrokers.github.io/tws-api/
rtd_fqa_errors.html). The simulator used to stamp a chunk when its event loop got round to
reading it. Its loop also computes the bars it answers (a 30-day 1-hour backfill is about 70 ms of
path simulation), so at a 100-symbol cold start it read a second's messages at once, and counted a
violation the client never committed (one in three 100-symbol soak days, at 30 messages a second
with bursts of 10). Stamped here, on the wire's side of the loop, a message is counted in the
second it was sent, however late the loop handles it. The thread only reads; everything else
stays on the loop, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import socket
import threading

from sim.pacing import Monotonic

POLL_S = 0.2  # how soon a stopped reader notices, should the shutdown not wake it
# Read ahead of the loop at most this much; beyond it the socket waits (TCP pushes back on the
# client), as asyncio's stream reader did: a client that floods is not buffered without end.
MAX_PENDING = 1 << 20
CHUNK = 65536


class Arrivals:
    """Chunks read from `sock` with their arrival times, handed to `loop` in order; an empty
    chunk is the end (the peer closed, or `stop`)."""

    def __init__(
        self, sock: socket.socket, loop: asyncio.AbstractEventLoop, monotonic: Monotonic
    ) -> None:
        # A socket of our own on the same connection: asyncio's transport keeps its descriptor.
        # The file status (non-blocking) is shared, hence select before every recv.
        self._sock = socket.socket(fileno=os.dup(sock.fileno()))
        self._loop = loop
        self._monotonic = monotonic
        self._stopped = threading.Event()
        self._room = threading.Condition()  # also guards our descriptor's shutdown and close
        self.pending = 0  # bytes read and not yet taken by the loop
        self.queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self._thread = threading.Thread(target=self._run, name="sim-arrivals", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # A selector, not select.select: that refuses descriptors of 1024 and above.
        selector = selectors.DefaultSelector()
        selector.register(self._sock, selectors.EVENT_READ)
        try:
            while not self._stopped.is_set():
                with self._room:
                    if self.pending > MAX_PENDING:
                        self._room.wait(POLL_S)
                        continue
                try:
                    if not selector.select(POLL_S):
                        continue
                    data = self._sock.recv(CHUNK)
                except (BlockingIOError, InterruptedError):
                    continue
                except (OSError, ValueError):
                    data = b""
                with self._room:
                    self.pending += len(data)
                if not self._hand(self._monotonic(), data) or not data:
                    return
            self._hand(self._monotonic(), b"")
        finally:
            selector.close()
            with self._room:  # never while stop() shuts it: the number could be reused
                self._sock.close()

    def _hand(self, stamp: float, data: bytes) -> bool:
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, (stamp, data))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    async def get(self) -> tuple[float, bytes]:
        """The next chunk and the time it arrived (an empty chunk: the end)."""
        stamp, data = await self.queue.get()
        with self._room:
            self.pending -= len(data)
            self._room.notify()
        return stamp, data

    def stop(self) -> None:
        """Stop reading. Shutting our side's reading wakes the thread at once; the connection
        itself closes with asyncio's transport (ours is only a second descriptor on it)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        with self._room, contextlib.suppress(OSError):
            if self._sock.fileno() != -1:
                self._sock.shutdown(socket.SHUT_RD)

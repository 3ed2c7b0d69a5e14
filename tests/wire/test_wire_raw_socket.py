"""Handshake and framing edge cases over a raw socket, and the command-line runner."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from ib_async import IB
from wirekit import START

from sim import protocol as P
from sim.runner import EmbeddedSim

ROOT = Path(__file__).resolve().parents[2]


def _hello(version_text: bytes) -> bytes:
    return b"API\0" + struct.pack(">I", len(version_text)) + version_text


def _read_frame(sock: socket.socket) -> list[str] | None:
    """One frame's fields, or None when the server closed the connection."""
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (size,) = struct.unpack(">I", head)
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            return None
        body += chunk
    return P.decode_payload(body)


def _read_until_closed(sock: socket.socket) -> list[list[str]]:
    frames = []
    while (frame := _read_frame(sock)) is not None:
        frames.append(frame)
    return frames


def _open(sim: EmbeddedSim) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", sim.port), timeout=5)
    return sock


def _start_api(sock: socket.socket, client_id: int, version: bytes = b"v157..178") -> list[str]:
    sock.sendall(_hello(version))
    reply = _read_frame(sock)
    assert reply is not None
    sock.sendall(P.encode_frame([71, 2, client_id, ""]))
    return reply


def _read_until(sock: socket.socket, msg_id: int) -> list[str]:
    while True:
        frame = _read_frame(sock)
        assert frame is not None, f"closed before message {msg_id}"
        if frame[0] == str(msg_id):
            return frame


@pytest.mark.parametrize(
    ("offer", "expected"),
    [(b"v157..176", "176"), (b"v100..200 +PACEAPI", "176"), (b"v157..170", "170")],
)
def test_handshake_picks_the_highest_common_version(
    sim: EmbeddedSim, offer: bytes, expected: str
) -> None:
    with _open(sim) as sock:
        reply = _start_api(sock, 40, offer)
        assert reply[0] == expected and reply[1] == "20261120 10:00:00 EST"
        assert _read_until(sock, 15) == ["15", "1", "DU123456"]
        assert _read_until(sock, 9) == ["9", "1", "1"]
        farm = [_read_until(sock, 4) for _ in range(3)]
        assert [f[3] for f in farm] == ["2104", "2106", "2158"]


@pytest.mark.parametrize("offer", [b"v100..150", b"v177..178"])
def test_no_common_version_is_a_clean_close(sim: EmbeddedSim, offer: bytes) -> None:
    with _open(sim) as sock:
        sock.sendall(_hello(offer))
        assert _read_until_closed(sock) == []
    assert sim.stats["refused"] == 1


def test_garbage_handshake_is_closed(sim: EmbeddedSim) -> None:
    with _open(sim) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_until_closed(sock) == []
    # Refused as a bad handshake, whichever side read it first (not a crashed session).
    assert sim.stats["malformed"] == 1


def test_unknown_and_early_requests_are_ignored(sim: EmbeddedSim) -> None:
    with _open(sim) as sock:
        sock.sendall(_hello(b"v157..178"))
        assert _read_frame(sock) is not None
        sock.sendall(P.encode_frame([49, 1]))  # before startApi: ignored
        sock.sendall(P.encode_frame([71, 2, 41, ""]))
        sock.sendall(P.encode_frame([4242, 1, "x"]))
        sock.sendall(P.encode_frame([9, 8, "not-a-number"]))
        sock.sendall(P.encode_frame([49, 1]))
        err = _read_until(sock, 4)
        while err[3] != "320":
            err = _read_until(sock, 4)
        assert _read_until(sock, 49) == ["49", "1", str(int(START.timestamp()))]
        sock.sendall(P.encode_frame([8, 1, 1]))
        assert _read_until(sock, 9) == ["9", "1", "1"]
    assert sim.stats["unknown_requests"] == 1
    assert sim.stats["requests"][4242] == 1


def test_malformed_frame_closes_only_that_client(sim: EmbeddedSim) -> None:
    ib = IB()
    ib.connect("127.0.0.1", sim.port, clientId=42, timeout=10)
    try:
        with _open(sim) as sock:
            _start_api(sock, 43)
            sock.sendall(struct.pack(">I", 3) + b"abc")  # no NUL terminator
            frames = _read_until_closed(sock)
            assert frames and frames[0][0] in ("15", "9")
        assert sim.stats["malformed"] == 1
        assert ib.isConnected() and ib.reqCurrentTime() == START
    finally:
        ib.disconnect()


def test_command_line_runner_serves_and_prints_stats() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim.runner",
            "--port",
            "0",
            "--seed",
            "3",
            "--time-scale",
            "120",
            "--start",
            "2026-11-20T10:00",
            "--symbols",
            "SPY,QQQ",
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line + proc.stderr.read()
        port = int(line.split("127.0.0.1:")[1].split()[0])
        assert "2026-11-20T15:0" in line
        ib = IB()
        ib.connect("127.0.0.1", port, clientId=1, timeout=10)
        assert ib.managedAccounts() == ["DU123456"]
        ib.disconnect()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert '"connections": 1' in out

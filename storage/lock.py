"""One service per database: an exclusive lock on `<storage.path>.lock`, holding its pid.

Two services on one file would each send orders for the same signals, and a restore under a
running service would be overwritten by its next write (or corrupt it). The lock is flock(2):
the kernel drops it when the process dies, SIGKILL included, so a crash never leaves a stale
lock behind that a person would have to delete.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from storage.files import private_file


def lock_path(database: Path) -> Path:
    return Path(f"{database}.lock")


class Locked(Exception):
    """Another process holds the database."""


class InstanceLock:
    def __init__(self, database: Path):
        self.database = Path(database)
        self.path = lock_path(self.database)
        self.fd: int | None = None

    def acquire(self) -> InstanceLock:
        fd = os.open(private_file(self.path), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = holder(self.database)
            raise Locked(
                f"another optionsbot (pid {pid or '?'}) is running on {self.database};"
                " stop it first, or give this one its own storage.path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def holder(database: Path) -> int | None:
    """The pid of the process holding the database's lock, or None when nobody holds it."""
    path = lock_path(database)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)

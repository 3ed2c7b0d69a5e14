"""Private files: the database, its WAL, the logs and the kill file are the owner's alone.

The CLI sets umask 077, but a library caller (tests, a notebook) may run under 022, so every
place that creates one of these files goes through here and sets the mode itself.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dirs(directory: Path) -> None:
    """Create the missing directories of `directory` as 0700; existing ones are left alone
    (a user's own /tmp or home directory is not ours to change)."""
    missing = []
    d = Path(directory)
    while not d.exists():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)


def private_file(path: Path) -> Path:
    """Create `path` (and its missing directories) as 0600 if absent; tighten it if present."""
    path = Path(path)
    private_dirs(path.parent)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def tighten(*paths: Path) -> None:
    """0600 on each path that exists (SQLite's -wal and -shm appear on their own)."""
    for p in paths:
        try:
            os.chmod(p, FILE_MODE)
        except FileNotFoundError:
            pass

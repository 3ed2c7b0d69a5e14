"""Named crash points for the SIGKILL test: OPTIONSBOT_CRASH_AT=point:n kills the process there.

Inert unless the variable is set. It lets a test crash the service at an exact place in the
order path (after the write and before the send, between a bracket's legs, between fills,
during reconciliation) instead of hoping a random kill lands there.
"""

from __future__ import annotations

import os
import signal
import threading

POINTS = (
    "after_write_before_send",
    "between_legs",
    "after_send_before_ack",
    "after_fill_recorded",
    "during_reconciliation",
)

_spec = os.environ.get("OPTIONSBOT_CRASH_AT", "")
_name, _, _nth = _spec.partition(":")
_target = int(_nth or 1) if _name else 0
_hits = 0
_lock = threading.Lock()


def crashpoint(name: str) -> None:
    global _hits
    if name != _name:
        return
    with _lock:
        _hits += 1
        if _hits == _target:
            os.kill(os.getpid(), signal.SIGKILL)

"""Keeping the IB account id out of everything the service writes: logs, SQLite, errors.

The configured account is replaced wherever it appears; so is anything shaped like an IB account
id, because the broker's text can name another one (201 "Invalid account code U7654321") and a
sub-account of an advisor's master account is still the owner's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
# IB account ids: U (individual), DU (paper), F / DF (advisor master, paper), I (introducing
# broker) and their paper forms, then digits. Word boundaries keep order refs and local symbols
# ("SPY   261120C00600000") intact.
ACCOUNT_SHAPE = re.compile(r"\b(?:DU|DF|DI|U|F|I)\d{4,12}\b")
_secrets: set[str] = set()


def register(*secrets: str) -> None:
    """Secrets every later redact() call replaces, process-wide (the configured account)."""
    _secrets.update(s for s in secrets if s and len(s) >= 3)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    if not text:
        return text
    for s in {*_secrets, *(x for x in secrets if x and len(x) >= 3)}:
        text = text.replace(s, MASK)
    return ACCOUNT_SHAPE.sub(MASK, text)

"""Logging: readable lines on the console, JSON lines in a file, secrets redacted from both."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(name)-20s %(message)s"


class Redact(logging.Filter):
    """Replaces every configured secret (the account id, tokens) wherever it appears."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 3]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            for s in self.secrets:
                text = text.replace(s, "***")
            record.msg, record.args = text, ()
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "thread": record.threadName,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup(
    level: str = "INFO", json_file: Path | None = None, secrets: list[str] | None = None
) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(level)
    redact = Redact(secrets or [])
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(CONSOLE_FORMAT, "%H:%M:%S"))
    console.addFilter(redact)
    root.addHandler(console)
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(json_file)
        fh.setFormatter(JsonLines())
        fh.addFilter(redact)
        root.addHandler(fh)
    # ib_async logs every error frame at ERROR; ours classify them, so keep theirs quieter.
    logging.getLogger("ib_async").setLevel(logging.CRITICAL if level != "DEBUG" else logging.INFO)
    # transitions logs every callback at INFO; our actors log each transition with its cause.
    logging.getLogger("transitions").setLevel(logging.WARNING)

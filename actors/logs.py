"""Logging: readable lines on the console, JSON lines in a file, secrets redacted from both."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from configs.redact import redact, register
from storage.files import private_file

CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(name)-20s %(message)s"


class Redact(logging.Filter):
    """Replaces the configured secrets (the account id) and anything shaped like an IB account id."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 3]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = redact(text, self.secrets)
        if clean != text:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            # A traceback quotes exception messages (the broker's text among them) too.
            record.exc_text = redact(
                logging.Formatter().formatException(record.exc_info), self.secrets
            )
        return True


class Console(logging.Formatter):
    """One line per record: tracebacks go to the JSON log, the console says what failed."""

    def __init__(self, tracebacks: bool = False):
        super().__init__(CONSOLE_FORMAT, "%H:%M:%S")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if not self.tracebacks and (record.exc_info or record.exc_text or record.stack_info):
            record = logging.makeLogRecord(record.__dict__)
            record.exc_info = record.exc_text = record.stack_info = None
        return super().format(record)


class JsonFile(logging.FileHandler):
    """The JSON log; a write that fails (disk full) is said once in one line, not a traceback
    per record as logging does by default."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if not self.failed:
            self.failed = True
            exc = sys.exc_info()[1]
            reason = getattr(exc, "strerror", None) or exc
            print(
                f"optionsbot: cannot write the log {self.baseFilename}: {reason}", file=sys.stderr
            )


def _not_pykka_traceback(record: logging.LogRecord) -> bool:
    # Pykka logs "Unhandled exception in <actor> (urn:...):" with the traceback; BaseActor logs
    # the same failure as one line naming the cause, so the console keeps only that one.
    return not (record.name.startswith("pykka") and record.exc_info)


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "thread": record.threadName,
        }
        if record.exc_info or record.exc_text:
            out["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(out)


def setup(
    level: str = "INFO", json_file: Path | None = None, secrets: list[str] | None = None
) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(level)
    redact = Redact(secrets or [])
    register(*(secrets or []))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(Console(tracebacks=level == "DEBUG"))
    console.addFilter(redact)
    console.addFilter(_not_pykka_traceback)
    root.addHandler(console)
    if json_file is not None:
        fh = JsonFile(private_file(json_file))
        fh.setFormatter(JsonLines())
        fh.addFilter(redact)
        root.addHandler(fh)
    # ib_async logs every error frame at ERROR; ours classify them, so keep theirs quieter.
    logging.getLogger("ib_async").setLevel(logging.CRITICAL if level != "DEBUG" else logging.INFO)
    # transitions logs every callback at INFO; our actors log each transition with its cause.
    logging.getLogger("transitions").setLevel(logging.WARNING)

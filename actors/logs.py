"""Logging: readable lines on the console, JSON lines in a file, secrets redacted from both.

Under systemd (stderr is the journal's stream) the console lines go without a timestamp and
with a syslog priority prefix (`<3>` for an error; sd-daemon(3)), so journald keeps its own
time and `journalctl -p err` finds the errors. The JSON file rotates at `log.max_bytes`,
keeping `log.backups` old files: a Pi's SD card does not fill up over months.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from configs.redact import redact, register
from storage.files import private_file

CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(name)-20s %(message)s"
JOURNAL_FORMAT = "%(levelname)-7s %(name)-20s %(message)s"
# sd-daemon(3): journald reads a leading <N> on a line as its syslog priority.
PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def to_journal(environ: dict | None = None, stream=None) -> bool:
    """True when stderr is connected to the journal: JOURNAL_STREAM names its device and inode
    (systemd.exec(5)); comparing them tells a redirected stderr (`... 2>file` in a unit) apart."""
    env = os.environ if environ is None else environ
    dev, _, ino = env.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


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

    def __init__(self, tracebacks: bool = False, journal: bool = False):
        super().__init__(JOURNAL_FORMAT if journal else CONSOLE_FORMAT, "%H:%M:%S")
        self.tracebacks = tracebacks
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        if not self.tracebacks and (record.exc_info or record.exc_text or record.stack_info):
            record = logging.makeLogRecord(record.__dict__)
            record.exc_info = record.exc_text = record.stack_info = None
        text = super().format(record)
        if self.journal:
            # Each line its own journal entry, each with the record's priority.
            prefix = f"<{PRIORITY.get(record.levelname, 6)}>"
            text = "\n".join(prefix + line for line in text.splitlines())
        return text


class JsonFile(logging.handlers.RotatingFileHandler):
    """The JSON log, rotated; a write that fails (disk full) is said once in one line, not a
    traceback per record as logging does by default."""

    failed = False

    def _open(self):  # noqa: ANN202 - logging's signature
        # The file after a rollover is created by logging's open(): make it 0600 first, as a
        # library caller's umask may be 022.
        private_file(Path(self.baseFilename))
        return super()._open()

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
    level: str = "INFO",
    json_file: Path | None = None,
    secrets: list[str] | None = None,
    max_bytes: int = 0,
    backups: int = 0,
    journal: bool | None = None,
) -> None:
    """`max_bytes` 0: the JSON file never rotates; `journal` None: detect it (to_journal())."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(level)
    redact = Redact(secrets or [])
    register(*(secrets or []))
    console = logging.StreamHandler(sys.stderr)
    journal = to_journal() if journal is None else journal
    console.setFormatter(Console(tracebacks=level == "DEBUG", journal=journal))
    console.addFilter(redact)
    console.addFilter(_not_pykka_traceback)
    root.addHandler(console)
    if json_file is not None:
        fh = JsonFile(private_file(json_file), maxBytes=max_bytes, backupCount=backups)
        fh.setFormatter(JsonLines())
        fh.addFilter(redact)
        root.addHandler(fh)
    # ib_async logs every error frame at ERROR; ours classify them, so keep theirs quieter.
    logging.getLogger("ib_async").setLevel(logging.CRITICAL if level != "DEBUG" else logging.INFO)
    # transitions logs every callback at INFO; our actors log each transition with its cause.
    logging.getLogger("transitions").setLevel(logging.WARNING)

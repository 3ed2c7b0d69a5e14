"""Logs under systemd (journal: priority prefixes, no timestamps) and the JSON file's rotation."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors import logs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield root
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in saved:
        root.addHandler(h)
    root.setLevel(level)


def test_to_journal_only_when_stderr_is_the_named_stream(tmp_path):
    f = tmp_path / "stream"
    with open(f, "w") as stream:
        st = os.fstat(stream.fileno())
        assert logs.to_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream)
        # Redirected elsewhere (`2>file` in a unit): another inode, so plain console lines.
        assert not logs.to_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, stream)
        assert not logs.to_journal({}, stream)
        assert not logs.to_journal({"JOURNAL_STREAM": "garbage"}, stream)


def test_journal_lines_carry_the_priority_and_no_timestamp():
    fmt = logs.Console(journal=True)
    for level, prio in ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6)):
        rec = logging.LogRecord("optionsbot.x", level, __file__, 1, "one\ntwo", (), None)
        text = fmt.format(rec)
        lines = text.splitlines()
        assert all(line.startswith(f"<{prio}>") for line in lines), text
        assert ":" not in lines[0].split("optionsbot.x")[0], "no hh:mm:ss: journald keeps the time"


def test_the_service_under_a_journal_stream_writes_journal_lines(tmp_path):
    # The real CLI with stderr on a file whose device:inode JOURNAL_STREAM names, as systemd does.
    out = tmp_path / "journal"
    with open(out, "w") as stream:
        st = os.fstat(stream.fileno())
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OPTIONSBOT_")},
            "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
            "OPTIONSBOT_STORAGE__PATH": str(tmp_path / "missing" / "x" / "bot.sqlite"),
            "OPTIONSBOT_LOG__JSON_FILE": str(tmp_path / "bot.jsonl"),
            "OPTIONSBOT_RISK__KILL_SWITCH_FILE": str(tmp_path / "KILL"),
            "OPTIONSBOT_METRICS__PORT": "0",
            "OPTIONSBOT_SYMBOLS": '["SPY"]',
            "OPTIONSBOT_BROKER__MODE": "gateway",
            "OPTIONSBOT_BROKER__PORT": "1",  # nothing listens: the service logs and retries
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "actors.cli", "run"],
            cwd=ROOT,
            env=env,
            stdout=stream,
            stderr=stream,
        )
        try:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 60 and "<4>" not in out.read_text():
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(30)
    text = out.read_text()
    assert "<4>WARNING" in text or "<3>ERROR" in text, text
    first = text.splitlines()[0]
    assert first.startswith("<"), first


def test_the_json_log_rotates_and_every_file_is_private(tmp_path, root_logger):
    old = os.umask(0o022)  # a library caller's umask
    try:
        path = tmp_path / "bot.jsonl"
        logs.setup("INFO", path, [], max_bytes=2000, backups=2)
        log = logging.getLogger("optionsbot.test")
        for i in range(200):
            log.info("line %d %s", i, "x" * 50)
        for h in root_logger.handlers:
            h.flush()
    finally:
        os.umask(old)
    files = sorted(tmp_path.glob("bot.jsonl*"))
    assert [f.name for f in files] == ["bot.jsonl", "bot.jsonl.1", "bot.jsonl.2"]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert f.stat().st_size <= 2000 + 200
        for line in f.read_text().splitlines():
            json.loads(line)
    assert "line 199" in files[0].read_text()

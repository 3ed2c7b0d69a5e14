"""`optionsbot run` as a user runs it: logs the story, stops cleanly on Ctrl-C, leaves a consistent database."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_run_logs_the_story_and_stops_cleanly_on_ctrl_c(tmp_path):
    env = {
        **os.environ,
        "OPTIONSBOT_STORAGE__PATH": str(tmp_path / "bot.sqlite"),
        "OPTIONSBOT_LOG__JSON_FILE": str(tmp_path / "bot.jsonl"),
        "OPTIONSBOT_METRICS__PORT": "0",
        "OPTIONSBOT_SIM__TIME_SCALE": "120",
        "OPTIONSBOT_SIM__START": "2026-11-20T15:00:00+00:00",
        "OPTIONSBOT_RISK__KILL_SWITCH_FILE": str(tmp_path / "KILL"),
        "OPTIONSBOT_BROKER__ACCOUNT": "DU9988776",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    saw_fill = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if " fill: " in line:
                saw_fill.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert saw_fill.wait(90), "no fill within 90 s:\n" + "".join(lines[-40:])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    text = "".join(lines)
    for expected in (
        "embedded IB Gateway simulator on 127.0.0.1:",
        "bars of history delivered",
        "signal",
        "option chosen",
        "bracket",
        "placed (dry-run)",
        " fill: ",
        "optionsbot stopped",
    ):
        assert expected in text, f"{expected!r} missing from the log"
    assert "Traceback" not in text
    assert "DU9988776" not in text, "the account id leaked into the log"
    # JSON lines are machine-readable, one object per line.
    records = [json.loads(x) for x in (tmp_path / "bot.jsonl").read_text().splitlines()]
    assert any("bracket" in r["msg"] for r in records)
    assert "DU9988776" not in (tmp_path / "bot.jsonl").read_text()
    # The database is consistent after the stop.
    con = sqlite3.connect(tmp_path / "bot.sqlite")
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert con.execute("pragma foreign_key_check").fetchall() == []
    orphans = con.execute(
        "select count(*) from orders o where not exists (select 1 from order_events e where e.order_ref = o.order_ref)"
    ).fetchone()[0]
    assert orphans == 0

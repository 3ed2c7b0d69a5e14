"""The account id stays out of everything the service writes, and its files are the owner's alone.

The simulator refuses orders for an account that is not its own with IB's 201 "Invalid account
code <the account>" (sim/orders.py), so a live run with another account id puts the broker's text,
account and all, through every path that stores or logs it.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from actors import logs
from storage import open_db

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "U7654321"


def test_the_account_reaches_no_database_row_log_line_or_stderr(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "dry_run": False,  # the embedded simulator: live orders without the opt-in
                "storage": {"path": str(tmp_path / "var" / "bot.sqlite")},
                "log": {"json_file": str(tmp_path / "var" / "bot.jsonl")},
                "metrics": {"port": 0},
                "risk": {"kill_switch_file": str(tmp_path / "var" / "KILL")},
                "sim": {"start": "2026-11-20T15:00:00+00:00", "time_scale": 240, "seed": 11},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIONSBOT_")}
    env.update({"PYTHONPATH": str(ROOT), "OPTIONSBOT_BROKER__ACCOUNT": ACCOUNT})
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "run", "--config", str(cfg)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # The service's files must be private even when its parent's umask is not.
        preexec_fn=lambda: os.umask(0o022),
    )
    lines: list[str] = []
    rejected = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "Order rejected" in line:
                rejected.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert rejected.wait(90), "no rejection within 90 s:\n" + "".join(lines[-30:])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    out = "".join(lines)
    var = tmp_path / "var"
    db = var / "bot.sqlite"
    con = sqlite3.connect(db)
    reasons = [r for (r,) in con.execute("select reason from orders where state = 'rejected'")]
    con.close()
    assert reasons and all("Invalid account code ***" in r for r in reasons), reasons[:3]
    digits = ACCOUNT[1:]
    assert digits not in out, "the account id reached the console"
    for f in var.iterdir():
        assert digits.encode() not in f.read_bytes(), f"the account id is in {f.name}"
    # Private files, whatever the umask: the database, its WAL and SHM, the log, the directory.
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    for name in ("bot.sqlite", "bot.sqlite-wal", "bot.sqlite-shm", "bot.jsonl"):
        if (var / name).exists() or name == "bot.sqlite":
            assert stat.S_IMODE((var / name).stat().st_mode) == 0o600, name


def test_library_callers_get_private_files_under_umask_022(tmp_path):
    old = os.umask(0o022)
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        db = open_db(tmp_path / "new" / "bot.sqlite")
        db["kv"].insert({"key": "k", "value": "v", "updated_at": "now"})
        logs.setup("INFO", tmp_path / "logs" / "bot.jsonl", [ACCOUNT])
        logging.getLogger("optionsbot").info("account %s, another DU1234567", ACCOUNT)
        for h in root.handlers:
            h.flush()
        modes = {
            p.name: stat.S_IMODE(p.stat().st_mode)
            for p in [*(tmp_path / "new").iterdir(), *(tmp_path / "logs").iterdir()]
        }
        assert set(modes) >= {"bot.sqlite", "bot.sqlite-wal", "bot.sqlite-shm", "bot.jsonl"}
        assert set(modes.values()) == {0o600}, modes
        assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "logs").stat().st_mode) == 0o700
        text = (tmp_path / "logs" / "bot.jsonl").read_text()
        assert "7654321" not in text and "1234567" not in text and "***" in text
        db.close()
    finally:
        os.umask(old)
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in handlers:
            root.addHandler(h)


def test_storage_masks_an_account_that_reaches_it(tmp_path):
    from storage import JournalRepo, OrderRepo
    from storage.rows import Order

    db = open_db(tmp_path / "bot.sqlite")
    orders = OrderRepo(db)
    orders.insert(Order(order_ref="SPY-1-abc", symbol="SPY", action="BUY", quantity=1.0))
    orders.transition(
        "SPY-1-abc",
        "reject",
        "pending_submit",
        "rejected",
        {"why": "account DU1234567 cannot trade"},
        reason="201 Invalid account code DU1234567",
    )
    JournalRepo(db).decision(
        symbol="SPY", stage="order", outcome="skipped", reason="F9876543 has no permission"
    )
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"1234567" not in data and b"9876543" not in data
    assert b"SPY-1-abc" in data, "our own refs are kept as they are"

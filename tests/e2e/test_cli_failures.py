"""`optionsbot` as a careless user meets it: bad settings, a damaged database, a full disk.

Every failure is one line naming its cause and a non-zero exit, never a traceback; a bad
configuration exits 2 before anything opens (no file, no connection to the Gateway).
"""

from __future__ import annotations

import os
import resource
import select
import socket
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from storage import open_db

ROOT = Path(__file__).resolve().parents[2]
START = "2026-11-20T15:00:00+00:00"


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60, **kw):
    full_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("OPTIONSBOT_")}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    try:
        return subprocess.run(
            [sys.executable, "-m", "actors.cli", *args],
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"still running after {timeout}s: it started instead of refusing"
        ) from exc


@pytest.fixture
def gateway():
    """A socket where a Gateway would listen: a refused configuration never connects to it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    yield srv
    srv.close()


def connected(srv: socket.socket) -> bool:
    return bool(select.select([srv], [], [], 0.2)[0])


# -- bad configurations: exit 2, nothing opened ------------------------------------------------

LIVE = {"enabled": True, "confirm": "I accept real orders"}

CASES = {
    "duplicate-dry-run": (b"dry_run: true\ndry_run: false\n", "given twice", {}),
    "binary": (b"\x00\x01\xffbroker: {}\n", "binary", {}),
    "latin-1": (b"dry_run: true\n# caf\xe9\n", "UTF-8", {}),
    "inf-timeout": (b"broker: {connect_timeout_s: .inf}\n", "broker.connect_timeout_s", {}),
    "zero-timeout": (b"broker: {timeouts_s: {probe: 0}}\n", "broker.timeouts_s.probe", {}),
    "empty-kill-file": (b"risk: {kill_switch_file: ''}\n", "risk.kill_switch_file", {}),
    "dot-symbol": (b"symbols: ['.']\n", "symbols", {}),
    "windows-cover-session": (
        b"risk: {no_entry_first_minutes: 300, no_entry_last_minutes: 90}\n",
        "covers the whole",
        {},
    ),
    "misspelled-variable": (b"", "OPTIONSBOT_DRY_RUN", {"OPTIONSBOT_DRYRUN": "false"}),
    "live-without-opt-in": (
        b"dry_run: false\n",
        "live.confirm",
        {"OPTIONSBOT_BROKER__ACCOUNT": "U7654321"},
    ),
    "live-without-account": (
        b"dry_run: false\nlive: {enabled: true, confirm: 'I accept real orders'}\n",
        "broker.account",
        {},
    ),
    "live-on-delayed-data": (
        b"dry_run: false\nlive: {enabled: true, confirm: 'I accept real orders'}\n",
        "delayed quotes",
        {"OPTIONSBOT_BROKER__ACCOUNT": "U7654321", "OPTIONSBOT_BROKER__MARKET_DATA_TYPE": "3"},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_configuration_exits_2_before_anything_opens(tmp_path, gateway, case):
    extra, expected, env = CASES[case]
    port = gateway.getsockname()[1]
    # The Gateway section comes last so that a document's own keys are read first; the
    # default paths (var/...) are relative to the working directory, a fresh one.
    f = tmp_path / "c.yaml"
    head = (
        b"" if extra.startswith(b"\x00") else f"broker: {{mode: gateway, port: {port}}}\n".encode()
    )
    if extra.startswith(b"broker:"):
        head = b""
        extra = extra.replace(b"broker: {", f"broker: {{mode: gateway, port: {port}, ".encode())
    f.write_bytes(head + extra)
    before = sorted(tmp_path.rglob("*"))
    proc = cli("run", "--config", str(f), cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "U7654321" not in proc.stderr + proc.stdout
    assert sorted(tmp_path.rglob("*")) == before, "a refused configuration created a file"
    assert not connected(gateway), "a refused configuration connected to the Gateway"


@pytest.mark.parametrize("command", ["kill", "resume", "status"])
def test_kill_resume_and_status_refuse_an_empty_kill_file_setting(tmp_path, command):
    f = tmp_path / "c.yaml"
    f.write_text("risk: {kill_switch_file: ''}\n")
    proc = cli(command, "--config", str(f), cwd=tmp_path)
    assert proc.returncode == 2 and "risk.kill_switch_file: is empty" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_kill_and_resume_work_and_the_kill_file_is_private(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("risk: {kill_switch_file: state/KILL}\n")
    old = os.umask(0o022)
    try:
        proc = cli("kill", "--flatten", "--config", str(f), cwd=tmp_path)
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    kill = tmp_path / "state" / "KILL"
    assert stat.S_IMODE(kill.stat().st_mode) == 0o600
    assert stat.S_IMODE(kill.parent.stat().st_mode) == 0o700
    assert cli("resume", "--config", str(f), cwd=tmp_path).returncode == 0
    assert not kill.exists()


# -- start-up and run-time failures: one line, the cause, no traceback -------------------------


def service_config(tmp: Path, db: Path) -> Path:
    f = tmp / "c.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "storage": {"path": str(db)},
                "log": {"json_file": str(tmp / "bot.jsonl")},
                "metrics": {"port": 0},
                "risk": {"kill_switch_file": str(tmp / "KILL")},
                "sim": {"start": START, "time_scale": 60},
            }
        )
    )
    return f


def fresh_db(path: Path) -> None:
    db = open_db(path)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def one_line(stderr: str, marker: str, *expected: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [x for x in stderr.splitlines() if marker in x]
    assert len(lines) == 1, stderr
    for e in expected:
        assert e in lines[0], lines[0]
    return lines[0]


def corrupt_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = 4096
    for start in range(page, len(data), page):  # every page but the header's
        data[start : start + page] = b"\x17" * page
    path.write_bytes(bytes(data))


def test_a_damaged_database_stops_the_start_in_one_line(tmp_path):
    db = tmp_path / "bot.sqlite"
    fresh_db(db)
    corrupt_pages(db)
    proc = cli("run", "--config", str(service_config(tmp_path, db)), cwd=tmp_path)
    assert proc.returncode == 1
    one_line(proc.stderr, "start-up failed", f"database {db} is damaged", "malformed", "backup")
    assert "stopped before handling the message" not in proc.stderr


def test_a_renamed_column_stops_the_start_in_one_line(tmp_path):
    db = tmp_path / "bot.sqlite"
    fresh_db(db)
    con = sqlite3.connect(db)
    con.execute("alter table orders rename column state to status")
    con.commit()
    con.close()
    proc = cli("run", "--config", str(service_config(tmp_path, db)), cwd=tmp_path)
    assert proc.returncode == 1
    one_line(proc.stderr, "start-up failed", "does not have the schema", "no such column: state")
    assert "stopped before handling the message" not in proc.stderr


def _small_files() -> None:
    # A disk that fills at 24 kB: writes past it fail with EFBIG (Python ignores SIGXFSZ).
    resource.setrlimit(resource.RLIMIT_FSIZE, (24_000, 24_000))


def test_a_full_disk_stops_the_start_in_one_line(tmp_path):
    db = tmp_path / "bot.sqlite"
    proc = cli(
        "run", "--config", str(service_config(tmp_path, db)), cwd=tmp_path, preexec_fn=_small_files
    )
    assert proc.returncode == 1
    line = one_line(proc.stderr, "start-up failed", str(db))
    assert "disk" in line, line


def test_a_full_disk_for_the_log_is_one_line_too(tmp_path):
    f = tmp_path / "c.yaml"
    big = tmp_path / "bot.jsonl"
    big.write_bytes(b"{}\n" * 8_000)  # already at the limit: the first record cannot be written
    f.write_text(
        yaml.safe_dump(
            {
                "storage": {"path": str(tmp_path / "bot.sqlite")},
                "log": {"json_file": str(big)},
                "metrics": {"port": 0},
                "risk": {"kill_switch_file": str(tmp_path / "KILL")},
                "sim": {"start": START},
                "broker": {"connect_timeout_s": 1},
            }
        )
    )
    proc = cli("run", "--config", str(f), cwd=tmp_path, preexec_fn=_small_files)
    assert proc.returncode == 1
    one_line(proc.stderr, "cannot write the log", str(big), "File too large")
    one_line(proc.stderr, "start-up failed", "disk")


# -- status on a bad database --------------------------------------------------------------------


def _header_overwritten(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[:100] = b"\x42" * 100
    db.write_bytes(bytes(data))


def _table_dropped(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("drop table trading_days")
    con.commit()
    con.close()


def _emptied(db: Path) -> None:
    db.write_bytes(b"")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_header_overwritten, "not a database"),
        (corrupt_pages, "is damaged"),
        (_table_dropped, "no such table: trading_days"),
        (_emptied, "is empty"),
    ],
)
def test_status_on_a_bad_database_is_one_line(tmp_path, damage, expected):
    db = tmp_path / "bot.sqlite"
    fresh_db(db)
    damage(db)
    size = db.stat().st_size
    proc = cli("status", "--config", str(service_config(tmp_path, db)), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    one_line(proc.stderr, "optionsbot status:", str(db), expected)
    assert db.stat().st_size == size, "status changed the database it was reading"


def test_status_on_a_good_database_still_reports(tmp_path):
    db = tmp_path / "bot.sqlite"
    fresh_db(db)
    proc = cli("status", "--config", str(service_config(tmp_path, db)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "orders by state: {}" in proc.stdout


def test_status_says_entries_are_blocked_until_adopt_and_when_they_are_not(tmp_path):
    """The operator's first question after a lost database: is it refusing to trade, and why."""
    from storage import JournalRepo

    path = tmp_path / "bot.sqlite"
    db = open_db(path)
    journal = JournalRepo(db)
    why = "unvouched: the broker holds positions the database does not know (SPY 1)"
    journal.decision(symbol="*", stage="reconcile", outcome="blocked", reason=why)
    journal.decision(symbol="SPY", stage="risk_gate", outcome="skipped", reason=why)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    config = service_config(tmp_path, path)
    proc = cli("status", "--config", str(config), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ENTRIES BLOCKED since" in proc.stdout and why in proc.stdout
    assert "last decision:" in proc.stdout and "SPY risk_gate skipped" in proc.stdout
    # Adopted: the block's end is journaled, and status stops saying it.
    journal.decision(
        symbol="*", stage="reconcile", outcome="cleared", reason="vouched again (was unvouched)"
    )
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    proc = cli("status", "--config", str(config), cwd=tmp_path)
    assert proc.returncode == 0 and "BLOCKED" not in proc.stdout

"""The service under systemd's eyes: the notify protocol on a real NOTIFY_SOCKET, the watchdog
stopping when an actor hangs, backups and restores of a database the service is writing, the
unit file verified by systemd itself. The real service runs in a subprocess on the embedded
simulator; the test plays systemd's part of the protocol (a datagram socket it reads)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WATCHDOG_USEC = 2_000_000  # a heartbeat every second (half of it)


class Service:
    """`optionsbot run` in a subprocess, with systemd's notify socket played by the test."""

    def __init__(self, workdir: Path, notify: bool = True, **env: str):
        self.workdir = workdir
        self.messages: list[tuple[float, str]] = []
        self.lines: list[str] = []
        self.got = threading.Condition()
        self.sock = None
        extra = {}
        if notify:
            # AF_UNIX paths are at most 107 bytes: pytest's tmp_path can be longer.
            self.sockdir = Path(tempfile.mkdtemp(prefix="nfy", dir="/tmp"))
            path = str(self.sockdir / "notify")
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(path)
            self.sock.settimeout(0.2)
            extra = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        self.env = {
            **{
                k: v for k, v in os.environ.items() if not k.startswith(("OPTIONSBOT_", "WATCHDOG"))
            },
            "OPTIONSBOT_STORAGE__PATH": str(workdir / "bot.sqlite"),
            "OPTIONSBOT_STORAGE__BACKUP_DIR": str(workdir / "nightly"),
            "OPTIONSBOT_LOG__JSON_FILE": str(workdir / "bot.jsonl"),
            "OPTIONSBOT_METRICS__PORT": "0",
            "OPTIONSBOT_RISK__KILL_SWITCH_FILE": str(workdir / "KILL"),
            "OPTIONSBOT_SIM__TIME_SCALE": "120",
            "OPTIONSBOT_SIM__START": "2026-11-20T15:00:00+00:00",
            # Live on the embedded simulator: the service reconciles with the broker before READY.
            "OPTIONSBOT_DRY_RUN": "false",
            **extra,
            **env,
        }
        self.env.pop("JOURNAL_STREAM", None)

    def __enter__(self) -> Service:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "actors.cli", "run"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        if self.sock is not None:
            threading.Thread(target=self._read_socket, daemon=True).start()
        return self

    def _read_log(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def _read_socket(self) -> None:
        while self.proc.poll() is None or self.sock.fileno() >= 0:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                if self.proc.poll() is not None:
                    return
                continue
            except OSError:
                return
            if data.startswith(b"READY=1"):
                # What the JSON log held at the moment READY arrived.
                self.log_at_ready = (self.workdir / "bot.jsonl").read_text()
            with self.got:
                self.messages.append((time.monotonic(), data.decode()))
                self.got.notify_all()

    def wait_for(self, predicate, timeout: float) -> bool:
        with self.got:
            return self.got.wait_for(lambda: predicate(self.messages), timeout)

    def log(self) -> str:
        return "".join(self.lines[-60:])

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.sock is not None:
            self.sock.close()
            shutil.rmtree(self.sockdir, ignore_errors=True)


def _has(text: str):
    return lambda msgs: any(text in m for _, m in msgs)


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "actors.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ready_after_reconciliation_then_a_heartbeat_every_interval(tmp_path):
    with Service(tmp_path) as svc:
        assert svc.wait_for(_has("READY=1"), 90), "no READY=1:\n" + svc.log()
        # READY=1 only once OrderActor had reconciled: its log line was already written.
        assert "reconciliation done" in svc.log_at_ready
        ready_at = next(t for t, m in svc.messages if "READY=1" in m)
        assert svc.wait_for(
            lambda msgs: sum(1 for t, m in msgs if m == "WATCHDOG=1" and t > ready_at) >= 4, 30
        ), "heartbeats stopped:\n" + svc.log()
        beats = [t for t, m in svc.messages if m == "WATCHDOG=1" and t > ready_at]
        gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
        # Every second (WATCHDOG_USEC / 2), well inside systemd's 2 s.
        assert max(gaps) < WATCHDOG_USEC / 1e6, gaps
        before = [m for t, m in svc.messages if t < ready_at]
        assert all(not m.startswith("READY") for m in before)
        assert sum(1 for _, m in svc.messages if m.startswith("READY=1")) == 1
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(60) == 0, svc.log()
    assert any(m.startswith("STOPPING=1") for _, m in svc.messages)


def test_a_hung_actor_stops_the_heartbeat(tmp_path):
    with Service(tmp_path, OPTIONSBOT_DEBUG_HANG="risk") as svc:
        assert svc.wait_for(_has("READY=1"), 90), "no READY=1:\n" + svc.log()
        assert svc.wait_for(_has("not answering: risk"), 30), svc.log()
        hung_at = next(t for t, m in svc.messages if "not answering: risk" in m)
        # systemd would wait WatchdogSec (2 s here) for a heartbeat; give it twice that.
        time.sleep(4)
        after = [m for t, m in svc.messages if t > hung_at and m == "WATCHDOG=1"]
        assert after == [], "a heartbeat went out while an actor hung"
        assert svc.proc.poll() is None  # systemd, not the service, ends it (WatchdogSignal)
        assert "risk did not answer" in svc.log()


def test_the_hang_hook_is_refused_against_a_gateway(tmp_path):
    env = {
        **Service(tmp_path, notify=False).env,
        "OPTIONSBOT_DEBUG_HANG": "risk",
        "OPTIONSBOT_BROKER__MODE": "gateway",
        "OPTIONSBOT_DRY_RUN": "true",
    }
    done = _cli("run", env=env)
    assert done.returncode == 2
    assert "embedded simulator only" in done.stderr
    assert not (tmp_path / "bot.sqlite").exists()


def _counts(path: Path) -> tuple[int, int]:
    con = sqlite3.connect(path)
    try:
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
        return (
            con.execute("select count(*) from bars").fetchone()[0],
            con.execute("select coalesce(max(id), 0) from decisions").fetchone()[0],
        )
    finally:
        con.close()


def test_backup_while_the_service_writes_and_restore_only_when_it_is_stopped(tmp_path):
    out = tmp_path / "backups"
    svc = Service(
        tmp_path,
        notify=False,
        # Every bar recorded, at 600x: the service commits several times a second.
        OPTIONSBOT_DATA__RECORD_BARS="true",
        OPTIONSBOT_SIM__TIME_SCALE="600",
        OPTIONSBOT_DRY_RUN="true",
    )
    with svc:
        db = tmp_path / "bot.sqlite"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (db.exists() and _bars(db) > 50):
            time.sleep(0.2)
        assert _bars(db) > 50, svc.log()
        made = []
        for _ in range(3):
            # Live bars keep coming: each backup is taken while rows are being added.
            assert _grows(db, within=60), "no live bars recorded:\n" + svc.log()
            done = _cli("backup", "--out", str(out), "--keep", "2", env=svc.env)
            assert done.returncode == 0, done.stderr
            made.append(Path(done.stdout.split("backup written: ")[1].split(" ")[0]))
            time.sleep(1.1)  # backups are named by the second
        kept = sorted(out.iterdir())
        assert kept == made[1:], "keep 2: the oldest is pruned, nothing else"
        for f in kept:
            assert oct(f.stat().st_mode & 0o777) == "0o600"
        first, second = (_counts(f) for f in kept)
        assert second[0] > first[0] > 50, "each backup is a later consistent snapshot"
        # A restore under the running service is refused, and the database is left alone.
        done = _cli("restore", str(kept[0]), env=svc.env)
        assert done.returncode == 1
        assert "running" in done.stderr and "stop" in done.stderr, done.stderr
        svc.proc.send_signal(signal.SIGINT)
        assert svc.proc.wait(60) == 0, svc.log()
    live = _counts(db)
    assert live[0] > second[0]
    # The database now holds history the older backup lacks: refused without --force.
    done = _cli("restore", str(kept[0]), env=svc.env)
    assert done.returncode == 1 and "--force" in done.stderr, done.stderr
    assert _counts(db) == live
    done = _cli("restore", str(kept[0]), "--force", env=svc.env)
    assert done.returncode == 0, done.stderr
    assert _counts(db) == first
    assert not Path(f"{db}-wal").exists(), "an old -wal beside the restored file would be replayed"
    (aside,) = tmp_path.glob("bot.sqlite.before-restore-*")
    assert _counts(aside) == live, "the replaced database is kept"
    # The service starts on the restored file.
    with Service(tmp_path, OPTIONSBOT_DRY_RUN="true") as again:
        assert again.wait_for(_has("READY=1"), 90), again.log()


def _grows(db: Path, within: float) -> bool:
    start, deadline = _bars(db), time.monotonic() + within
    while time.monotonic() < deadline:
        if _bars(db) > start:
            return True
        time.sleep(0.2)
    return False


def _bars(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("select count(*) from bars").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_a_second_service_on_the_same_database_is_refused(tmp_path):
    with Service(tmp_path) as first:
        assert first.wait_for(_has("READY=1"), 90), first.log()
        second = _cli("run", env={**first.env, "NOTIFY_SOCKET": ""})
        assert second.returncode == 1
        assert "another optionsbot (pid" in second.stderr + second.stdout
        assert str(first.proc.pid) in second.stderr + second.stdout


def test_the_generated_unit_passes_systemd_analyze_verify(tmp_path):
    unit = tmp_path / "optionsbot.service"
    env = {**Service(tmp_path, notify=False).env}
    done = _cli("install-service", "--user", "optionsbot", "--output", str(unit), env=env)
    assert done.returncode == 0, done.stderr
    text = unit.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "User=optionsbot",
        "UMask=0077",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        f"ReadWritePaths={tmp_path}",
        f"WorkingDirectory={ROOT}",
    ):
        assert line in text, line
    assert "@" not in "".join(x for x in text.splitlines() if not x.startswith("#"))
    for d in (tmp_path / "nightly",):
        assert d.is_dir()
    check = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on an unknown key or a bad value, and says so: both must be silent.
    assert check.returncode == 0 and check.stderr.strip() == "", check.stderr


def test_the_service_backs_up_on_its_schedule_while_it_runs(make_settings, tmp_path, caplog):
    from datetime import timedelta

    from actors.metrics import Metrics, new_registry
    from actors.system import System
    from storage.backup import backups

    out = tmp_path / "nightly"
    settings = make_settings(
        storage={"backup_dir": str(out), "backup_keep": 2},
        sim={"time_scale": 240, "start": "2026-11-20T15:00:00+00:00"},
        data={"record_bars": True},
    )
    system = System(settings, metrics=Metrics(new_registry()))
    # "Nightly" every half second: the schedule itself is next_run's (tests/storage).
    system.backup_schedule = lambda now, at: now + timedelta(seconds=0.5)
    caplog.set_level("INFO", logger="optionsbot.system")
    system.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "nightly backup written" not in caplog.text:
            time.sleep(0.2)
        time.sleep(2.5)  # a few more, so the pruning shows
        assert not system.failed.is_set(), system.failure
    finally:
        system.stop()
    kept = backups(out, "bot")
    assert len(kept) == 2, kept
    assert caplog.text.count("nightly backup written") >= 3
    for f in kept:
        _counts(f)  # each one passes integrity_check
    assert not system._backuper.is_alive(), "the backup thread stops with the service"

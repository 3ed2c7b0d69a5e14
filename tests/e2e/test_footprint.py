"""The service's footprint on a Pi: in gateway mode it loads neither the simulator nor scipy nor
pandas, and at 50 symbols it stays under 100 MB resident (the multi-day figure is
`python -m bench.soak --days 5`)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.soak import NAMES, rss_kib

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("scipy", "pandas", "sim", "exchange_calendars")


def test_the_gateway_mode_import_path_loads_no_simulator_scipy_or_pandas(tmp_path):
    # Everything `optionsbot run` imports in gateway mode, the System built, in a fresh process.
    code = f"""
import json, sys
from actors.cli import main  # noqa
from actors import logs, notify, system
from configs.settings import load_settings
from storage import backup, lock
import yaml, pathlib
p = pathlib.Path({str(tmp_path)!r}) / "c.yaml"
p.write_text(yaml.safe_dump({{"broker": {{"mode": "gateway"}},
    "storage": {{"path": str(p.parent / "bot.sqlite")}}, "log": {{"json_file": None}},
    "risk": {{"kill_switch_file": str(p.parent / "KILL")}}}}))
s = system.System(load_settings(p, environ={{}}))
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "actors" in loaded and "ib_async" in loaded  # it did import the service
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_fifty_symbols_in_gateway_mode_stay_under_100_mb(tmp_path):
    names = NAMES[:50]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIONSBOT_", "NOTIFY"))}
    sim = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "sim", "--port", "0", "--time-scale", "120"]
        + ["--start", "2026-11-20T10:00:00", "--log-level", "WARNING", "--symbols", *names],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sockdir = Path(tempfile.mkdtemp(prefix="fp", dir="/tmp"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sockdir / "n"))
    sock.settimeout(1)
    service = None
    try:
        line = sim.stdout.readline()
        port = line.split("listening on ")[1].split(" ")[0].rsplit(":", 1)[1]
        threading.Thread(target=lambda: [None for _ in sim.stdout], daemon=True).start()
        service = subprocess.Popen(
            [sys.executable, "-m", "actors.cli", "run"],
            cwd=ROOT,
            env={
                **env,
                "NOTIFY_SOCKET": str(sockdir / "n"),
                "OPTIONSBOT_SYMBOLS": json.dumps(names),
                "OPTIONSBOT_BROKER__MODE": "gateway",
                "OPTIONSBOT_BROKER__PORT": port,
                "OPTIONSBOT_BROKER__CLOCK_SCALE": "120",
                "OPTIONSBOT_STORAGE__PATH": str(tmp_path / "bot.sqlite"),
                "OPTIONSBOT_LOG__JSON_FILE": str(tmp_path / "bot.jsonl"),
                "OPTIONSBOT_LOG__LEVEL": "WARNING",
                "OPTIONSBOT_METRICS__PORT": "0",
                "OPTIONSBOT_RISK__KILL_SWITCH_FILE": str(tmp_path / "KILL"),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        ready = False
        while time.monotonic() < deadline and not ready and service.poll() is None:
            try:
                ready = sock.recv(4096).startswith(b"READY=1")
            except TimeoutError:
                pass
        assert ready, "the service did not become ready"
        # Backfilled, streaming and choosing options: half a simulated hour after READY.
        peak = 0
        end = time.monotonic() + 15
        while time.monotonic() < end:
            peak = max(peak, rss_kib(service.pid))
            time.sleep(0.5)
        maps = Path(f"/proc/{service.pid}/maps").read_text()
        assert service.poll() is None
    finally:
        for proc in (service, sim):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        sock.close()
    # The real process: no compiled module of scipy or pandas was loaded (numpy's own OpenBLAS
    # is named libscipy_openblas, so match the package directories).
    assert "/site-packages/scipy/" not in maps and "/site-packages/pandas/" not in maps
    print(f"\n50 symbols, gateway mode: peak RSS {peak / 1024:.1f} MB")
    assert peak < 100 * 1024, f"{peak / 1024:.1f} MB"

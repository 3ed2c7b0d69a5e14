"""`optionsbot history fetch`: 1-minute bars from a real Gateway, for a backtest on real history.

One request per symbol and trading day (TRADES, regular hours, `endDateTime` that session's
close as `YYYYMMDD-HH:MM:SS`, which IB reads as UTC; "1 D"), paced by the service's own
HistoricalPacer (actors/pacing.py: no identical request within 15 s, fewer than 6 per contract
in 2 s; the 60-in-10-minutes rule is IB's for bars of 30 s or less, so 1-minute bars are not
held to it, see /work/shared/IBKR.md "Pacing and limits"). A pacing violation (error 162) is
backed off and asked again. Resumable: each finished (symbol, day) is appended to the CSV,
flushed to disk, and then listed in `FILE.done`; a second run asks only for what is not listed.
Only whole sessions are fetched (the one still trading is left for a later run).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from actors.hours import MarketHours, Session
from actors.pacing import HistoricalPacer
from backtest.bars import COLUMNS

log = logging.getLogger("optionsbot.history")

PACING_VIOLATION = 162
NO_DATA = 162  # IB answers "HMDS query returned no data" with 162 too: told apart by its text
BACKOFF_S = 60.0
TRIES = 3
CLIENT_ID_OFFSET = 50  # beside the service's own client ids, not among them


@dataclass
class FetchResult:
    requests: int = 0
    bars: int = 0
    skipped_done: int = 0
    empty: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)


def read_done(path: Path) -> set[tuple[str, str]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return set()
    return {(p[0], p[1]) for p in (line.split() for line in lines) if len(p) >= 2}


def _append_durably(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def sessions_to_fetch(hours: MarketHours, now: datetime, days: int) -> list[Session]:
    """The last `days` whole sessions before `now`, oldest first."""
    done = [s for s in hours.sessions if s.close <= now]
    return done[-days:] if days > 0 else []


async def fetch(
    ib: Any,
    symbols: list[str],
    days: int,
    out: Path,
    hours: MarketHours,
    pacer: HistoricalPacer | None = None,
    progress: Callable[[str], None] | None = None,
    backoff_s: float = BACKOFF_S,
    timeout: float = 60.0,
) -> FetchResult:
    from ib_async import Stock

    pacer = pacer or HistoricalPacer()
    result = FetchResult()
    done_path = out.with_name(out.name + ".done")
    done = read_done(done_path)
    now = await ib.reqCurrentTimeAsync()  # the Gateway's clock decides which days are whole
    sessions = sessions_to_fetch(hours, now.astimezone(UTC), days)
    errors: list[tuple[int, int, str]] = []

    def on_error(req_id: int, code: int, text: str, contract: Any) -> None:
        errors.append((req_id, code, text))

    ib.errorEvent += on_error
    if not out.exists() or out.stat().st_size == 0:
        _append_durably(out, ",".join(COLUMNS) + "\n")
    contracts: dict[str, Any] = {}
    try:
        for session in sessions:
            day = session.date.isoformat()
            for symbol in symbols:
                if (symbol, day) in done:
                    result.skipped_done += 1
                    continue
                if symbol not in contracts:
                    qualified = await ib.qualifyContractsAsync(Stock(symbol, "SMART", "USD"))
                    if not qualified or not getattr(qualified[0], "conId", 0):
                        result.failed.append((symbol, day, "unknown symbol"))
                        continue
                    contracts[symbol] = qualified[0]
                bars, why = await _one_day(
                    ib, contracts[symbol], session, pacer, errors, result, backoff_s, timeout
                )
                if bars is None:
                    result.failed.append((symbol, day, why))
                    log.warning("%s %s: not fetched: %s", symbol, day, why)
                    continue
                rows = [b for b in bars if session.open <= _utc(b.date) < session.close]
                buf = []
                for b in rows:
                    buf.append(
                        f"{symbol},{_utc(b.date).isoformat()},{b.open!r},{b.high!r},{b.low!r},"
                        f"{b.close!r},{float(b.volume)!r}\n"
                    )
                _append_durably(out, "".join(buf))
                _append_durably(done_path, f"{symbol} {day} {len(rows)}\n")
                result.bars += len(rows)
                if not rows:
                    result.empty.append((symbol, day))
                if progress is not None:
                    progress(f"{symbol} {day}: {len(rows)} bars")
    finally:
        ib.errorEvent -= on_error
    return result


def _utc(t: Any) -> datetime:
    if isinstance(t, datetime):
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)
    return datetime(t.year, t.month, t.day, tzinfo=UTC)


async def _one_day(ib, contract, session, pacer, errors, result, backoff_s, timeout):
    end = session.close.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S")
    why = ""
    for attempt in range(TRIES):
        delay = pacer.reserve(
            (contract.symbol, end), (contract.symbol, "TRADES"), time.monotonic(), small_bars=False
        )
        if delay > 0:
            await asyncio.sleep(delay)
        errors.clear()
        result.requests += 1
        bars = await ib.reqHistoricalDataAsync(
            contract,
            endDateTime=end,
            durationStr="1 D",
            barSizeSetting="1 min",
            whatToShow="TRADES",
            useRTH=True,
            formatDate=2,
            timeout=timeout,
        )
        codes = {code: text for _, code, text in errors}
        if bars:
            return list(bars), ""
        text = codes.get(PACING_VIOLATION, "")
        if PACING_VIOLATION in codes and "pacing" in text.lower():
            why = "pacing violation (162)"
            log.warning(
                "%s %s: IB refused for pacing (162); waiting %.0fs (attempt %d of %d)",
                contract.symbol,
                session.date,
                backoff_s,
                attempt + 1,
                TRIES,
            )
            await asyncio.sleep(backoff_s)
            continue
        if NO_DATA in codes and "no data" in text.lower():
            return [], ""
        if codes:
            code, text = next(iter(codes.items()))
            return None, f"IB {code}: {text}"
        return None, f"no answer in {timeout:g}s"
    return None, why


def main(argv: list[str]) -> int:
    from actors.cli import _load
    from configs.settings import SYMBOL_CHARS

    p = argparse.ArgumentParser(
        prog="optionsbot history",
        description="Fetch 1-minute bars from the Gateway for `optionsbot backtest --bars`.",
    )
    sub = p.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fetch", help="1-minute bars of the last whole sessions to a CSV")
    f.add_argument("--config", "-c", help="YAML settings file (default: configs/default.yaml)")
    f.add_argument("--symbols", nargs="+", help="underlyings (default: the settings')")
    f.add_argument("--days", type=int, default=30, help="trading days back (default 30)")
    f.add_argument("--out", type=Path, required=True, help="CSV file (appended; resumable)")
    args = p.parse_args(argv)
    if not 1 <= args.days <= 3650:
        print("--days: between 1 and 3650", file=sys.stderr)
        return 2
    symbols = [s.strip().upper() for s in args.symbols or []]
    bad = [s for s in symbols if not s or set(s) - SYMBOL_CHARS or len(s) > 8]
    if bad:
        print(f"--symbols: {bad[0]!r} is not a US stock symbol (letters and '.')", file=sys.stderr)
        return 2
    settings = _load(args.config)
    symbols = symbols or list(settings.symbols)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("ib_async").setLevel(logging.CRITICAL)  # its failures are told once, below
    sim = None
    b = settings.broker
    host, port = b.host, b.port
    if b.mode == "embedded":
        # The simulator stands in for the Gateway: the same requests, the same pacing.
        from sim.config import SimOptions
        from sim.runner import EmbeddedSim

        start = settings.sim.start or datetime.now(UTC)
        sim = EmbeddedSim(SimOptions(seed=settings.sim.seed, start=start, symbols=tuple(symbols)))
        host, port = "127.0.0.1", sim.start(host="127.0.0.1", port=0)
    hours = MarketHours(cache=settings.storage.path.parent / "market-hours.json")
    try:
        result = asyncio.run(_run(host, port, b.client_id + CLIENT_ID_OFFSET, symbols, args, hours))
    except (ConnectionError, OSError, TimeoutError) as exc:
        print(
            f"optionsbot history: cannot reach the Gateway at {host}:{port}: {exc or type(exc).__name__}"
            " (is it running, with the API enabled?)",
            file=sys.stderr,
        )
        return 1
    finally:
        if sim is not None:
            sim.stop()
    print(
        f"history: {result.bars:,} bars in {result.requests} requests to {args.out}; "
        f"{result.skipped_done} symbol-days already there; {len(result.empty)} empty, "
        f"{len(result.failed)} failed"
    )
    for symbol, day, why in result.failed[:10]:
        print(f"  {symbol} {day}: {why} (run again to retry)")
    return 0 if not result.failed else 1


async def _run(host, port, client_id, symbols, args, hours) -> FetchResult:
    from ib_async import IB

    ib = IB()
    await ib.connectAsync(host, port, clientId=client_id, timeout=15, readonly=True)
    try:
        return await fetch(
            ib, symbols, args.days, args.out, hours, progress=lambda line: print("  " + line)
        )
    finally:
        ib.disconnect()

"""Recorded 1-minute bars for a backtest: a CSV file or a service database's `bars` table.

CSV: a header with `symbol,time,open,high,low,close,volume` (any order, more columns allowed),
`time` the bar's start in ISO 8601 with its zone (`2026-11-20T14:30:00+00:00`,
`2026-11-20 09:30:00-05:00`). A bad row is skipped, never guessed at: counted by reason, and
the first few of each reason logged with their line. The reasons are the DataActor's own
(`strategies.bars.bar_problem`) plus the ones only a file can have.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from storage.repos import recorded_bars
from strategies.bars import Bar, bar_problem

log = logging.getLogger("optionsbot.backtest")

COLUMNS = ("symbol", "time", "open", "high", "low", "close", "volume")
LOGGED_PER_REASON = 3


class BarsError(Exception):
    """The bars cannot be read at all (no file, no header, a missing column)."""


@dataclass
class Loaded:
    bars: dict[str, list[Bar]] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return sum(len(b) for b in self.bars.values())


def _number(text: str) -> float:
    # NaN and infinity parse: bar_problem names them (nan_price, nan_volume) as the DataActor does.
    return float(text)


def parse_row(row: dict[str, str]) -> tuple[str, Bar] | str:
    """(symbol, bar) from one record, or the reason it is unusable."""
    symbol = (row.get("symbol") or "").strip().upper()
    if not symbol:
        return "no_symbol"
    text = (row.get("time") or "").strip()
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return "bad_time"
    if t.tzinfo is None or t.utcoffset() is None:
        return "naive_time"
    if t.second or t.microsecond:
        return "not_on_a_minute"
    try:
        o, h, lo, c = (_number(row[k]) for k in ("open", "high", "low", "close"))
        v = _number(row["volume"])
    except (ValueError, TypeError, KeyError):
        return "not_a_number"
    bar = Bar(t.astimezone(UTC), o, h, lo, c, v)
    problem = bar_problem(bar, None)
    return problem if problem else (symbol, bar)


def validate(
    rows: Iterable[tuple[int, dict[str, str]]],
    symbols: Iterable[str] | None = None,
    is_open=None,
) -> Loaded:
    """Parse, check and order the records; `is_open(t)` keeps regular-hours bars only."""
    wanted = {s.upper() for s in symbols} if symbols else None
    out = Loaded()
    logged: Counter = Counter()

    def skip(line: int, reason: str) -> None:
        out.skipped[reason] += 1
        logged[reason] += 1
        if logged[reason] <= LOGGED_PER_REASON:
            log.warning("bars line %d skipped: %s", line, reason)

    parsed: dict[str, list[tuple[Bar, int]]] = {}
    for line, row in rows:
        got = parse_row(row)
        if isinstance(got, str):
            skip(line, got)
            continue
        symbol, bar = got
        if wanted is not None and symbol not in wanted:
            continue
        if is_open is not None and not is_open(bar.time):
            skip(line, "outside_regular_hours")
            continue
        parsed.setdefault(symbol, []).append((bar, line))
    for symbol in sorted(parsed):
        kept: list[Bar] = []
        for bar, line in sorted(parsed[symbol], key=lambda x: (x[0].time, x[1])):
            if kept and kept[-1].time == bar.time:
                skip(line, "duplicate")  # the first one in the file wins
                continue
            kept.append(bar)
        out.bars[symbol] = kept
    for reason, n in sorted(out.skipped.items()):
        if n > LOGGED_PER_REASON:
            log.warning("bars: %d rows skipped in all: %s", n, reason)
    return out


def load_csv(path: Path, symbols: Iterable[str] | None = None, is_open=None) -> Loaded:
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise BarsError(f"cannot read bars file {path}: {exc.strerror or exc}") from exc
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise BarsError(
                f"bars file {path}: no column {', '.join(missing)}; the header must name "
                f"{','.join(COLUMNS)}"
            )
        reader.fieldnames = header
        rows = ((i + 2, row) for i, row in enumerate(reader))
        return validate(rows, symbols, is_open)


def load_db(path: Path, symbols: Iterable[str] | None = None, is_open=None) -> Loaded:
    """The 1-minute bars a service recorded (`data.record_bars: true`)."""
    import sqlite3

    path = Path(path)
    if not path.is_file():
        raise BarsError(f"no database at {path}")
    try:
        records = recorded_bars(path)
    except sqlite3.Error as exc:
        raise BarsError(f"cannot read bars from database {path}: {exc}") from exc
    rows = (
        (i + 1, {k: ("" if v is None else str(v)) for k, v in zip(COLUMNS, r, strict=True)})
        for i, r in enumerate(records)
    )
    return validate(rows, symbols, is_open)


def load(path: Path, symbols: Iterable[str] | None = None, is_open=None) -> Loaded:
    """A CSV file, or a SQLite database (by its first bytes, not its name)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise BarsError(f"cannot read bars file {path}: {exc.strerror or exc}") from exc
    if head.startswith(b"SQLite format 3"):
        return load_db(path, symbols, is_open)
    return load_csv(path, symbols, is_open)

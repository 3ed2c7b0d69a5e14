"""Recorded bars for a backtest (backtest/bars.py): every bad row skipped with its reason,
every good one kept, whatever the file's order."""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.bars import COLUMNS, BarsError, load, load_csv, validate
from storage import open_db
from storage.repos import BarRepo
from strategies.bars import Bar

OPEN = datetime(2026, 11, 16, 14, 30, tzinfo=UTC)


def good_rows(n: int, symbol: str = "SPY", start: datetime = OPEN, price: float = 100.0):
    rows = []
    for i in range(n):
        t = start + timedelta(minutes=i)
        p = price + (i % 7) * 0.1
        rows.append(
            {
                "symbol": symbol,
                "time": t.isoformat(),
                "open": f"{p:.2f}",
                "high": f"{p + 0.3:.2f}",
                "low": f"{p - 0.3:.2f}",
                "close": f"{p + 0.1:.2f}",
                "volume": "1000",
            }
        )
    return rows


BREAKS = {
    "bad_time": lambda r: {**r, "time": "yesterday"},
    "naive_time": lambda r: {**r, "time": r["time"][:19]},
    "not_on_a_minute": lambda r: {**r, "time": r["time"][:17] + "30+00:00"},
    "not_a_number": lambda r: {**r, "close": "n/a"},
    "nan_price": lambda r: {**r, "high": "nan"},
    "non_positive_price": lambda r: {**r, "low": "-1", "open": "-1", "close": "-1", "high": "-1"},
    "negative_volume": lambda r: {**r, "volume": "-5"},
    "high_below_low": lambda r: {**r, "high": "1", "low": "2"},
    "outside_range": lambda r: {**r, "close": str(float(r["high"]) + 5)},
    "no_symbol": lambda r: {**r, "symbol": " "},
}


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(5, 40),
    broken=st.dictionaries(st.integers(0, 39), st.sampled_from(sorted(BREAKS)), max_size=8),
    dupes=st.sets(st.integers(0, 39), max_size=4),
    seed=st.integers(0, 10_000),
)
def test_each_bad_row_is_skipped_with_its_reason_and_the_rest_kept_in_order(n, broken, dupes, seed):
    rows = good_rows(n)
    broken = {i: why for i, why in broken.items() if i < n}
    for i, why in broken.items():
        rows[i] = BREAKS[why](rows[i])
    # A later copy of a good row is a duplicate; the first one in the file wins.
    copies = [dict(rows[i], volume="7") for i in sorted(dupes) if i < n and i not in broken]
    numbered = list(enumerate(rows + copies, start=2))
    random.Random(seed).shuffle(numbered)
    first_seen = {}
    for line, r in numbered:
        first_seen.setdefault(r["time"], line)
    loaded = validate(sorted(numbered))  # file order: by line number
    want = {}
    for why in broken.values():
        want[why] = want.get(why, 0) + 1
    if copies:
        want["duplicate"] = len(copies)
    assert dict(loaded.skipped) == want
    kept = loaded.bars.get("SPY", [])
    assert len(kept) == n - len(broken)
    assert [b.time for b in kept] == sorted({b.time for b in kept})
    assert all(b.volume == 1000 for b in kept)  # the copies (volume 7) came later in the file


def test_rows_in_any_order_give_the_same_bars():
    rows = good_rows(30) + good_rows(30, "QQQ", price=500.0)
    a = validate(enumerate(rows, start=2))
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    b = validate(enumerate(shuffled, start=2))
    assert a.bars == b.bars and set(a.bars) == {"SPY", "QQQ"}


def test_outside_regular_hours_and_unwanted_symbols_are_left_out(tmp_path):
    rows = good_rows(5, start=OPEN - timedelta(minutes=3)) + good_rows(3, "QQQ")
    loaded = validate(enumerate(rows, start=2), ["spy"], is_open=lambda t: t >= OPEN)
    assert set(loaded.bars) == {"SPY"} and len(loaded.bars["SPY"]) == 2
    assert loaded.skipped == {"outside_regular_hours": 3}


def write_csv(path, rows, header=COLUMNS):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def test_a_csv_with_zones_other_than_utc_is_read_as_the_same_instant(tmp_path):
    rows = good_rows(3)
    rows[0]["time"] = "2026-11-16T09:30:00-05:00"  # 14:30 UTC
    rows[1]["time"] = "2026-11-16 14:31:00Z"
    path = tmp_path / "bars.csv"
    write_csv(path, rows)
    loaded = load(path)
    assert [b.time for b in loaded.bars["SPY"]] == [OPEN + timedelta(minutes=i) for i in range(3)]
    assert loaded.skipped == {}


def test_a_missing_column_or_file_is_one_clear_error(tmp_path):
    path = tmp_path / "bars.csv"
    write_csv(path, good_rows(2), header=("symbol", "time", "open", "high", "low", "close"))
    with pytest.raises(BarsError, match="no column volume"):
        load_csv(path)
    with pytest.raises(BarsError, match="cannot read bars file"):
        load(tmp_path / "nope.csv")


def test_bars_a_service_recorded_are_read_without_writing_to_its_database(tmp_path):
    db_path = tmp_path / "service.sqlite"
    db = open_db(db_path)
    repo = BarRepo(db)
    for i in range(4):
        t = OPEN + timedelta(minutes=i)
        repo.record("SPY", "1 min", Bar(t, 100, 101, 99, 100.5, 10), live=True)
    repo.record("SPY", "1 hour", Bar(OPEN, 100, 101, 99, 100.5, 40), live=True)
    db.close()
    db_path.chmod(0o400)  # read-only: the loader must not need to write
    loaded = load(db_path)
    assert [b.time for b in loaded.bars["SPY"]] == [OPEN + timedelta(minutes=i) for i in range(4)]

"""bar_problem: one table row per reason, plus good bars."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from strategies.bars import BAR_PROBLEMS, Bar, bar_problem

T = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
GOOD = Bar(T, 100.0, 101.0, 99.0, 100.5, 1000.0)
PREV = replace(GOOD, time=T - timedelta(minutes=1))
NAN = float("nan")
INF = float("inf")

CASES = [
    ("good", GOOD, PREV, None),
    ("good without previous", GOOD, None, None),
    ("good, zero volume", replace(GOOD, volume=0.0), PREV, None),
    ("good, flat bar", Bar(T, 5.0, 5.0, 5.0, 5.0, 1.0), None, None),
    ("good, other tz", replace(GOOD, time=T.astimezone(timezone(timedelta(hours=-5)))), PREV, None),
    ("naive", replace(GOOD, time=T.replace(tzinfo=None)), PREV, "naive_time"),
    ("nan open", replace(GOOD, open=NAN), PREV, "nan_price"),
    ("nan high", replace(GOOD, high=NAN), PREV, "nan_price"),
    ("nan low", replace(GOOD, low=NAN), PREV, "nan_price"),
    ("nan close", replace(GOOD, close=NAN), PREV, "nan_price"),
    ("inf close", replace(GOOD, close=INF), PREV, "nan_price"),
    ("zero low", replace(GOOD, low=0.0), PREV, "non_positive_price"),
    ("negative open", replace(GOOD, open=-1.0), PREV, "non_positive_price"),
    ("nan volume", replace(GOOD, volume=NAN), PREV, "nan_volume"),
    ("negative volume", replace(GOOD, volume=-1.0), PREV, "negative_volume"),
    ("high below low", replace(GOOD, high=98.0, open=98.5, close=98.5), PREV, "high_below_low"),
    ("close above high", replace(GOOD, close=101.5), PREV, "outside_range"),
    ("open below low", replace(GOOD, open=98.0), PREV, "outside_range"),
    ("same time", GOOD, replace(GOOD, close=100.0), "duplicate"),
    ("earlier time", PREV, GOOD, "out_of_order"),
]


@pytest.mark.parametrize(
    ("bar", "previous", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bar_problem(bar, previous, expected):
    assert bar_problem(bar, previous) == expected


def test_every_reason_is_covered_and_listed():
    assert {c[3] for c in CASES} - {None} == set(BAR_PROBLEMS)


def test_naive_previous_skips_ordering_instead_of_raising():
    naive_prev = replace(GOOD, time=T.replace(tzinfo=None))
    assert bar_problem(GOOD, naive_prev) is None


def test_typical_price():
    assert GOOD.typical_price == pytest.approx((101.0 + 99.0 + 100.5) / 3)

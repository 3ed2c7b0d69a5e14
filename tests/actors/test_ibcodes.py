"""IB's error codes: one table, each code in one metric class."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.ibcodes import (
    CANCEL_REFUSED,
    ENTITLEMENT,
    ERROR_CLASSES,
    FARM_BROKEN,
    FARM_OK,
    NO_DELAYED,
    ORDER_REJECTED,
    error_class,
    error_code,
)


def test_the_metric_classes_are_the_ones_the_dashboards_were_built_on():
    assert ERROR_CLASSES == {
        "connectivity": {502, 504, 326, 1100, 1101, 1102, 1300, 10197},
        "farm": {2103, 2104, 2105, 2106, 2107, 2108, 2157, 2158},
        "entitlement": {354, 10089, 10090, 10091, 10167, 10168, 10186},
        "historical": {162, 165, 366},
        "pacing": {100, 101},
        "contract": {200},
        "order": {103, 110, 201, 202, 321, 399, 10147, 10148},
    }


def test_no_code_is_in_two_classes_and_every_farm_outage_has_its_ok():
    seen = [c for codes in ERROR_CLASSES.values() for c in codes]
    assert len(seen) == len(set(seen))
    assert sorted(FARM_BROKEN.values()) == sorted(FARM_OK.values())
    assert NO_DELAYED <= ENTITLEMENT <= ERROR_CLASSES["entitlement"]


@given(st.integers(0, 20000))
def test_every_code_has_a_class(code):
    assert error_class(code) in {*ERROR_CLASSES, "info", "other"}


def test_a_status_reason_leads_with_its_code():
    assert error_code("201 Order rejected - reason: no margin") == ORDER_REJECTED
    assert error_code("10148 OrderId 7 that needs to be cancelled cannot be cancelled") in (
        CANCEL_REFUSED
    )
    assert error_code("not sent: not connected") is None
    assert error_code("") is None and error_code(None) is None


@pytest.mark.parametrize(
    ("code", "text", "cls"),
    [
        # A real Gateway's answers to our own cancels (IB's message codes; ib_insync #268).
        (
            162,
            "Historical Market Data Service error message:API historical data query cancelled: 7",
            "info",
        ),
        (366, "No historical data query found for ticker id:7", "info"),
        # A pacing violation is a 162 too, and must still count (and alert).
        (
            162,
            "Historical Market Data Service error message:Historical data request pacing violation",
            "historical",
        ),
        (162, "HMDS query returned no data", "historical"),
    ],
)
def test_the_answer_to_a_cancel_is_not_a_fault(code, text, cls):
    assert error_class(code, text) == cls

"""SIGKILL anywhere on the order path, 100 times: nothing duplicated, lost or left unprotected."""

import json

import pytest

from actors.crash import POINTS
from bench.crash import crash_test


@pytest.mark.timeout(420)  # 100 service starts on a shared 2-core machine
def test_a_hundred_kills_lose_and_duplicate_nothing(tmp_path):
    summary = crash_test(runs=100, lanes=4, per_run_s=6.0, seed=7, workdir=tmp_path)
    print("\ncrash test:", json.dumps(summary, indent=2))
    assert summary["runs"] == 100
    assert set(summary["crashed_at_point"]) == set(POINTS), "every crash point was reached"
    assert summary["orders_at_broker"] > 50 and summary["executions_at_broker"] > 10, (
        "the order path was exercised"
    )
    assert summary["duplicate_orders"] == 0
    assert summary["lost_fills"] == 0
    assert summary["phantom_fills"] == 0
    assert summary["unprotected_positions"] == 0
    assert summary["unsettled_orders"] == 0
    assert summary["foreign_orders"] == 0
    assert summary["stacked_entries"] == 0
    assert summary["problems"] == []


@pytest.mark.timeout(300)
def test_positions_carried_over_a_weekend_keep_their_protection_at_the_broker(tmp_path):
    """The overnight lane: killed or stopped on a Friday afternoon, no service over the weekend,
    Monday's broker still covers every position; after the restart, everything checks out."""
    from bench.crash import overnight_test

    summary = overnight_test(runs=2, lanes=2, seed=5, workdir=tmp_path)
    print("\novernight lane:", json.dumps(summary, indent=2))
    assert summary["runs"] == 2 and summary["killed_randomly"] == 1
    assert summary["positions_over_weekend"] > 0, "positions were carried over the weekend"
    assert summary["unprotected_over_weekend"] == 0
    assert summary["unprotected_positions"] == 0
    assert summary["duplicate_orders"] == 0
    assert summary["lost_fills"] == 0
    assert summary["unsettled_orders"] == 0
    assert summary["foreign_orders"] == 0
    assert summary["stacked_entries"] == 0
    assert summary["problems"] == []

"""SIGKILL anywhere on the order path, 100 times: nothing duplicated, lost or left unprotected."""

import json

import pytest

from actors.crash import POINTS
from bench.crash import DAMAGES, crash_test, lost_database_lane


@pytest.mark.timeout(300)  # 32 service starts on a shared 2-core machine
def test_kills_at_every_crash_point_lose_and_duplicate_nothing(tmp_path):
    """The suite's short version of `python -m bench.crash --runs 100` (its figures are in the
    README): every crash point several times, the same zeros asserted."""
    summary = crash_test(runs=32, lanes=4, per_run_s=6.0, seed=7, workdir=tmp_path)
    print("\ncrash test:", json.dumps(summary, indent=2))
    assert summary["runs"] == 32
    assert set(summary["crashed_at_point"]) == set(POINTS), "every crash point was reached"
    assert min(summary["crashed_at_point"].values()) >= 3, "each point more than once"
    assert summary["orders_at_broker"] > 15 and summary["executions_at_broker"] > 3, (
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
@pytest.mark.parametrize("damage", DAMAGES)
def test_database_lost_lane(tmp_path, damage):
    """The broker keeps a protected position; the database is lost one way; the service restarts
    against the same broker: no entry until `optionsbot adopt`, which records what it holds."""
    out = lost_database_lane(damage, tmp_path)
    print(f"\ndatabase lost ({damage}):", json.dumps(out, indent=2))
    assert out["positions_before"] >= 1
    # Refused, not placed: signals reached the risk gate after the restart and met the block.
    assert out["entries_refused"] >= 1
    assert out["new_entries"] == []
    [reason] = out["blocked_journaled"]
    assert (
        reason.startswith("unknown_broker_state: the broker holds") and "optionsbot adopt" in reason
    )
    assert out["unvouched_gauge"] >= 1
    # Adopted: every position the broker holds is in the positions table; the block is gone.
    assert out["adopt_rc"] == 0 and "adopted" in out["adopt_output"], out["adopt_output"]
    assert out["broker_positions"] >= 1 and out["positions_unrecorded"] == []
    assert out["positions_without_exits_in_db"] == []
    assert out["unprotected_after_adopt"] == []
    assert out["cleared_journaled"] == 1 and out["unvouched_gauge_after"] == 0
    # The loss guard starts from the broker's start of day (the simulator's starting cash: its
    # reqPnL counts from there), not from the equity the restart found.
    assert out["start_equity"] == pytest.approx(100_000.0, abs=0.01)
    assert out["exit_code"] == 0


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

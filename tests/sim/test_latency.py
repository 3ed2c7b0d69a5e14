"""The latency model: seeded lognormal delays by median and p99, profiles, and their validation."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.faults import Scenario, ScenarioError
from sim.latency import LATENCY_KINDS, PROFILES, SNAPSHOT_LIMIT, Delay, Latency, LatencyOptions


@settings(max_examples=30, deadline=None)
@given(
    median=st.floats(0.01, 5.0),
    spread=st.floats(1.0, 20.0),
    seed=st.integers(0, 2**32),
)
def test_draws_have_the_configured_median_and_p99(median, spread, seed):
    d = Delay(median, median * spread)
    rng = random.Random(seed)
    draws = sorted(d.draw(rng) for _ in range(4000))
    assert all(x >= 0 for x in draws)
    got_median = statistics.median(draws)
    assert abs(got_median / median - 1) < 0.12 * max(1.0, spread**0.3)
    p99 = draws[int(0.99 * len(draws))]
    assert median * spread / 1.8 <= p99 <= median * spread * 1.8
    assert max(draws) <= 3 * median * spread + 1e-9


def test_same_seed_same_delays_and_kinds_do_not_disturb_each_other():
    opts = LatencyOptions(profile="realistic")
    a, b = Latency(opts, seed=7), Latency(opts, seed=7)
    first = [a.draw("historical") for _ in range(5)]
    for _ in range(9):
        b.draw("contract_details")  # other kinds' draws change nothing for history
    assert [b.draw("historical") for _ in range(5)] == first
    assert Latency(opts, seed=8).draw("historical") != first[0]


def test_instant_is_the_default_and_realistic_snapshots_end_within_11s():
    assert LatencyOptions().instant
    assert all(LatencyOptions().delay(k).draw(random.Random(1)) == 0 for k in LATENCY_KINDS)
    real = Latency(LatencyOptions(profile="realistic"), seed=1)
    snaps = [real.draw("snapshot") for _ in range(2000)]
    assert max(snaps) <= SNAPSHOT_LIMIT and statistics.median(snaps) > 1.0
    assert set(PROFILES["realistic"]) == set(LATENCY_KINDS)


def test_scenario_latency_key_and_its_errors():
    sc = Scenario.from_yaml("latency: {profile: realistic, historical: {median: 2, p99: 9}}")
    assert sc.latency is not None and sc.latency.profile == "realistic"
    assert sc.latency.delay("historical") == Delay(2, 9)
    assert sc.latency.delay("sec_def") == PROFILES["realistic"]["sec_def"]
    from sim.config import SimOptions

    assert sc.apply(SimOptions()).latency is sc.latency
    assert Scenario.from_yaml("latency: realistic").latency.profile == "realistic"
    for text, words in (
        ("latency: slow", "latency profile must be one of"),
        ("latency: {histroical: {median: 1}}", "latency.histroical: unknown request kind"),
        ("latency: {historical: {median: 2, p99: 1}}", "must not be below the median"),
        ("latency: {historical: 3}", "expected {median: seconds, p99: seconds}"),
    ):
        with pytest.raises(ScenarioError, match=words.replace("{", r"\{").replace("}", r"\}")):
            Scenario.from_yaml(text)

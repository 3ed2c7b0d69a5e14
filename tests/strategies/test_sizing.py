"""Sizing: the x100 multiplier, risk budget, caps, and 0 (never a forced 1) with the reason."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies.sizing import size_position


@pytest.mark.parametrize(
    ("args", "contracts", "code"),
    [
        # equity, risk, premium, multiplier, stop, max_contracts, max_premium
        ((100_000, 0.01, 2.00, 100, 0.50, 10, 10_000), 10, "ok"),  # 1000 / 100 = 10
        ((100_000, 0.01, 2.00, 100, 0.50, 3, 10_000), 3, "ok"),  # max_contracts binds
        ((100_000, 0.01, 2.00, 100, 0.50, 10, 1_000), 5, "ok"),  # max_premium binds: 1000 / 200
        ((10_000, 0.01, 2.00, 100, 0.50, 10, 10_000), 1, "ok"),  # exactly one contract's risk
        # the predecessor's bug: without x100 this would be 100 contracts; with it, 0
        ((10_000, 0.01, 2.50, 100, 0.50, 10, 10_000), 0, "risk_budget"),
        ((100_000, 0.01, 25.00, 100, 0.20, 10, 2_000), 0, "max_premium"),
        ((100_000, 0.01, 2.00, 100, 0.50, 0, 10_000), 0, "invalid_input"),
        ((math.nan, 0.01, 2.00, 100, 0.50, 10, 10_000), 0, "invalid_input"),
        ((100_000, 0.01, math.inf, 100, 0.50, 10, 10_000), 0, "invalid_input"),
        ((100_000, 0.01, 0.0, 100, 0.50, 10, 10_000), 0, "invalid_input"),
        ((-5.0, 0.01, 2.00, 100, 0.50, 10, 10_000), 0, "invalid_input"),
        ((100_000, 0.01, 2.00, 0, 0.50, 10, 10_000), 0, "invalid_input"),
        ((100_000, 1.5, 2.00, 100, 0.50, 10, 10_000), 0, "invalid_input"),
        ((100_000, 0.01, 2.00, 100, None, 10, 10_000), 0, "invalid_input"),
    ],
)
def test_size_position_table(args, contracts, code):
    sizing = size_position(*args)
    assert sizing.contracts == contracts
    assert sizing.code == code, sizing.reason


def test_reason_names_the_limit_and_risk_per_contract_includes_multiplier():
    sizing = size_position(10_000, 0.01, 2.50, 100, 0.50, 10, 10_000)
    assert sizing.risk_per_contract == pytest.approx(125.0)
    assert "$125.00" in sizing.reason and "budget $100.00" in sizing.reason
    ok = size_position(100_000, 0.01, 2.00, 100, 0.50, 3, 10_000)
    assert "max_contracts 3" in ok.reason


def test_float_noise_does_not_lose_a_contract():
    # 0.1 * 3 premium: 300 budget / (0.30000000000000004 * 100 * 1.0) is 9.999999999999998
    assert size_position(30_000, 0.01, 0.1 * 3, 100, 1.0, 100, 1e9).contracts == 10


@given(
    equity=st.floats(100, 5e6),
    risk=st.floats(0.001, 0.2),
    premium=st.floats(0.01, 50),
    multiplier=st.sampled_from([1, 10, 100]),
    stop=st.floats(0.05, 1.0),
    max_contracts=st.integers(1, 100),
    max_premium=st.floats(10, 1e5),
)
def test_sizing_properties(equity, risk, premium, multiplier, stop, max_contracts, max_premium):
    s = size_position(equity, risk, premium, multiplier, stop, max_contracts, max_premium)
    budget = equity * risk
    per_contract_risk = premium * multiplier * stop
    assert s.risk_per_contract == pytest.approx(per_contract_risk)
    assert isinstance(s.contracts, int) and 0 <= s.contracts <= max_contracts
    assert s.contracts * per_contract_risk <= budget * (1 + 1e-9) + 1e-9
    assert s.contracts * premium * multiplier <= max_premium * (1 + 1e-9) + 1e-9
    if per_contract_risk > budget * (1 + 1e-9):
        assert s.contracts == 0 and s.code == "risk_budget"
    if s.contracts == 0:
        assert s.code in ("risk_budget", "max_premium")
    else:
        assert s.code == "ok"
        # maximal: one more contract would break some limit
        more = s.contracts + 1
        assert (
            more > max_contracts
            or more * per_contract_risk > budget
            or more * premium * multiplier > max_premium
        )

"""EMA and RSI against TA-Lib (and an independent batch implementation); VWAP by hand."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.bars import Bar
from strategies.indicators import EMA, RSI, SessionVWAP

try:
    import talib
except ImportError:  # the batch comparisons below still run
    talib = None

needs_talib = pytest.mark.skipif(talib is None, reason="ta-lib not installed")

TOL = 1e-9

# SPY-like daily closes (the shape of Oct 2023 - Feb 2024, rounded to cents); a realistic
# path with trends, reversals and gaps, not an authoritative price record.
SPY_LIKE = [
    427.48,
    429.54,
    424.50,
    424.66,
    432.29,
    434.54,
    434.17,
    433.66,
    436.04,
    431.50,
    436.02,
    433.79,
    430.21,
    426.43,
    421.19,
    420.46,
    423.63,
    418.78,
    412.55,
    410.68,
    415.59,
    418.20,
    422.66,
    430.76,
    434.69,
    435.69,
    437.25,
    436.93,
    434.84,
    440.61,
    440.19,
    448.73,
    449.68,
    450.23,
    450.79,
    455.02,
    454.93,
    455.45,
    454.48,
    454.93,
    456.40,
    459.10,
    456.69,
    458.32,
    457.18,
    454.76,
    456.60,
    458.23,
    460.20,
    461.99,
    464.10,
    469.33,
    470.50,
    472.01,
    473.83,
    469.33,
    473.65,
    475.65,
    476.51,
    476.69,
    475.31,
    472.65,
    468.79,
    467.28,
    467.92,
    474.60,
    473.88,
    476.56,
    476.35,
    476.68,
    474.93,
    472.29,
    474.60,
    476.49,
    482.43,
    483.45,
    484.86,
    485.39,
    484.29,
    488.03,
    491.27,
    490.89,
    489.20,
    482.88,
    489.20,
    494.35,
    492.55,
    493.98,
    495.06,
    497.60,
    500.98,
    498.57,
    501.20,
    494.08,
    497.57,
    502.01,
    499.51,
    497.21,
    493.98,
    507.50,
]


def random_walk(n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(500.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n))))


SERIES = {
    "spy_like": SPY_LIKE,
    "random_walk_500": random_walk(500, 20240601),
    "random_walk_cents": [round(x, 2) for x in random_walk(500, 7)],
}


def run(ind, xs):
    return [ind.update(x) for x in xs]


def assert_matches(ours, expected):
    assert len(ours) == len(expected)
    for i, (a, e) in enumerate(zip(ours, expected, strict=True)):
        if np.isnan(e):
            assert a is None, f"index {i}: expected warm-up None, got {a}"
        else:
            assert a is not None, f"index {i}: expected {e}, got None"
            assert abs(a - e) <= TOL * max(1.0, abs(e)), f"index {i}: {a} != {e}"


# Independent batch references, written from the textbook definitions rather than from the
# incremental code: SMA seed then recursive EMA; Wilder RSI from RS = avg gain / avg loss.
def batch_ema(xs, period):
    out = [float("nan")] * len(xs)
    if len(xs) < period:
        return out
    k = 2.0 / (period + 1)
    e = sum(xs[:period]) / period
    out[period - 1] = e
    for i in range(period, len(xs)):
        e = xs[i] * k + e * (1 - k)
        out[i] = e
    return out


def batch_rsi(xs, period):
    out = [float("nan")] * len(xs)
    if len(xs) <= period:
        return out
    diffs = np.diff(np.asarray(xs, dtype=float))
    gains = np.clip(diffs, 0, None)
    losses = np.clip(-diffs, 0, None)
    ag, al = gains[:period].mean(), losses[:period].mean()

    def rsi(ag, al):
        if ag + al < 1e-8:
            return 50.0
        return 100.0 if al == 0 else 100.0 - 100.0 / (1.0 + ag / al)

    out[period] = rsi(ag, al)
    for i in range(period, len(diffs)):
        ag = (ag * (period - 1) + gains[i]) / period
        al = (al * (period - 1) + losses[i]) / period
        out[i + 1] = rsi(ag, al)
    return out


@needs_talib
@pytest.mark.parametrize("name", sorted(SERIES))
@pytest.mark.parametrize("period", [2, 5, 8, 21, 50])
def test_ema_matches_talib(name, period):
    xs = SERIES[name]
    assert_matches(run(EMA(period), xs), talib.EMA(np.asarray(xs), timeperiod=period))


@needs_talib
@pytest.mark.parametrize("name", sorted(SERIES))
@pytest.mark.parametrize("period", [2, 7, 14, 30])
def test_rsi_matches_talib(name, period):
    xs = SERIES[name]
    assert_matches(run(RSI(period), xs), talib.RSI(np.asarray(xs), timeperiod=period))


@pytest.mark.parametrize("name", sorted(SERIES))
@pytest.mark.parametrize("period", [2, 8, 21])
def test_ema_matches_batch(name, period):
    xs = SERIES[name]
    assert_matches(run(EMA(period), xs), batch_ema(xs, period))


@pytest.mark.parametrize("name", sorted(SERIES))
@pytest.mark.parametrize("period", [2, 14])
def test_rsi_matches_batch(name, period):
    xs = SERIES[name]
    assert_matches(run(RSI(period), xs), batch_rsi(xs, period))


# Cent-quoted random walks with many flat minutes: the closes an intraday feed produces.
walks = st.lists(st.integers(-25, 25), min_size=1, max_size=300).map(
    lambda steps: [round(400.0 + 0.01 * s, 2) for s in np.cumsum(steps)]
)


@needs_talib
@settings(max_examples=150, deadline=None)
@given(xs=walks, period=st.integers(2, 30))
def test_ema_matches_talib_property(xs, period):
    assert_matches(run(EMA(period), xs), talib.EMA(np.asarray(xs), timeperiod=period))


@needs_talib
@settings(max_examples=150, deadline=None)
@given(xs=walks, period=st.integers(2, 30))
def test_rsi_matches_talib_property(xs, period):
    rsi = RSI(period)
    expected = talib.RSI(np.asarray(xs), timeperiod=period)
    for i, x in enumerate(xs):
        got = rsi.update(x)
        e = expected[i]
        if np.isnan(e):
            assert got is None
        elif rsi.avg_gain + rsi.avg_loss < 1e-8:
            # Documented difference: a flat window is neutral (50), TA-Lib says 0.
            assert e == 0.0 and got == 50.0
        else:
            assert abs(got - e) <= TOL


def test_rsi_first_value_after_period_plus_one_closes():
    rsi = RSI(14)
    xs = SPY_LIKE[:16]
    out = run(rsi, xs)
    assert out[:14] == [None] * 14
    assert out[14] is not None and rsi.ready


def test_ema_seeds_with_sma():
    ema = EMA(3)
    assert run(ema, [1.0, 2.0]) == [None, None]
    assert not ema.ready
    assert ema.update(6.0) == pytest.approx(3.0)
    assert ema.update(7.0) == pytest.approx(5.0)  # (7 - 3) * 0.5 + 3


def test_rsi_flat_market_is_neutral_not_zero():
    rsi = RSI(14)
    out = run(rsi, [500.0] * 20)
    assert out[14:] == [50.0] * 6
    if talib is not None:
        assert talib.RSI(np.full(20, 500.0), timeperiod=14)[14] == 0.0


def test_rsi_extremes():
    assert run(RSI(3), [1.0, 2.0, 3.0, 4.0])[-1] == 100.0
    assert run(RSI(3), [4.0, 3.0, 2.0, 1.0])[-1] == 0.0


def test_non_finite_inputs_are_ignored():
    ema, rsi = EMA(3), RSI(3)
    clean = [10.0, 11.0, 10.5, 11.5, 12.0, 11.0]
    dirty = [10.0, float("nan"), 11.0, 10.5, float("inf"), 11.5, 12.0, float("-inf"), 11.0]
    assert run(EMA(3), clean)[-1] == run(ema, dirty)[-1]
    assert run(RSI(3), clean)[-1] == run(rsi, dirty)[-1]
    assert ema.count == len(clean)


@pytest.mark.parametrize("period", [0, -1, 2.5])
def test_bad_periods_rejected(period):
    with pytest.raises(ValueError):
        EMA(period)
    with pytest.raises(ValueError):
        RSI(period)


T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def bar(i, h, low, c, v):
    return Bar(T0 + timedelta(minutes=i), (h + low) / 2, h, low, c, v)


def test_vwap_hand_computed_and_reset_per_session():
    vwap = SessionVWAP()
    # typical prices 10, 12, 14 with volumes 100, 300, 0
    assert vwap.update(bar(0, 11, 9, 10, 100), "d1") == pytest.approx(10.0)
    assert vwap.update(bar(1, 13, 11, 12, 300), "d1") == pytest.approx((10 * 100 + 12 * 300) / 400)
    # a zero-volume bar adds no weight
    assert vwap.update(bar(2, 15, 13, 14, 0), "d1") == pytest.approx(11.5)
    # new session: starts over from this bar alone
    assert vwap.update(bar(3, 21, 19, 20, 50), "d2") == pytest.approx(20.0)
    assert vwap.session_key == "d2"
    assert vwap.update(bar(4, 23, 19, 21, 150), "d2") == pytest.approx((20 * 50 + 21 * 150) / 200)


def test_vwap_typical_price_is_hlc_over_three():
    vwap = SessionVWAP()
    assert vwap.update(bar(0, 103, 100, 102, 10), 1) == pytest.approx((103 + 100 + 102) / 3)


def test_vwap_zero_cumulative_volume_returns_typical_price():
    vwap = SessionVWAP()
    assert vwap.update(bar(0, 11, 9, 10, 0), "d") == pytest.approx(10.0)
    assert vwap.update(bar(1, 13, 11, 12, 0), "d") == pytest.approx(12.0)
    assert vwap.cumulative_volume == 0.0
    assert vwap.update(bar(2, 15, 13, 14, 5), "d") == pytest.approx(14.0)


def test_vwap_reset_on_first_key_even_if_none():
    vwap = SessionVWAP()
    assert vwap.update(bar(0, 11, 9, 10, 100), None) == pytest.approx(10.0)
    assert vwap.update(bar(1, 13, 11, 12, 100), None) == pytest.approx(11.0)
    assert vwap.update(bar(2, 13, 11, 12, 100), 0) == pytest.approx(12.0)

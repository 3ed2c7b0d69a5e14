"""Ticks: sizes by symbol and premium, rounding onto the grid, entry limits and bracket prices."""

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from strategies.ticks import bracket_prices, entry_limit, on_grid, round_to_tick, tick_size


@pytest.mark.parametrize(
    ("symbol", "price", "tick"),
    [
        ("SPY", 0.50, 0.01),
        ("SPY", 3.00, 0.01),
        ("QQQ", 12.37, 0.01),
        ("iwm", 7.0, 0.01),
        ("AAPL", 2.99, 0.01),
        ("AAPL", 3.00, 0.05),
        ("AAPL", 15.0, 0.05),
        ("TSLA", 0.01, 0.01),
    ],
)
def test_tick_size(symbol, price, tick):
    assert tick_size(symbol, price) == tick


@pytest.mark.parametrize(
    ("price", "tick", "mode", "expected"),
    [
        (2.95, 0.05, "down", 2.95),  # 2.95 / 0.05 = 58.99999999999999 must not floor to 2.90
        (2.95, 0.05, "up", 2.95),
        (2.96, 0.05, "up", 3.00),
        (2.96, 0.05, "down", 2.95),
        (2.975, 0.05, "nearest", 3.00),  # tie goes up
        (2.97, 0.05, "nearest", 2.95),
        (0.07, 0.01, "down", 0.07),  # 0.07 / 0.01 = 7.000000000000001 must not ceil to 0.08
        (0.07, 0.01, "up", 0.07),
        (1.005, 0.01, "up", 1.01),
        (1.005, 0.01, "down", 1.00),
        (4.47, 0.05, "up", 4.50),
        (0.0, 0.01, "down", 0.0),
    ],
)
def test_round_to_tick_table(price, tick, mode, expected):
    assert round_to_tick(price, tick, mode) == expected


def test_round_to_tick_rejects_bad_input():
    with pytest.raises(ValueError):
        round_to_tick(1.0, 0.0, "up")
    with pytest.raises(ValueError):
        round_to_tick(float("nan"), 0.01, "up")
    with pytest.raises(ValueError):
        round_to_tick(1.0, 0.01, "sideways")


prices = st.floats(0.01, 500.0, allow_nan=False)
ticks = st.sampled_from([0.01, 0.05, 0.10, 0.25])


@given(price=prices, tick=ticks)
def test_rounding_lands_on_grid_and_respects_direction(price, tick):
    down = round_to_tick(price, tick, "down")
    up = round_to_tick(price, tick, "up")
    near = round_to_tick(price, tick, "nearest")
    for x in (down, up, near):
        assert abs(x / tick - round(x / tick)) < 1e-6
        assert x == round(x, 2)  # prints exactly, no 2.9500000000000002
    slack = 1e-9
    assert down <= price + slack and up >= price - slack
    assert up - down <= tick + slack
    assert down - slack <= near <= up + slack
    assert abs(near - price) <= tick / 2 + slack


symbols = st.sampled_from(["SPY", "QQQ", "IWM", "AAPL", "TSLA"])
cents = st.integers(1, 5000).map(lambda c: c / 100)


@given(symbol=symbols, bid=cents, width=st.integers(0, 300))
def test_entry_limit_on_grid_between_mid_and_ask(symbol, bid, width):
    ask = round(bid + width / 100, 2)
    assume(on_grid(symbol, ask))  # real asks sit on the grid
    limit = entry_limit(symbol, bid, ask)
    assert limit <= ask
    assert limit >= (bid + ask) / 2 - 1e-9
    assert on_grid(symbol, limit)


@given(symbol=symbols, bid=cents, width=st.integers(0, 300))
def test_entry_limit_never_above_ask_even_off_grid(symbol, bid, width):
    ask = round(bid + width / 100, 2)
    limit = entry_limit(symbol, bid, ask)
    assert 0.01 <= limit <= ask
    assert on_grid(symbol, limit)


@pytest.mark.parametrize(
    ("symbol", "bid", "ask", "expected"),
    [
        ("SPY", 1.20, 1.25, 1.23),  # mid 1.225 up
        ("SPY", 5.10, 5.13, 5.12),
        ("AAPL", 2.90, 3.10, 3.00),
        ("AAPL", 3.10, 3.30, 3.20),
        ("AAPL", 3.10, 3.25, 3.20),  # mid 3.175 up to the 0.05 grid
        ("AAPL", 3.00, 3.02, 3.00),  # off-grid ask: 3.05 would cross it
        ("AAPL", 2.50, 2.50, 2.50),
    ],
)
def test_entry_limit_table(symbol, bid, ask, expected):
    assert entry_limit(symbol, bid, ask) == expected


@pytest.mark.parametrize(("bid", "ask"), [(0.0, 1.0), (1.1, 1.0), (float("nan"), 1.0)])
def test_entry_limit_rejects_bad_quotes(bid, ask):
    with pytest.raises(ValueError):
        entry_limit("SPY", bid, ask)


@pytest.mark.parametrize(
    ("symbol", "entry", "tp", "sl", "expected"),
    [
        ("AAPL", 2.98, 0.50, 0.20, (4.50, 2.38)),  # 4.47 -> 0.05 band; 2.384 down
        ("SPY", 2.98, 0.50, 0.20, (4.47, 2.38)),
        ("AAPL", 10.00, 0.30, 0.20, (13.00, 8.00)),
        ("AAPL", 10.02, 0.30, 0.20, (13.05, 8.00)),  # 13.026 up, 8.016 down
        ("AAPL", 3.50, 0.30, 0.20, (4.55, 2.80)),
        ("AAPL", 3.60, 0.30, 0.20, (4.70, 2.88)),  # stop 2.88 is in the 0.01 band
        ("SPY", 1.00, 0.001, 0.001, (1.01, 0.99)),  # at least one tick each side
        ("SPY", 0.02, 0.30, 0.90, (0.03, 0.01)),  # stop floors at one tick
    ],
)
def test_bracket_prices_table(symbol, entry, tp, sl, expected):
    assert bracket_prices(symbol, entry, tp, sl) == pytest.approx(expected, abs=1e-12)


@given(
    symbol=symbols,
    entry_cents=st.integers(2, 10_000),
    tp=st.floats(0.001, 5.0),
    sl=st.floats(0.001, 0.999),
)
def test_bracket_ordering_and_grid(symbol, entry_cents, tp, sl):
    entry = entry_cents / 100
    assume(on_grid(symbol, entry))
    take_profit, stop = bracket_prices(symbol, entry, tp, sl)
    assert stop < entry < take_profit
    assert on_grid(symbol, take_profit) and on_grid(symbol, stop)
    assert take_profit >= entry * (1 + tp) - 1e-9
    assert stop <= entry * (1 - sl) + 1e-9 or stop == 0.01
    assert stop >= 0.01


def test_bracket_rejects_impossible_inputs():
    with pytest.raises(ValueError):
        bracket_prices("SPY", 0.01, 0.3, 0.2)  # no price below one tick
    for entry, tp, sl in [(math.nan, 0.3, 0.2), (1.0, 0.0, 0.2), (1.0, 0.3, 1.0), (1.0, 0.3, 0.0)]:
        with pytest.raises(ValueError):
            bracket_prices("SPY", entry, tp, sl)

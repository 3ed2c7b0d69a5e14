"""Conversions from ib_async's objects to our messages."""

import math
from datetime import UTC, date, datetime
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st
from ib_async import BarData, Contract, Position

from actors.connection.convert import bar_from_ib, finite, net_liquidation, position_msg, price


def test_bars_come_out_in_utc_whether_ib_sent_a_date_a_naive_or_an_aware_time():
    daily = bar_from_ib(BarData(date=date(2026, 11, 20), open=1, high=2, low=0.5, close=1.5))
    naive = bar_from_ib(BarData(date=datetime(2026, 11, 20, 15, 30), open=1, high=2, low=0.5))
    assert daily.time == datetime(2026, 11, 20, tzinfo=UTC)
    assert naive.time == datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


@given(st.one_of(st.floats(), st.integers(-5, 5), st.none(), st.text(max_size=3)))
def test_a_price_is_a_finite_number_as_sent_and_a_size_never_negative(x):
    p, f = price(x), finite(x)
    assert math.isnan(p) or math.isfinite(p)
    assert math.isnan(f) or (math.isfinite(f) and f >= 0)
    if isinstance(x, int | float) and math.isfinite(x):
        assert p == x  # IB's -1 ("no quote") stays -1: the caller rejects it with its reason
        assert math.isnan(f) if x < 0 else f == x


def test_net_liquidation_is_read_from_usd_or_base_only():
    def value(tag, currency, v):
        return SimpleNamespace(tag=tag, currency=currency, value=v)

    assert net_liquidation(value("NetLiquidation", "USD", "1000.5")) == 1000.5
    assert net_liquidation(value("NetLiquidation", "BASE", "7")) == 7.0
    assert net_liquidation(value("NetLiquidation", "EUR", "7")) is None
    assert net_liquidation(value("NetLiquidation", "USD", "n/a")) is None
    assert net_liquidation(value("BuyingPower", "USD", "7")) is None


def test_a_status_reason_never_names_the_account():
    from ib_async import Order, OrderStatus, Trade, TradeLogEntry

    from actors.connection.convert import status_msg

    trade = Trade(
        order=Order(orderRef="e1", orderId=5, permId=9),
        orderStatus=OrderStatus(status="Cancelled"),
        log=[
            TradeLogEntry(
                time=datetime(2026, 11, 20, tzinfo=UTC),
                status="Cancelled",
                message="Invalid account code DU1234567 for U7654321",
                errorCode=201,
            )
        ],
    )
    msg = status_msg(trade, "DU1234567")
    assert msg.reason.startswith("201 ") and "1234567" not in msg.reason
    assert "7654321" not in msg.reason


@given(text=st.sampled_from(["100", "10", "", "1e400", "nan", "-5", "x"]))
def test_a_position_says_its_contracts_multiplier_or_zero(text):
    """ib_async's decoder.position reads the contract's multiplier off the wire (text)."""
    c = Contract(secType="OPT", conId=7, symbol="SPY", multiplier=text, localSymbol="SPY C680")
    msg = position_msg(Position("DU1", c, 2.0, 243.0))
    assert msg.multiplier == {"100": 100.0, "10": 10.0}.get(text, 0.0)

"""The order book on its own: lifecycle, brackets, OCA, fills, positions and cash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.orders import OrderBook, OrderRejected, OrderSpec, Quote, SimContract

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
OPT = SimContract(
    1_500_000_001,
    "SPY",
    "OPT",
    "20261127",
    680.0,
    "C",
    "100",
    local_symbol="SPY   261127C00680000",
    trading_class="SPY",
)
STK = SimContract(
    756733, "SPY", "STK", primary_exchange="ARCA", local_symbol="SPY", trading_class="SPY"
)


class Events:
    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def order_changed(self, order, open_order):
        self.log.append(("status", order.order_id, order.status, open_order))

    def order_error(self, order, code, text):
        self.log.append(("error", order.order_id, code))

    def order_filled(self, order, execution):
        self.log.append(
            ("fill", order.order_id, execution.shares, execution.price, execution.commission)
        )

    def position_changed(self, position):
        self.log.append(("position", position.contract.con_id, position.quantity))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.log if e[0] == kind]


@pytest.fixture
def quotes() -> dict[int, Quote]:
    return {OPT.con_id: Quote(2.50, 2.55, 10, 10), STK.con_id: Quote(680.00, 680.01, 500, 500)}


@pytest.fixture
def book(quotes: dict[int, Quote]) -> OrderBook:
    b = OrderBook(quote_fn=lambda c, t: quotes.get(c.con_id))
    b.listener = Events()
    return b


def spec(
    order_id: int, action: str = "BUY", qty: float = 1, otype: str = "LMT", **kw: Any
) -> OrderSpec:
    return OrderSpec(order_id=order_id, action=action, total_quantity=qty, order_type=otype, **kw)


def test_marketable_limit_fills_at_the_ask_with_minimum_commission(book: OrderBook) -> None:
    order = book.place(1, spec(1, lmt_price=2.60, order_ref="r1"), OPT, NOW)
    assert order.status == "Submitted"
    assert book.match(NOW) == 1
    assert (order.status, order.filled, order.avg_fill_price) == ("Filled", 1.0, 2.55)
    [ex] = book.executions
    assert (ex.side, ex.price, ex.commission, ex.order_ref, ex.realized_pnl) == (
        "BOT",
        2.55,
        1.0,
        "r1",
        None,
    )
    pos = book.positions[OPT.con_id]
    assert pos.quantity == 1 and pos.avg_cost == pytest.approx(256.0)
    assert book.cash == pytest.approx(100_000 - 255 - 1)
    values = book.account_values(NOW)
    assert values["NetLiquidation"] == pytest.approx(100_000 - 255 - 1 + 252.5)
    assert values["UnrealizedPnL"] == pytest.approx(252.5 - 256.0)


def test_non_marketable_orders_rest_until_the_quote_moves(
    book: OrderBook, quotes: dict[int, Quote]
) -> None:
    buy = book.place(1, spec(1, lmt_price=2.40), OPT, NOW)
    sell = book.place(1, spec(2, "SELL", lmt_price=2.70), OPT, NOW)
    assert book.match(NOW) == 0
    quotes[OPT.con_id] = Quote(2.72, 2.75)
    book.match(NOW)
    assert sell.status == "Filled" and sell.avg_fill_price == 2.72 and buy.status == "Submitted"
    quotes[OPT.con_id] = Quote(2.35, 2.38)
    book.match(NOW)
    assert buy.status == "Filled" and buy.avg_fill_price == 2.38
    assert book.positions[OPT.con_id].quantity == 0


def test_market_closed_means_no_fills(book: OrderBook) -> None:
    order = book.place(1, spec(1, otype="MKT"), OPT, NOW)
    assert book.match(NOW, market_open=False) == 0
    assert order.status == "Submitted"


def test_stop_orders_trigger_on_the_quote(book: OrderBook, quotes: dict[int, Quote]) -> None:
    stop_sell = book.place(1, spec(1, "SELL", otype="STP", aux_price=2.40), OPT, NOW)
    stop_buy = book.place(1, spec(2, "BUY", otype="STP", aux_price=2.70), OPT, NOW)
    book.match(NOW)
    assert stop_sell.status == stop_buy.status == "Submitted"
    quotes[OPT.con_id] = Quote(2.40, 2.45)
    book.match(NOW)
    assert stop_sell.status == "Filled" and stop_sell.avg_fill_price == 2.40
    quotes[OPT.con_id] = Quote(2.66, 2.70)
    book.match(NOW)
    assert stop_buy.status == "Filled" and stop_buy.avg_fill_price == 2.70


def test_bracket_is_held_until_the_last_child_transmits(
    book: OrderBook, quotes: dict[int, Quote]
) -> None:
    events: Events = book.listener  # type: ignore[assignment]
    parent = book.place(1, spec(10, lmt_price=2.55, transmit=False), OPT, NOW)
    tp = book.place(1, spec(11, "SELL", lmt_price=2.80, parent_id=10, transmit=False), OPT, NOW)
    assert events.log == [] and parent.held and tp.held
    assert book.match(NOW) == 0
    sl = book.place(
        1, spec(12, "SELL", otype="STP", aux_price=2.30, parent_id=10, transmit=True), OPT, NOW
    )
    assert [(e[1], e[2]) for e in events.of("status")] == [
        (10, "Submitted"),
        (11, "PreSubmitted"),
        (12, "PreSubmitted"),
    ]
    book.match(NOW)
    assert parent.status == "Filled" and tp.status == sl.status == "Submitted"
    quotes[OPT.con_id] = Quote(2.80, 2.85)
    book.match(NOW)
    assert tp.status == "Filled" and sl.status == "Cancelled"
    assert sl.completed_status.startswith("Cancelled")
    assert book.positions[OPT.con_id].quantity == 0
    realized = book.executions[-1].realized_pnl
    assert realized == pytest.approx((2.80 - 2.55) * 100 - 2.0)
    assert book.realized_pnl == pytest.approx(realized)
    assert not events.of("error")  # OCA cancels come without error 202


def test_cancelling_a_parent_cancels_its_children(book: OrderBook) -> None:
    events: Events = book.listener  # type: ignore[assignment]
    book.place(1, spec(1, lmt_price=2.00, transmit=False), OPT, NOW)
    child = book.place(1, spec(2, "SELL", lmt_price=3.00, parent_id=1), OPT, NOW)
    assert child.status == "PreSubmitted"
    book.cancel(1, 1, NOW)
    assert child.status == "Cancelled"
    assert ("error", 1, 202) in events.log and ("error", 2, 202) in events.log
    with pytest.raises(OrderRejected) as e:
        book.cancel(1, 1, NOW)
    assert e.value.code == 10148
    with pytest.raises(OrderRejected) as e:
        book.cancel(1, 99, NOW)
    assert e.value.code == 10147


def test_explicit_oca_group(book: OrderBook, quotes: dict[int, Quote]) -> None:
    a = book.place(1, spec(1, lmt_price=2.40, oca_group="grp", oca_type=1), OPT, NOW)
    b = book.place(1, spec(2, otype="LMT", lmt_price=679.0, oca_group="grp", oca_type=1), STK, NOW)
    quotes[OPT.con_id] = Quote(2.30, 2.35)
    book.match(NOW)
    assert a.status == "Filled" and b.status == "Cancelled"


def test_order_ids_must_grow_and_live_ids_modify(book: OrderBook) -> None:
    order = book.place(1, spec(5, lmt_price=2.00), OPT, NOW)
    events: Events = book.listener  # type: ignore[assignment]
    book.place(1, spec(5, lmt_price=2.10, qty=3), OPT, NOW)
    assert order.lmt_price == 2.10 and order.total_quantity == 3
    assert events.log[-1] == ("status", 5, "Submitted", True)
    with pytest.raises(OrderRejected) as e:
        book.place(1, spec(4, lmt_price=2.00), OPT, NOW)
    assert e.value.code == 103
    book.place(2, spec(4, lmt_price=2.00), OPT, NOW)  # ids are per client
    book.cancel(1, 5, NOW)
    with pytest.raises(OrderRejected) as e:
        book.place(1, spec(5, lmt_price=2.00), OPT, NOW)
    assert e.value.code == 103
    assert book.next_order_id(1) == 6 and book.next_order_id(2) == 5 and book.next_order_id(9) == 1


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        (dict(lmt_price=2.005), 110),
        (dict(otype="TRAIL"), 387),
        (dict(lmt_price=None), 201),
        (dict(qty=0, lmt_price=2.0), 201),
        (dict(action="HOLD", lmt_price=2.0), 201),
        (dict(otype="STP"), 201),
        (dict(lmt_price=2.0, account="U999"), 201),
        (dict(lmt_price=2.0, parent_id=77), 201),
    ],
)
def test_rejections(book: OrderBook, kwargs: dict[str, Any], code: int) -> None:
    with pytest.raises(OrderRejected) as e:
        book.place(1, spec(1, **kwargs), OPT, NOW)
    assert e.value.code == code
    assert book.next_order_id(1) == 1


def test_partial_fills_share_one_minimum_commission(book: OrderBook) -> None:
    order = book.place(1, spec(1, qty=3, lmt_price=2.60), OPT, NOW)
    first = book._fill(order, 1, 2.55, NOW)
    assert order.status == "Submitted" and order.remaining == 2
    second = book._fill(order, 2, 2.55, NOW + timedelta(seconds=1))
    assert order.status == "Filled"
    assert first.commission == 1.0 and second.commission == pytest.approx(0.95)
    assert second.cum_qty == 3


def test_position_flip_and_short_cover(book: OrderBook) -> None:
    book._fill(book.place(1, spec(1, qty=2, lmt_price=3.0), OPT, NOW), 2, 2.50, NOW)
    book._fill(book.place(1, spec(2, "SELL", qty=5, lmt_price=2.0), OPT, NOW), 5, 3.00, NOW)
    pos = book.positions[OPT.con_id]
    assert pos.quantity == -3
    assert pos.avg_cost == pytest.approx(300 - 3.25 * 3 / 5 / 3)
    cover = book._fill(book.place(1, spec(3, qty=3, lmt_price=3.0), OPT, NOW), 3, 2.00, NOW)
    assert pos.quantity == 0 and pos.avg_cost == 0
    assert cover.realized_pnl == pytest.approx((299.35 - 200.0) * 3 - 1.95)


def test_day_orders_expire_gtc_orders_stay(book: OrderBook) -> None:
    day = book.place(1, spec(1, lmt_price=2.00), OPT, NOW)
    gtc = book.place(1, spec(2, lmt_price=2.00, tif="GTC"), OPT, NOW)
    held = book.place(1, spec(3, lmt_price=2.00, transmit=False), OPT, NOW)
    book.expire_day_orders(NOW)
    assert (day.status, gtc.status, held.status) == ("Cancelled", "Submitted", "Cancelled")


def test_ioc_cancels_when_not_marketable(book: OrderBook) -> None:
    order = book.place(1, spec(1, lmt_price=2.00, tif="IOC"), OPT, NOW)
    book.match(NOW)
    assert order.status == "Cancelled"


def test_global_cancel_and_completed_orders(book: OrderBook) -> None:
    book.place(1, spec(1, lmt_price=2.00), OPT, NOW)
    book.place(2, spec(1, otype="MKT"), OPT, NOW)
    book.match(NOW)
    cancelled = book.global_cancel(NOW)
    assert [(o.client_id, o.order_id) for o in cancelled] == [(1, 1)]
    assert sorted(o.status for o in book.completed_orders()) == ["Cancelled", "Filled"]
    assert book.live_orders() == []


def test_what_if_uses_the_id_but_keeps_nothing(book: OrderBook) -> None:
    order = book.place(1, spec(1, "SELL", qty=2, lmt_price=2.50, what_if=True), OPT, NOW)
    assert order.what_if and book.get(1, 1) is None and book.next_order_id(1) == 2
    impact = book.what_if(order, NOW)
    assert impact["init_change"] == pytest.approx(500.0) and impact["commission"] == pytest.approx(
        1.30
    )


def test_at_the_close_day_orders_expire_and_gtc_exits_of_a_filled_entry_stay(
    book: OrderBook, quotes: dict[int, Quote]
) -> None:
    """The service's brackets: entry DAY, take-profit and stop GTC. Filled: the exits outlive the
    session (and any number of closes). Not filled: the entry expires, and its GTC children go
    with it, as IB takes a bracket's children down with their parent."""
    filled = book.place(1, spec(1, lmt_price=2.55, tif="DAY", transmit=False), OPT, NOW)
    tp = book.place(
        1, spec(2, "SELL", lmt_price=3.50, parent_id=1, tif="GTC", transmit=False), OPT, NOW
    )
    sl = book.place(
        1, spec(3, "SELL", otype="STP", aux_price=1.50, parent_id=1, tif="GTC"), OPT, NOW
    )
    waiting = book.place(1, spec(4, lmt_price=1.00, tif="DAY", transmit=False), OPT, NOW)
    child = book.place(
        1, spec(5, "SELL", otype="STP", aux_price=0.50, parent_id=4, tif="GTC"), OPT, NOW
    )
    book.match(NOW)
    assert filled.status == "Filled" and tp.status == sl.status == "Submitted"
    for day in range(3):  # Friday's close, then the weekend's sessions that never come
        book.expire_day_orders(NOW + timedelta(hours=1 + 24 * day))
    assert waiting.status == child.status == "Cancelled"
    assert tp.status == sl.status == "Submitted"
    assert book.positions[OPT.con_id].quantity == 1


@settings(max_examples=60, deadline=None)
@given(
    held=st.integers(1, 12),
    bracket=st.booleans(),
    fills=st.lists(st.tuples(st.sampled_from(["tp", "sl"]), st.integers(1, 12)), max_size=6),
)
def test_a_reducing_group_never_sells_more_than_is_held(held, bracket, fills) -> None:
    """ocaType 2 (and a bracket's children): each partial fill shrinks the other member, so no
    exit ever stands for more than the position (a SELL stop for more than is held opens a short).
    The old book left the stop at its full size until the take-profit completed."""
    quotes = {OPT.con_id: Quote(2.50, 2.55, 10, 10)}
    b = OrderBook(quote_fn=lambda c, t: quotes.get(c.con_id))
    b.listener = Events()
    entry = b.place(1, spec(1, qty=held, lmt_price=2.60, transmit=not bracket), OPT, NOW)
    parent = {"parent_id": 1} if bracket else {}
    group = {} if bracket else {"oca_group": "exits", "oca_type": 2}
    tp = b.place(
        1, spec(2, "SELL", held, lmt_price=9.0, transmit=False, **parent, **group), OPT, NOW
    )
    sl = b.place(1, spec(3, "SELL", held, "STP", aux_price=0.5, **parent, **group), OPT, NOW)
    b.match(NOW)
    assert entry.status == "Filled" and b.positions[OPT.con_id].quantity == held
    members = {"tp": tp, "sl": sl}
    for which, qty in fills:
        order = members[which]
        if order.is_done:
            continue
        b._fill(order, min(qty, order.remaining), 3.0, NOW)
        position = b.positions[OPT.con_id].quantity
        assert position >= 0
        for o in members.values():
            if not o.is_done:
                assert o.remaining <= position + 1e-9, (o.order_id, o.remaining, position)
        if position == 0:
            assert tp.is_done and sl.is_done

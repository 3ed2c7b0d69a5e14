"""Paper fill rules: never better than a real account would get."""

import math

import pytest

from actors.orders.paper import PaperBook, PaperOrder, fill_price


@pytest.mark.parametrize(
    ("order", "bid", "ask", "expected"),
    [
        (PaperOrder("a", 1, "BUY", "LMT", 1, limit_price=2.00), 1.95, 2.05, None),
        (PaperOrder("a", 1, "BUY", "LMT", 1, limit_price=2.00), 1.90, 2.00, 2.00),
        (PaperOrder("a", 1, "BUY", "LMT", 1, limit_price=2.00), 1.80, 1.85, 2.00),
        (PaperOrder("a", 1, "SELL", "LMT", 1, limit_price=3.00), 2.95, 3.05, None),
        (PaperOrder("a", 1, "SELL", "LMT", 1, limit_price=3.00), 3.10, 3.15, 3.00),
        (PaperOrder("a", 1, "SELL", "STP", 1, aux_price=1.50), 1.55, 1.60, None),
        (PaperOrder("a", 1, "SELL", "STP", 1, aux_price=1.50), 1.40, 1.45, 1.40),
        (PaperOrder("a", 1, "BUY", "MKT", 1), 1.40, 1.45, 1.45),
        (PaperOrder("a", 1, "BUY", "LMT", 1, limit_price=2.00), math.nan, 1.85, None),
    ],
)
def test_fill_price(order, bid, ask, expected):
    assert fill_price(order, bid, ask) == expected


def test_children_wait_for_the_parent_and_only_the_contract_matters():
    book = PaperBook()
    book.add(PaperOrder("E", 7, "BUY", "LMT", 2, limit_price=2.0))
    book.add(
        PaperOrder(
            "TP", 7, "SELL", "LMT", 2, limit_price=2.5, parent_ref="E", oca_group="O", active=False
        )
    )
    book.add(
        PaperOrder(
            "SL", 7, "SELL", "STP", 2, aux_price=1.6, parent_ref="E", oca_group="O", active=False
        )
    )
    assert book.on_quote(8, 1.0, 1.1) == []
    # The same quote that fills the parent cannot fill a child (it is sent on the fill).
    fills = book.on_quote(7, 1.5, 1.55)
    assert [f.order_ref for f in fills] == ["E"]
    assert book.oca_siblings("SL", "O") == ["TP"]
    assert [f.order_ref for f in book.on_quote(7, 1.5, 1.55)] == ["SL"]


@pytest.mark.parametrize(
    ("bid", "ask"),
    [(3.30, 3.25), (0.0, 2.40), (2.38, 0.0), (-1.0, 2.40), (2.38, -1.0), (-1.0, -1.0)],
)
@pytest.mark.parametrize(
    "order",
    [
        PaperOrder("a", 1, "BUY", "LMT", 1, limit_price=2.43),
        PaperOrder("a", 1, "SELL", "LMT", 1, limit_price=3.16),
        PaperOrder("a", 1, "SELL", "STP", 1, aux_price=1.94),
        PaperOrder("a", 1, "BUY", "MKT", 1),
    ],
)
def test_no_fill_on_a_crossed_zero_or_negative_quote(order, bid, ask):
    """A crossed bid above a take-profit, a zero bid under a stop: either would fill at IB never."""
    assert fill_price(order, bid, ask) is None

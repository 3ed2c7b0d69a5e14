"""The ISINs contract details carry: real ones for the names the simulator knows, a stable
valid synthetic one for any other stock symbol."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from sim.server.contracts import ISINS, cusip_check_digit, isin_for

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "wire"))
from wirekit import isin_valid  # noqa: E402

SYMBOLS = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.", min_size=1, max_size=8)


def test_every_listed_isin_is_valid_with_a_valid_cusip_inside() -> None:
    for symbol, isin in ISINS.items():
        assert isin_valid(isin), symbol
        assert cusip_check_digit(isin[2:10]) == isin[10], symbol
        assert isin_for(symbol) == isin
    assert ISINS["AAPL"] == "US0378331005"  # what a real Gateway sends for AAPL


@given(SYMBOLS)
def test_any_symbol_gets_a_stable_valid_us_isin(symbol: str) -> None:
    isin = isin_for(symbol)
    assert isin_valid(isin) and isin.startswith("US")
    assert cusip_check_digit(isin[2:10]) == isin[10]
    assert isin_for(symbol) == isin
    if symbol not in ISINS:
        assert isin not in ISINS.values()


def test_a_wrong_check_digit_is_caught_by_the_independent_check() -> None:
    isin = isin_for("ZZXQ")
    wrong = isin[:11] + str((int(isin[11]) + 1) % 10)
    assert not isin_valid(wrong)

"""Review of recorded option quotes (backtest/quotes.py): inputs the first tests did not reach.

A time that parses but lies outside what datetime can convert (year 1, year 9999 west of UTC)
must be a skipped row like any other bad time, never an OverflowError traceback out of the CLI;
the chain offered at `t` must not reveal strikes the recording first quoted after `t`; a CSV
saved by a spreadsheet with a UTF-8 byte order mark is still a quotes CSV.
"""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime, timedelta

import pytest

from actors import messages as m
from backtest import cli
from backtest.quotes import RecordedQuotes, load_csv, validate

T = datetime(2026, 11, 17, 15, 0, tzinfo=UTC)
HEADER = ["time", "symbol", "expiry", "strike", "right", "bid", "ask"]
DAY = date(2026, 11, 17)


def row(time: str, strike: str = "600", **kw) -> dict:
    r = {
        "time": time,
        "symbol": "SPY",
        "expiry": "20261118",
        "strike": strike,
        "right": "C",
        "bid": "1.0",
        "ask": "1.1",
    }
    r.update(kw)
    return r


# datetime.fromisoformat accepts all of these; converting them to UTC or to New York overflows.
OUT_OF_RANGE = [
    row("0001-01-01T00:00:00Z"),
    row("0001-01-01T00:00:00+05:00"),
    row("9999-12-31T23:59:59-05:00"),
    row(T.isoformat(), quote_time="0001-01-01T00:00:00+05:00"),
]


@pytest.mark.parametrize("bad", OUT_OF_RANGE, ids=lambda r: r["time"] + (r.get("quote_time") or ""))
def test_a_time_datetime_cannot_convert_is_a_skipped_row_not_an_overflow(bad):
    book = validate([(2, bad), (3, row(T.isoformat()))])
    assert book.count == 1
    assert sum(book.skipped.values()) == 1


def test_the_cli_refuses_a_quotes_csv_of_out_of_range_times_in_one_line(tmp_path, capsys):
    path = tmp_path / "q.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerow(["0001-01-01T00:00:00Z", "SPY", "20261118", "600", "C", "1.0", "1.1"])
    argv = ["--from", str(DAY), "--to", str(DAY), "--symbols", "SPY", "--quotes", str(path)]
    assert cli.main([*argv, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "no usable option quotes" in capsys.readouterr().err


class ModelMarket:
    description = "a fake market; options priced by its model"

    def chain(self, symbol, t):
        return m.Chain(symbol, 756733, symbol, 100, ("20261118",), (590.0, 600.0, 610.0))

    def option_quote(self, contract, t):
        return m.OptionQuote(contract=contract, bid=9.0, ask=9.5, last=9.2, volume=1.0, time=t)


def test_the_chain_at_t_lists_no_strike_first_recorded_after_t():
    """The live service quotes the strikes near the spot of the moment: a strike first quoted
    at 20:00 says where the price went by then. Offered at 14:35 it steers the option choice
    with the afternoon's price (the trade is then priced by the model, so the count of model
    quotes does not show it)."""
    book = validate(
        [
            (2, row(T.isoformat(), strike="600")),
            (3, row((T + timedelta(hours=5)).isoformat(), strike="640")),
        ]
    )
    market = RecordedQuotes(ModelMarket(), book, 10.0)
    at_open = market.chain("SPY", T.replace(hour=14, minute=35))
    assert 640.0 not in at_open.strikes


def test_a_quotes_csv_with_a_byte_order_mark_is_read(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM: today the header's first name is '\\ufefftime' and
    the file is refused as having "no column time", which its header plainly has."""
    path = tmp_path / "q.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerow([T.isoformat(), "SPY", "20261118", "600", "C", "1.0", "1.1"])
    assert load_csv(path).count == 1


def test_quotes_only_outside_the_backtests_dates_are_refused_not_all_loaded(tmp_path, capsys):
    """`load` reads a database's whole option_quotes table whatever --from/--to say (about 1 KB
    of peak memory per row, measured): months of recording for a one-day backtest. A quotes
    source with nothing in the dates is as unusable as an empty one, and is refused the same
    way, before a backtest runs on the model alone under an explicit --quotes."""
    from actors.data_quotes import quote_row
    from storage import QuoteRepo, open_db

    db_path = tmp_path / "service.sqlite"
    db = open_db(db_path)
    c = m.OptionContract("SPY", "20261002", 600.0, "C", con_id=1)
    t = datetime(2026, 10, 1, 15, 0, tzinfo=UTC)  # six weeks before DAY
    QuoteRepo(db).record_many(
        [
            quote_row(
                m.OptionQuote(
                    contract=c, bid=1.0, ask=1.1, last=1.0, volume=1.0, time=t, age_known=True
                ),
                t + timedelta(seconds=i),
            )
            for i in range(10)
        ]
    )
    db.close()
    argv = ["--from", str(DAY), "--to", str(DAY), "--symbols", "SPY", "--quotes", str(db_path)]
    assert cli.main([*argv, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "no usable option quotes" in capsys.readouterr().err

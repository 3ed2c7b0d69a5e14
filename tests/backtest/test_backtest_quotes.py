"""Recorded option quotes as a backtest's input (backtest/quotes.py): never a quote from after
the moment asked, the model when the recording has none fresh, bad rows counted by reason, a
file that is no quotes CSV refused in one line, and fills at the recorded prices."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import messages as m
from actors.hours import MarketHours
from backtest import cli
from backtest.engine import sessions_between, step_times
from backtest.market import SimMarket
from backtest.quotes import QuoteBook, RecordedQuotes, load_csv, parse_row, validate
from storage import open_db

T = datetime(2026, 11, 17, 15, 0, tzinfo=UTC)
SPY_C = m.OptionContract("SPY", "20261118", 600.0, "C")
HEADER = ["time", "symbol", "expiry", "strike", "right", "bid", "ask"]


class ModelMarket:
    """A stand-in for the model (a unit test of the wrapper alone): a quote nobody records."""

    description = "a fake market; options priced by its model"

    def __init__(self) -> None:
        self.asked = 0

    def minute_bars(self, symbol, start, end):
        return []

    def hour_bars(self, symbol, start, end):
        return []

    def chain(self, symbol, t):
        return m.Chain(symbol, 756733, symbol, 100, ("20261118", "20261120"), (599.0, 600.0))

    def option_quote(self, contract, t):
        self.asked += 1
        return m.OptionQuote(contract=contract, bid=99.0, ask=99.5, last=99.2, volume=1.0, time=t)


def book_of(rows: list[dict]) -> QuoteBook:
    return validate(((i + 2, r) for i, r in enumerate(rows)))


def row(at: datetime, bid: float, ask: float, **kw) -> dict:
    r = {
        "time": at.isoformat(),
        "symbol": "SPY",
        "expiry": "20261118",
        "strike": "600",
        "right": "C",
        "bid": str(bid),
        "ask": str(ask),
    }
    r.update({k: str(v) for k, v in kw.items()})
    return r


# -- no lookahead, staleness ----------------------------------------------------------------


def test_a_quote_stamped_one_second_after_the_order_is_never_used():
    inner = ModelMarket()
    market = RecordedQuotes(inner, book_of([row(T + timedelta(seconds=1), 1.0, 1.1)]), 10.0)
    q = market.option_quote(SPY_C, T)
    assert (q.bid, q.ask) == (99.0, 99.5)  # the model's, not the recording's
    assert market.quote_counts() == {"recorded": 0, "model": 1, "model_recorded_stale": 0}
    later = market.option_quote(SPY_C, T + timedelta(seconds=1))
    assert (later.bid, later.ask) == (1.0, 1.1)


@settings(max_examples=200, deadline=None)
@given(
    offsets=st.lists(st.integers(-40, 40), min_size=1, max_size=12, unique=True),
    ask_at=st.integers(-5, 5),
)
def test_only_the_newest_quote_known_by_then_is_used(offsets, ask_at):
    """Whatever the stamps, the answer is the newest quote at or before the moment asked, if
    it is at most max_age old: never one from later, never an older one when a newer exists."""
    rows = [
        row(T + timedelta(seconds=s), 1.0 + (s + 40) / 100, 2.0 + (s + 40) / 100) for s in offsets
    ]
    market = RecordedQuotes(ModelMarket(), book_of(rows), 10.0)
    t = T + timedelta(seconds=ask_at)
    q = market.option_quote(SPY_C, t)
    known = [s for s in offsets if s <= ask_at]
    if known and ask_at - max(known) <= 10:
        newest = max(known)
        assert q.bid == pytest.approx(1.0 + (newest + 40) / 100)
        assert q.time == T + timedelta(seconds=newest) <= t
        assert market.recorded == 1 and market.model == 0
    else:
        assert q.bid == 99.0
        assert market.recorded == 0 and market.model == 1
        assert market.stale == (1 if known else 0)


def test_a_stale_recorded_quote_falls_back_to_the_model_and_is_counted():
    book = book_of([row(T - timedelta(seconds=11), 1.0, 1.1), row(T, 2.0, 2.1, strike=601)])
    market = RecordedQuotes(ModelMarket(), book, max_age_s=10.0)
    assert market.option_quote(SPY_C, T).bid == 99.0  # 11 s old
    assert market.option_quote(SPY_C, T - timedelta(seconds=1)).bid == 1.0  # 10 s old: fresh
    # Another strike, another right: never the recording of a different contract.
    assert market.option_quote(m.OptionContract("SPY", "20261118", 600.0, "P"), T).bid == 99.0
    assert market.quote_counts() == {"recorded": 1, "model": 2, "model_recorded_stale": 1}


def test_recorded_and_model_quotes_of_one_contract_carry_one_identity():
    """OrderActor keys its paper book by conId: a quote from the recording and the next one
    from the model must name the same contract, or a working order would never fill."""
    market = RecordedQuotes(SimMarket(7, ["SPY"]), book_of([row(T, 1.0, 1.1)]), 10.0)
    recorded = market.option_quote(SPY_C, T)
    model = market.option_quote(SPY_C, T + timedelta(minutes=5))
    assert market.recorded == 1 and market.model == 1
    assert recorded.contract == model.contract and recorded.contract.con_id > 0


def test_the_chain_is_the_recorded_contracts_on_a_recorded_day_else_the_models():
    rows = [
        row(T, 1.0, 1.1, strike=605, expiry="20261120"),
        row(T + timedelta(hours=2), 1.0, 1.1, strike=610, right="P"),
        row(T, 1.0, 1.1, expiry="20261116"),  # expired by then: not offered
    ]
    market = RecordedQuotes(ModelMarket(), book_of(rows), 10.0)
    # Before the day's first recorded quote (no day before recorded): the model's chain.
    assert market.chain("SPY", T - timedelta(minutes=29)) == ModelMarket().chain("SPY", T)
    chain = market.chain("SPY", T + timedelta(minutes=1))
    # The 20261118 series (strike 610) is first quoted two hours later: not yet listed.
    assert chain.expirations == ("20261120",) and chain.strikes == (605.0,)
    assert chain.con_id == 756733
    later = market.chain("SPY", T + timedelta(hours=2, minutes=1))
    assert later.expirations == ("20261118", "20261120") and later.strikes == (605.0, 610.0)
    assert market.chain("SPY", T + timedelta(days=1)) == ModelMarket().chain("SPY", T)
    assert market.chain("QQQ", T) == ModelMarket().chain("QQQ", T)


# -- bad rows ------------------------------------------------------------------------------------


BAD = {
    "nan_price": row(T, float("nan"), 1.1),
    "negative_price": row(T, -0.05, 1.1),
    "crossed": row(T, 1.2, 1.1),
    "no_ask": row(T, 0.0, 0.0),
    "unknown_right": row(T, 1.0, 1.1, right="X"),
    "bad_time": row(T, 1.0, 1.1, time="yesterday at noon"),
    "naive_time": row(T, 1.0, 1.1, time="2026-11-17T15:00:00"),
    "bad_expiry": row(T, 1.0, 1.1, expiry="2026-11-18"),
    "bad_strike": row(T, 1.0, 1.1, strike="-5"),
    "not_a_number": row(T, 1.0, "one dollar"),
    "no_symbol": row(T, 1.0, 1.1, symbol=""),
}


def test_each_bad_row_is_skipped_with_its_reason_and_logged_once_per_reason(caplog):
    good = [row(T + timedelta(seconds=i), 1.0, 1.1) for i in range(3)]
    rows = good + list(BAD.values()) * 2 + [row(T, 5.0, 5.1)]  # the last: a duplicate
    with caplog.at_level(logging.WARNING, logger="optionsbot.backtest"):
        book = book_of(rows)
    assert book.count == 3
    assert dict(book.skipped) == {**dict.fromkeys(BAD, 2), "duplicate": 1}
    first_lines = [r.getMessage() for r in caplog.records if "further ones" in r.getMessage()]
    assert sorted(line.rsplit(": ", 1)[1].split(" ")[0] for line in first_lines) == sorted(
        [*BAD, "duplicate"]
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                k: st.one_of(st.text(max_size=12), st.sampled_from(["nan", "-1", "inf", ""]))
                for k in HEADER
            }  # fmt: skip
        ),
        max_size=8,
    )
)
def test_garbage_is_counted_never_raised(rows):
    book = book_of(rows)
    assert book.count + sum(book.skipped.values()) == len(rows)


@given(bid=st.floats(allow_nan=True), ask=st.floats(allow_nan=True))
def test_a_kept_quote_is_never_crossed_negative_or_nan(bid, ask):
    got = parse_row(row(T, bid, ask))
    if not isinstance(got, str):
        q = got[1]
        assert 0 <= q.bid <= q.ask and q.ask > 0


# -- the CLI -------------------------------------------------------------------------------------


def test_a_file_that_is_not_a_quotes_csv_is_refused_in_one_line(tmp_path):
    bars = tmp_path / "bars.csv"
    bars.write_text(
        "symbol,time,open,high,low,close,volume\nSPY,2026-11-17T14:30:00+00:00,1,1,1,1,1\n"
    )
    png = tmp_path / "picture.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00\x01")
    for path, words in (
        (bars, "no column expiry, strike, right, bid, ask; its header must name "
               "time,symbol,expiry,strike,right,bid,ask"),
        (png, "is not a text CSV"),
        (tmp_path / "nowhere.csv", "cannot read it"),
    ):  # fmt: skip
        p = subprocess.run(
            [sys.executable, "-m", "actors.cli", "backtest", "--from", "2026-11-17", "--to",
             "2026-11-17", "--symbols", "SPY", "--quotes", str(path), "--out",
             str(tmp_path / "out"), "--quiet"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert words in p.stderr and "--quotes" in p.stderr, p.stderr
        assert not (tmp_path / "out" / "report.json").exists()


SHIFT = 0.37  # recorded = the model's quote + this: a price the model never gives


def write_quotes(path, seed: int, symbols, day: date, hours: MarketHours) -> dict:
    """Every minute's quote of the strikes near the open, for the nearest expiry after `day`,
    as the model prices them plus SHIFT. Returns (time, contract key) -> (bid, ask)."""
    market = SimMarket(seed, symbols)
    times = step_times(sessions_between(hours, day, day))
    out = {}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*HEADER, "last", "volume"])
        for s in symbols:
            chain = market.chain(s, times[0])
            expiry = min(e for e in chain.expirations if e > day.strftime("%Y%m%d"))
            center = market.minute_bars(s, times[0], times[0] + timedelta(minutes=1))[0].open
            strikes = sorted(sorted(chain.strikes, key=lambda k: abs(k - center))[:8])
            for t in times:
                for k in strikes:
                    for r in "CP":
                        q = market.option_quote(m.OptionContract(s, expiry, k, r), t)
                        bid, ask = round(q.bid + SHIFT, 2), round(q.ask + SHIFT, 2)
                        w.writerow([t.isoformat(), s, expiry, k, r, bid, ask, "", q.volume])
                        out[(t, s, expiry, k, r)] = (bid, ask)
    return out


DAY = date(2026, 11, 17)
SYMBOLS = ("SPY", "QQQ")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    d = tmp_path_factory.mktemp("quotes")
    path = d / "quotes.csv"
    prices = write_quotes(path, 7, SYMBOLS, DAY, MarketHours(cache=d / "hours.json"))
    with path.open("a", newline="") as f:  # bad rows among the good: skipped and counted
        w = csv.writer(f)
        w.writerow(
            ["2026-11-17T15:00:00+00:00", "SPY", "20261118", "600", "C", "1.2", "1.1", "", ""]
        )
        w.writerow(
            ["2026-11-17T15:00:00+00:00", "SPY", "20261118", "600", "X", "1.0", "1.1", "", ""]
        )
        w.writerow(
            ["2026-11-17T15:00:00+00:00", "SPY", "20261118", "600", "C", "nan", "1.1", "", ""]
        )
    return path, prices


def backtest(tmp_path, name, *args) -> dict:
    out = tmp_path / name
    argv = ["--from", str(DAY), "--to", str(DAY), "--symbols", *SYMBOLS, "--seed", "7"]
    assert cli.main([*argv, *args, "--out", str(out), "--quiet"]) == 0
    return json.loads((out / "report.json").read_text())


def test_recorded_quotes_give_byte_identical_trades_filled_at_the_recorded_prices(
    tmp_path, recorded, capsys
):
    path, prices = recorded
    a = backtest(tmp_path, "a", "--quotes", str(path))
    b = backtest(tmp_path, "b", "--quotes", str(path))
    assert (tmp_path / "a" / "trades.csv").read_bytes() == (
        tmp_path / "b" / "trades.csv"
    ).read_bytes()
    assert a["option_quotes"] == b["option_quotes"]
    assert a["option_quotes"]["recorded"] > 100 and a["trades"] > 5, a["option_quotes"]
    for reason in ("crossed", "unknown_right", "nan_price"):
        assert a["skips_by_reason"][f"recorded_quotes: {reason}"] == 1
        assert a["quotes_skipped"][reason] == 1
    assert "options from recorded quotes (quotes.csv)" in a["market"]
    printed = capsys.readouterr().out
    assert f"{a['option_quotes']['recorded']:,} from the recorded quotes" in printed
    page = (tmp_path / "a" / "report.html").read_text()
    assert "from the recorded quotes" in page

    # Every entry is priced and filled from the recording: its limit inside the recorded bid
    # and ask of its minute, above the model's ask (so not the model's price). Where the
    # recorded spread is one tick, the entry pays exactly the recorded ask.
    model = SimMarket(7, SYMBOLS)
    db = open_db(tmp_path / "a" / "backtest.sqlite")
    entries = list(
        db.query(
            "select o.*, f.price as fill_price, f.at as fill_at from orders o"
            " join fills f using (order_ref) where o.role = 'entry'"
        )
    )
    exits = list(
        db.query(
            "select o.role, o.symbol, o.expiry, o.strike, o.right, f.price, f.at from orders o"
            " join fills f using (order_ref) where o.role = 'take_profit'"
        )
    )
    db.close()
    assert entries and exits
    paid_the_ask = 0
    for e in entries:
        at = datetime.fromisoformat(e["created_at"])
        k = (at, e["symbol"], e["expiry"], e["strike"], e["right"])
        bid, ask = prices[k]
        mq = model.option_quote(m.OptionContract(*k[1:]), at)
        assert bid <= e["limit_price"] <= ask and e["limit_price"] > mq.ask, (e, bid, ask, mq)
        fill_at = datetime.fromisoformat(e["fill_at"])
        assert (
            e["fill_price"] == e["limit_price"] and prices[(fill_at, *k[1:])][1] <= e["fill_price"]
        )
        if round(ask - bid, 2) == 0.01:
            paid_the_ask += 1
            assert e["fill_price"] == ask and fill_at == at
    assert paid_the_ask > 0
    # A take-profit sells at its limit once the recorded bid reaches it.
    for x in exits:
        at = datetime.fromisoformat(x["at"])
        assert prices[(at, x["symbol"], x["expiry"], x["strike"], x["right"])][0] >= x["price"]


def test_without_quotes_every_option_is_priced_by_the_model_and_the_report_says_so(
    tmp_path, capsys
):
    r = backtest(tmp_path, "model")
    assert r["option_quotes"]["recorded"] == 0 and r["option_quotes"]["model"] > 100
    assert "priced by its model" in r["market"]
    assert "priced from the underlying by the simulator's model" in capsys.readouterr().out


def test_quotes_for_other_symbols_only_are_refused_with_the_reason(tmp_path):
    path = tmp_path / "q.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerow(["2026-11-17T15:00:00+00:00", "IWM", "20261118", "200", "C", "1.0", "1.1"])
        w.writerow(["2026-11-17T15:00:00+00:00", "SPY", "20261118", "600", "C", "1.2", "1.1"])
    argv = ["--from", str(DAY), "--to", str(DAY), "--symbols", "SPY", "--quotes", str(path)]
    assert cli.main([*argv, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert load_csv(path, ["SPY"]).skipped == {"crossed": 1}


def test_a_database_without_recorded_quotes_and_contradicting_flags_are_refused(tmp_path, capsys):
    db = tmp_path / "service.sqlite"
    open_db(db).close()  # a service database that never recorded quotes
    base = ["--from", str(DAY), "--to", str(DAY), "--symbols", "SPY", "--out", str(tmp_path / "o")]
    assert cli.main([*base, "--quotes", str(db), "--quiet"]) == 2
    assert "data.record_quotes: true" in capsys.readouterr().err
    assert cli.main([*base, "--quotes", str(db), "--no-recorded-quotes", "--quiet"]) == 2
    assert "contradict" in capsys.readouterr().err

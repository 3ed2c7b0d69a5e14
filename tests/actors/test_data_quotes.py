"""Recording the option quotes the service receives (actors/data_quotes.py): every answer still
reaches OrderActor first and at once, a locked or broken database never holds it up, and the
rows land in batches."""

from __future__ import annotations

import math
import queue
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pykka
import pytest

from actors import messages as m
from actors.data_quotes import BATCH, QuoteRecorder, QuotesSeen, QuoteTap, quote_row
from storage import QuoteRepo, open_db
from storage.repos import recorded_option_quotes

T = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
C = m.OptionContract("SPY", "20261120", 600.0, "C", con_id=1234, local_symbol="SPY 261120C00600000")


def quote(i: int = 0, last: float = math.nan) -> m.OptionQuote:
    return m.OptionQuote(
        contract=C, bid=1.0 + i / 100, ask=1.1 + i / 100, last=last, volume=math.nan,
        time=T + timedelta(seconds=i), age_known=i % 2 == 0,
    )  # fmt: skip


class Inbox:
    """An actor ref's shape: `tell` puts on a queue."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()

    def tell(self, msg) -> None:
        self.q.put(msg)

    def all(self) -> list:
        out = []
        while not self.q.empty():
            out.append(self.q.get_nowait())
        return out


class FixedClock:
    def now(self) -> datetime:
        return T + timedelta(seconds=30)


def test_the_tap_tees_quote_answers_and_passes_everything_else_untouched():
    connection, recorder, orders = Inbox(), Inbox(), Inbox()
    tap = QuoteTap(connection, recorder, FixedClock())
    sub = m.Subscribe(listener=orders, topics=("connection",))
    tap.tell(sub)
    tap.tell(m.FetchQuotes(contracts=(C,), reply_to=orders, tag="SPY"))
    tap.tell(m.WatchQuotes(contract=C, reply_to=orders))
    got = connection.all()
    assert got[0] is sub  # untouched
    fetch, watch = got[1], got[2]
    answer = m.QuotesFetched(quotes=(quote(0), quote(1)), missing=(), tag="SPY")
    fetch.reply_to.tell(answer)
    watch.reply_to.tell(m.QuoteUpdated(quote=quote(2)))
    watch.reply_to.tell(m.ChainFetched(symbol="SPY", chain=None, spot=math.nan))
    fetch.reply_to.tell(m.QuotesFetched(quotes=(), missing=((C, "no quote"),), tag="SPY"))
    delivered = orders.all()
    assert delivered[0] is answer and len(delivered) == 4  # the owner gets every answer as sent
    seen = recorder.all()
    assert [len(s.quotes) for s in seen] == [2, 1]  # only quotes, never an empty copy
    assert all(s.received == FixedClock().now() for s in seen)


def test_a_dead_recorder_never_stops_a_quote_reaching_the_order_actor():
    class Dead:
        def tell(self, msg):
            raise pykka.ActorDeadError("stopped")

    connection, orders = Inbox(), Inbox()
    QuoteTap(connection, Dead(), FixedClock()).tell(m.WatchQuotes(contract=C, reply_to=orders))
    connection.all()[0].reply_to.tell(m.QuoteUpdated(quote=quote()))
    assert len(orders.all()) == 1


def test_a_row_keeps_the_contract_prices_and_both_times():
    r = quote_row(quote(3, last=1.05), T + timedelta(seconds=9))
    assert (r.symbol, r.expiry, r.strike, r.right, r.con_id) == (
        "SPY",
        "20261120",
        600.0,
        "C",
        1234,
    )
    assert (r.bid, r.ask, r.last, r.volume) == (1.03, 1.1 + 0.03, 1.05, None)  # NaN: not stored
    assert r.received_at == "2026-11-18T15:00:09.000+00:00"
    assert r.quote_time == "2026-11-18T15:00:03.000+00:00" and r.age_known == 0


def test_quotes_are_written_in_batches_and_the_rest_at_stop(make_settings, metrics, monkeypatch):
    settings = make_settings()
    calls: list[int] = []
    real = QuoteRepo.record_many

    def counted(self, rows):
        rows = list(rows)
        calls.append(len(rows))
        return real(self, rows)

    monkeypatch.setattr(QuoteRepo, "record_many", counted)
    ref = QuoteRecorder.start(settings, metrics, FixedClock())
    n = 2 * BATCH + 50
    for i in range(n):
        ref.tell(QuotesSeen(quotes=(quote(i),), received=T + timedelta(seconds=i)))
    ref.stop()
    assert calls == [BATCH, BATCH, 50]
    rows = recorded_option_quotes(settings.storage.path)
    assert (
        len(rows) == n and rows[0].bid == 1.0 and rows[-1].bid == pytest.approx(1.0 + (n - 1) / 100)
    )


def test_a_locked_database_holds_up_neither_the_answer_nor_the_tee(make_settings, metrics):
    """Another writer holds SQLite's write lock: the recorder waits its turn on its own thread;
    the connection's tee and OrderActor's inbox never wait at all."""
    settings = make_settings()
    open_db(settings.storage.path).close()
    ref = QuoteRecorder.start(settings, metrics, FixedClock())
    try:
        # Waits out the recorder's own open (its migration check takes the lock for a moment).
        blocker = sqlite3.connect(settings.storage.path, timeout=5)
        blocker.execute("BEGIN IMMEDIATE")
        connection, orders = Inbox(), Inbox()
        QuoteTap(connection, ref, FixedClock()).tell(m.WatchQuotes(contract=C, reply_to=orders))
        tee = connection.all()[0].reply_to
        ref.tell(QuotesSeen(quotes=(quote(),) * BATCH, received=T))  # a flush, now blocked
        started = time.monotonic()
        for i in range(1000):
            tee.tell(m.QuoteUpdated(quote=quote(i)))
        assert time.monotonic() - started < 0.5
        assert len(orders.all()) == 1000
        blocker.rollback()
        blocker.close()
    finally:
        ref.stop()
    assert len(recorded_option_quotes(settings.storage.path)) == BATCH + 1000


def test_a_failed_write_is_logged_and_dropped_and_recording_goes_on(
    make_settings, metrics, monkeypatch, caplog
):
    settings = make_settings()
    real = QuoteRepo.record_many
    failures = [sqlite3.OperationalError("disk I/O error")]

    def flaky(self, rows):
        if failures:
            raise failures.pop()
        return real(self, rows)

    monkeypatch.setattr(QuoteRepo, "record_many", flaky)
    ref = QuoteRecorder.start(settings, metrics, FixedClock())
    ref.tell(QuotesSeen(quotes=(quote(),) * BATCH, received=T))
    ref.tell(QuotesSeen(quotes=(quote(1),) * 3, received=T))
    assert ref.is_alive()
    ref.stop()
    assert len(recorded_option_quotes(settings.storage.path)) == 3
    assert any("200 option quotes not recorded" in r.getMessage() for r in caplog.records)

"""Recording the option quotes the service receives (data.record_quotes), off the trading path.

`QuoteTap` stands in for the ConnectionActor's ref in OrderActor's hands. Every message goes
through unchanged but for the reply address of a FetchQuotes or WatchQuotes: a `_Tee` that
delivers each answer to OrderActor first, then tells the QuoteRecorder a copy, stamped with the
service clock at that moment (when the quote reached the service). A tell is a queue put, so
neither the connection's loop nor OrderActor ever waits on SQLite; the recorder writes in
batches, one transaction each, on its own thread. A recorder that fails loses quotes, never a
trade: its tell's dead-actor error is swallowed, and a failed write is logged and dropped.

Neither the connection's files nor OrderActor know about it: the tap is wired in actors/system.py
only when the setting is on.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pykka

from actors import messages as m
from actors.base import BaseActor
from storage import QuoteRepo, open_db
from storage.repos import iso
from storage.rows import OptionQuoteRow

log = logging.getLogger("optionsbot.data")

BATCH = 200  # rows per transaction at most
FLUSH_S = 1.0  # a quote waits at most about this long (and a Tick) to be written


@dataclass(frozen=True, slots=True)
class QuotesSeen(m.Msg):
    """Quotes that reached the service at `received` (the service clock)."""

    quotes: tuple[m.OptionQuote, ...]
    received: datetime


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def quote_row(q: m.OptionQuote, received: datetime) -> OptionQuoteRow:
    c = q.contract
    return OptionQuoteRow(
        received_at=iso(received),
        symbol=c.symbol,
        expiry=c.expiry,
        strike=float(c.strike),
        right=c.right,
        con_id=c.con_id or None,
        local_symbol=c.local_symbol or None,
        trading_class=c.trading_class or None,
        multiplier=c.multiplier or None,
        bid=_finite(q.bid),
        ask=_finite(q.ask),
        last=_finite(q.last),
        volume=_finite(q.volume),
        quote_time=iso(q.time) if q.time is not None else None,
        age_known=int(bool(q.age_known)),
    )


class _Tee:
    """A reply address: the answer to its owner, and a copy of its quotes to the recorder."""

    __slots__ = ("target", "recorder", "clock")

    def __init__(self, target: Any, recorder: Any, clock: Any) -> None:
        self.target, self.recorder, self.clock = target, recorder, clock

    def tell(self, msg: Any) -> None:
        self.target.tell(msg)  # the trading path first
        if isinstance(msg, m.QuotesFetched):
            quotes = msg.quotes
        elif isinstance(msg, m.QuoteUpdated):
            quotes = (msg.quote,)
        else:
            return
        if not quotes:
            return
        try:
            self.recorder.tell(QuotesSeen(quotes=tuple(quotes), received=self.clock.now()))
        except pykka.ActorDeadError:
            pass  # recording stopped (a shutdown, a broken disk): trading goes on

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


class QuoteTap:
    """The connection's ref, with the quote answers teed to the recorder."""

    def __init__(self, connection: Any, recorder: Any, clock: Any) -> None:
        self.connection, self.recorder, self.clock = connection, recorder, clock

    def tell(self, msg: Any) -> None:
        if isinstance(msg, m.FetchQuotes | m.WatchQuotes):
            msg = dataclasses.replace(msg, reply_to=_Tee(msg.reply_to, self.recorder, self.clock))
        self.connection.tell(msg)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connection, name)


class QuoteRecorder(BaseActor):
    name = "quotes"

    def __init__(self, settings: Any, metrics: Any, clock: Any) -> None:
        super().__init__()
        self.settings, self.metrics, self.clock = settings, metrics, clock
        self.pending: list[OptionQuoteRow] = []
        self.flushed_mono = time.monotonic()
        self.written = 0
        self.dropped = 0

    def on_start(self) -> None:
        self.db = open_db(self.settings.storage.path)
        self.repo = QuoteRepo(self.db)

    def on_stop(self) -> None:
        self._flush()
        self.db.close()
        if self.written or self.dropped:
            log.info(
                "option quotes recorded: %d (%d lost to write errors)", self.written, self.dropped
            )

    def on_QuotesSeen(self, msg: QuotesSeen) -> None:
        self.pending.extend(quote_row(q, msg.received) for q in msg.quotes)
        if len(self.pending) >= BATCH:
            self._flush()

    def on_Tick(self, msg: m.Tick) -> None:
        if self.pending and time.monotonic() - self.flushed_mono >= FLUSH_S:
            self._flush()

    def _flush(self) -> None:
        self.flushed_mono = time.monotonic()
        rows, self.pending = self.pending, []
        try:
            self.written += self.repo.record_many(rows)
        except sqlite3.Error as exc:
            # A recording is worth less than the trading beside it: say so, drop, go on.
            self.dropped += len(rows)
            log.error("%d option quotes not recorded: %s", len(rows), exc)

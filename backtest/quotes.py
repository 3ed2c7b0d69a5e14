"""Recorded option quotes for a backtest: a CSV file or a service database's `option_quotes`.

CSV: a header with `time,symbol,expiry,strike,right,bid,ask` (any order; `last`, `volume` and
`quote_time` are read when present, more columns are allowed). `time` is when the quote was
known, in ISO 8601 with its zone; `expiry` YYYYMMDD; `right` C or P. A database's table is the
one `data.record_quotes: true` fills (storage/db.py m005): `received_at` is `time`.

A bad row is skipped, never repaired: counted by reason (the report's `skips_by_reason`, as
`recorded_quotes: <reason>`) and logged once per reason with its line.

`RecordedQuotes` wraps a market (market.py): an option's quote is the latest recorded one for
that exact contract known at or before the time asked (never one stamped later: no lookahead),
if it is at most `max_age_s` old; else the inner market's model prices it. Both are counted.
"""

from __future__ import annotations

import bisect
import csv
import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from actors import messages as m
from actors.hours import MarketHours
from backtest.market import Market, _full
from sim.market import MarketModel, default_spec
from storage.repos import recorded_option_quotes
from strategies.bars import Bar

log = logging.getLogger("optionsbot.backtest")

COLUMNS = ("time", "symbol", "expiry", "strike", "right", "bid", "ask")
RIGHTS = {"C": "C", "P": "P", "CALL": "C", "PUT": "P"}

Key = tuple[str, str, float, str]  # symbol, expiry, strike, right


class QuotesError(Exception):
    """The quotes cannot be read at all (no file, not a quotes CSV, no table)."""


@dataclass(frozen=True, slots=True)
class RecordedQuote:
    at: float  # epoch seconds: when the quote was known (received)
    time: datetime  # when its bid or ask last changed (= `at` when the input does not say)
    bid: float
    ask: float
    last: float
    volume: float
    age_known: bool = True


def key(symbol: str, expiry: str, strike: float, right: str) -> Key:
    return (symbol.upper(), expiry, round(float(strike), 4), right)


@dataclass
class QuoteBook:
    """Recorded quotes by contract, each series in the order known."""

    series: dict[Key, tuple[list[float], list[RecordedQuote]]] = field(default_factory=dict)
    # (symbol, trading date) -> {(expiry, strike): when first quoted that day (epoch seconds)}
    listed: dict[tuple[str, date], dict[tuple[str, float], float]] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return sum(len(times) for times, _ in self.series.values())


def _time(text: str) -> datetime | str:
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return "bad_time"
    if t.tzinfo is None or t.utcoffset() is None:
        return "naive_time"
    try:
        # Year 1 or 9999 parse, then overflow in UTC or in New York (the trading date).
        MarketHours.trading_date(t)
        return t.astimezone(UTC)
    except OverflowError:
        return "bad_time"


def _optional(text: str | None) -> float:
    try:
        x = float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan
    return x if math.isfinite(x) else math.nan


def parse_row(row: dict[str, str | None]) -> tuple[Key, RecordedQuote] | str:
    """(contract, quote) from one record, or the reason it is unusable."""
    symbol = (row.get("symbol") or "").strip().upper()
    if not symbol:
        return "no_symbol"
    t = _time(row.get("time") or "")
    if isinstance(t, str):
        return t
    quote_time: datetime | str = t
    if row.get("quote_time"):
        quote_time = _time(row["quote_time"] or "")
        if isinstance(quote_time, str):
            return f"quote_{quote_time}"
        if quote_time > t:
            return "quote_time_after_time"  # changed after it was known: not a recording
    expiry = (row.get("expiry") or "").strip()
    try:
        if len(expiry) != 8:
            raise ValueError
        datetime.strptime(expiry, "%Y%m%d")
    except ValueError:
        return "bad_expiry"
    right = RIGHTS.get((row.get("right") or "").strip().upper())
    if right is None:
        return "unknown_right"
    try:
        strike = float(row.get("strike") or "")
        bid = float(row.get("bid") or "")
        ask = float(row.get("ask") or "")
    except ValueError:
        return "not_a_number"
    if not math.isfinite(strike) or strike <= 0:
        return "bad_strike"
    if not (math.isfinite(bid) and math.isfinite(ask)):
        return "nan_price"
    if bid < 0 or ask < 0:
        return "negative_price"
    if ask == 0:
        return "no_ask"  # nothing offered: no price to buy at, none to value a position by
    if bid > ask:
        return "crossed"
    return key(symbol, expiry, strike, right), RecordedQuote(
        at=t.timestamp(),
        time=quote_time,
        bid=bid,
        ask=ask,
        last=_optional(row.get("last")),
        volume=_optional(row.get("volume")),
        age_known=(row.get("age_known") or "1").strip() not in ("0", "false", "False"),
    )


def validate(
    rows: Iterable[tuple[int, dict[str, str | None]]],
    symbols: Iterable[str] | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> QuoteBook:
    """`window`: only quotes received in [start, end) are kept (others are no error)."""
    wanted = {s.upper() for s in symbols} if symbols else None
    lo, hi = (window[0].timestamp(), window[1].timestamp()) if window else (None, None)
    book = QuoteBook()
    parsed: dict[Key, list[tuple[RecordedQuote, int]]] = {}
    for line, row in rows:
        got = parse_row(row)
        if isinstance(got, str):
            book.skipped[got] += 1
            if book.skipped[got] == 1:
                log.warning("quotes line %d skipped: %s (further ones counted only)", line, got)
            continue
        k, q = got
        if wanted is not None and k[0] not in wanted:
            continue
        if lo is not None and not lo <= q.at < hi:
            continue
        parsed.setdefault(k, []).append((q, line))
    for k in sorted(parsed):
        times: list[float] = []
        quotes: list[RecordedQuote] = []
        for q, line in sorted(parsed[k], key=lambda x: (x[0].at, x[1])):
            if times and times[-1] == q.at:
                book.skipped["duplicate"] += 1  # the first one in the input wins
                if book.skipped["duplicate"] == 1:
                    log.warning(
                        "quotes line %d skipped: duplicate (further ones counted only)", line
                    )
                continue
            times.append(q.at)
            quotes.append(q)
            day = MarketHours.trading_date(datetime.fromtimestamp(q.at, UTC))
            first = book.listed.setdefault((k[0], day), {})
            first[(k[1], k[2])] = min(first.get((k[1], k[2]), q.at), q.at)
        book.series[k] = (times, quotes)
    for reason, n in sorted(book.skipped.items()):
        if n > 1:
            log.warning("quotes: %d rows skipped in all: %s", n, reason)
    return book


def load_csv(
    path: Path,
    symbols: Iterable[str] | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> QuoteBook:
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")  # a spreadsheet's BOM
    except OSError as exc:
        raise QuotesError(f"--quotes {path}: cannot read it: {exc.strerror or exc}") from exc
    with handle:
        try:
            reader = csv.DictReader(handle)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise QuotesError(
                    f"--quotes {path} is not an option quotes CSV: no column "
                    f"{', '.join(missing)}; its header must name {','.join(COLUMNS)}"
                )
            reader.fieldnames = header

            def rows() -> Iterator[tuple[int, dict]]:
                for i, row in enumerate(reader):
                    yield i + 2, row

            return validate(rows(), symbols, window)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise QuotesError(
                f"--quotes {path} is not a text CSV ({exc.__class__.__name__}); give a CSV "
                f"with the header {','.join(COLUMNS)}"
            ) from None


def load_db(
    path: Path,
    symbols: Iterable[str] | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> QuoteBook:
    """The option quotes a service recorded (data.record_quotes: true); empty when none. Only
    the window's are read from the file."""
    import sqlite3

    try:
        records = recorded_option_quotes(path, *(window or (None, None)))
    except sqlite3.Error as exc:
        raise QuotesError(f"cannot read option quotes from database {path}: {exc}") from exc

    def text(x) -> str | None:
        return None if x is None else str(x)

    rows = (
        (
            r.id or i + 1,
            {
                "time": r.received_at,
                "quote_time": r.quote_time,
                "symbol": r.symbol,
                "expiry": r.expiry,
                "strike": text(r.strike),
                "right": r.right,
                "bid": "nan" if r.bid is None else str(r.bid),
                "ask": "nan" if r.ask is None else str(r.ask),
                "last": text(r.last),
                "volume": text(r.volume),
                "age_known": text(r.age_known),
            },
        )
        for i, r in enumerate(records)
    )
    return validate(rows, symbols, window)


def is_sqlite(path: Path) -> bool:
    try:
        with Path(path).open("rb") as f:
            return f.read(16).startswith(b"SQLite format 3")
    except OSError:
        return False


def load(
    path: Path,
    symbols: Iterable[str] | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> QuoteBook:
    """A CSV file, or a service database (by its first bytes, not its name)."""
    if is_sqlite(path):
        return load_db(path, symbols, window)
    return load_csv(path, symbols, window)


def backtest_window(first: date, last: date) -> tuple[datetime, datetime]:
    """The quotes a backtest from `first` to `last` can use: from a few days before (the chain
    lists the previous recorded day's contracts; a weekend and a holiday between) to the day
    after the last (UTC dates: a New York evening is the next UTC day)."""
    return (
        datetime.combine(first - timedelta(days=4), datetime.min.time(), UTC),
        datetime.combine(last + timedelta(days=2), datetime.min.time(), UTC),
    )


class RecordedQuotes:
    """A market whose option quotes come from a recording where it has a fresh one.

    `chain(symbol, t)`: on a day the recording has quotes for the symbol, the expiries (not yet
    expired) and strikes it quoted that day, so the option choice picks among contracts the
    recording can price; a union with the model's grid would let it pick contracts the
    recording never saw, and price the trade by the model without a word. A contract quoted on
    the day before is listed from the open; one first quoted today is listed from then on (the
    service quotes strikes near the spot of the moment: a strike first quoted in the afternoon
    says where the price went). Days without recorded quotes keep the model's chain.
    """

    def __init__(self, inner: Market, book: QuoteBook, max_age_s: float, source: str = "") -> None:
        self.inner = inner
        self.book = book
        self.max_age_s = float(max_age_s)
        self.ids = MarketModel(seed=0)  # contract ids: the same for a contract either way
        self.recorded = 0
        self.model = 0
        self.stale = 0  # priced by the model because the newest recorded one was too old
        where = f" ({source})" if source else ""
        self.description = (
            f"{inner.description.split(';')[0]}; options from recorded quotes{where} where one "
            f"at most {self.max_age_s:g}s old exists, else priced by the simulator's model"
        )

    def minute_bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        return self.inner.minute_bars(symbol, start, end)

    def hour_bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        return self.inner.hour_bars(symbol, start, end)

    def chain(self, symbol: str, t: datetime) -> m.Chain | None:
        model = self.inner.chain(symbol, t)
        day = MarketHours.trading_date(t)
        listed = self.book.listed.get((symbol.upper(), day))
        if listed is None:
            return model
        # Only contracts already quoted by `t`, and the previous recorded day's: a strike first
        # quoted in the afternoon (the service quotes near the spot of the moment) would tell a
        # morning decision where the price went.
        at = t.timestamp()
        known = {c for c, first in listed.items() if first <= at}
        earlier = [d for (sym, d) in self.book.listed if sym == symbol.upper() and d < day]
        if earlier:
            known |= set(self.book.listed[(symbol.upper(), max(earlier))])
        today = day.strftime("%Y%m%d")
        expiries = tuple(sorted({e for e, _ in known if e >= today}))
        if not expiries:
            return model
        strikes = {k for e, k in known if e >= today}
        return m.Chain(
            symbol=symbol,
            con_id=model.con_id if model is not None else default_spec(symbol).con_id,
            trading_class=symbol,
            multiplier=100,
            expirations=expiries,
            strikes=tuple(sorted(strikes)),
        )

    def recorded_at(self, contract: m.OptionContract, t: datetime) -> RecordedQuote | None:
        """The newest recorded quote for this contract known at or before `t`."""
        found = self.book.series.get(
            key(contract.symbol, contract.expiry, contract.strike, contract.right)
        )
        if found is None:
            return None
        times, quotes = found
        i = bisect.bisect_right(times, t.timestamp()) - 1
        return quotes[i] if i >= 0 else None

    def option_quote(self, contract: m.OptionContract, t: datetime) -> m.OptionQuote | str:
        q = self.recorded_at(contract, t)
        if q is not None and t.timestamp() - q.at <= self.max_age_s:
            self.recorded += 1
            return m.OptionQuote(
                contract=_full(contract, self.ids),
                bid=q.bid,
                ask=q.ask,
                last=q.last,
                volume=q.volume,
                time=q.time,
                age_known=q.age_known,
            )
        got = self.inner.option_quote(contract, t)
        if not isinstance(got, str):
            self.model += 1
            self.stale += q is not None
        return got

    def quote_counts(self) -> dict[str, int]:
        return {"recorded": self.recorded, "model": self.model, "model_recorded_stale": self.stale}

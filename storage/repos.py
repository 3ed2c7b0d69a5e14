"""One small repository per concern; each takes a `Database` opened by the calling thread."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from dataclasses import fields as dataclass_fields
from datetime import UTC, date, datetime
from typing import Any

from sqlite_utils import Database
from sqlite_utils.db import NotFoundError

from configs.redact import redact
from machines.order import TERMINAL
from storage.db import ensure_option_quotes, write
from storage.rows import (
    Decision,
    Fill,
    KeyValue,
    OptionQuoteRow,
    Order,
    OrderEvent,
    Position,
    SignalRow,
    TradingDay,
    WhaleDebounce,
)

TERMINAL_VALUES = tuple(s.value for s in TERMINAL)


def iso(t: datetime | None = None) -> str:
    """UTC ISO-8601: one sortable format for every timestamp we store."""
    return (t or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")


def _json(value: Any) -> str:
    return redact(json.dumps(value, default=str, sort_keys=True))


def _without_id(row: dict[str, Any]) -> dict[str, Any]:
    """An autoincrement row before its insert: SQLite picks the id."""
    row.pop("id")
    return row


def _append(db: Database, table: str, row: Mapping[str, Any]) -> None:
    """One row into an append-only table with a plain INSERT. The journal takes a row per bar per
    symbol; sqlite-utils' insert() lists the tables and columns on every call, which was a tenth of
    a backtest's time. Columns come from the typed row, so a renamed column still fails loudly."""
    cols = ", ".join(row)
    marks = ", ".join("?" * len(row))
    db.execute(f"insert into {table} ({cols}) values ({marks})", list(row.values()))  # noqa: S608


def _clean(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The last line of defence for the account id: no text column stores one (configs.redact)."""
    # Keys (order_ref, bracket_ref, ...) are ours and never altered: they are how IB finds us.
    return {
        k: redact(v) if isinstance(v, str) and not k.endswith("_ref") else v
        for k, v in fields.items()
    }


class OrderRepo:
    """Orders, their append-only event log and their fills. Open orders are read with a query:
    a missing table raises instead of reading as "nothing working" (rows_where returns empty)."""

    def __init__(self, db: Database):
        self.db = db

    def insert(self, order: Order, at: datetime | None = None) -> None:
        self.insert_many([order], at)

    def insert_many(self, orders: Iterable[Order], at: datetime | None = None) -> None:
        """A bracket's orders land together or not at all."""
        with write(self.db):
            for order in orders:
                row = _clean(order.to_db())
                row["created_at"] = row["created_at"] or iso(at)
                row["updated_at"] = row["created_at"]
                self.db["orders"].insert(row, pk="order_ref")
                self._event(row["order_ref"], "created", "", row["state"], {}, at)

    def transition(
        self,
        order_ref: str,
        event: str,
        source: str,
        dest: str,
        detail: Mapping[str, Any] | None = None,
        at: datetime | None = None,
        **fields: Any,
    ) -> None:
        """Persist a machine transition and its event in one transaction."""
        with write(self.db):
            self.db["orders"].update(
                order_ref, {"state": dest, "updated_at": iso(at), **_clean(fields)}
            )
            self._event(order_ref, event, source, dest, detail or {}, at)

    def update(self, order_ref: str, **fields: Any) -> None:
        with write(self.db):
            self.db["orders"].update(order_ref, {**_clean(fields), "updated_at": iso()})

    def _event(
        self, ref: str, event: str, source: str, dest: str, detail: Mapping[str, Any], at
    ) -> None:
        self.db["order_events"].insert(
            {
                "order_ref": ref,
                "at": iso(at),
                "event": event,
                "source": source,
                "dest": dest,
                "detail": _json(detail),
            }
        )

    def get(self, order_ref: str) -> Order | None:
        try:
            return Order.from_db(self.db["orders"].get(order_ref))
        except NotFoundError:
            return None

    def open_orders(self) -> list[Order]:
        marks = ",".join("?" * len(TERMINAL_VALUES))
        return [
            Order.from_db(r)
            for r in self.db.query(
                f"select * from orders where state not in ({marks}) order by created_at",
                TERMINAL_VALUES,
            )
        ]

    def by_bracket(self, bracket_ref: str) -> list[Order]:
        return [
            Order.from_db(r)
            for r in self.db.query(
                "select * from orders where bracket_ref = ? order by created_at", [bracket_ref]
            )
        ]

    def events(self, order_ref: str) -> list[OrderEvent]:
        return [
            OrderEvent.from_db(r)
            for r in self.db["order_events"].rows_where("order_ref = ?", [order_ref], order_by="id")
        ]

    def add_fill(self, fill: Fill) -> bool:
        """Record a fill once: False when this execution id is already known (a duplicate)."""
        with write(self.db):
            cur = self.db.execute(
                "insert or ignore into fills (exec_id, order_ref, at, side, quantity, price, commission, con_id, symbol)"
                " values (:exec_id, :order_ref, :at, :side, :quantity, :price, :commission, :con_id, :symbol)",
                fill.to_db(),
            )
            return cur.rowcount == 1

    def fill(self, exec_id: str) -> Fill | None:
        try:
            return Fill.from_db(self.db["fills"].get(exec_id))
        except NotFoundError:
            return None

    def fill_with_base(self, exec_id: str) -> Fill | None:
        """A recorded fill whose execId matches this one up to its last dot (IB's corrections)."""
        base = exec_id.rsplit(".", 1)[0]
        rows = list(
            self.db["fills"].rows_where("exec_id like ? || '.%'", [base], order_by="at", limit=1)
        )
        if not rows:
            return None
        # Only the last dot separates the correction counter: "a.b.01.01" and "a.b.01.02".
        return Fill.from_db(rows[0]) if rows[0]["exec_id"].rsplit(".", 1)[0] == base else None

    def replace_fill(self, old_exec_id: str, fill: Fill) -> None:
        with write(self.db):
            self.db["fills"].delete(old_exec_id)
            self.db["fills"].insert(fill.to_db(), pk="exec_id")

    def filled_quantity(self, order_ref: str) -> float:
        row = self.db.execute(
            "select coalesce(sum(quantity), 0) from fills where order_ref = ?", [order_ref]
        )
        return float(row.fetchone()[0])

    def fills_for_contract(self, con_id: int) -> list[Fill]:
        return [
            Fill.from_db(r)
            for r in self.db["fills"].rows_where("con_id = ?", [con_id], order_by="at, rowid")
        ]

    def set_commission(self, exec_id: str, commission: float) -> float | None:
        """Record a commission once; returns the change, or None when the fill is unknown."""
        fill = self.fill(exec_id)
        if fill is None:
            return None
        delta = commission - (fill.commission or 0.0)
        with write(self.db):
            self.db["fills"].update(exec_id, {"commission": commission})
        return delta

    def fills(self, order_ref: str | None = None) -> list[Fill]:
        if order_ref is None:
            rows = self.db["fills"].rows_where(order_by="at")
        else:
            rows = self.db["fills"].rows_where("order_ref = ?", [order_ref], order_by="at")
        return [Fill.from_db(r) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        return {
            r["state"]: r["n"]
            for r in self.db.query("select state, count(*) n from orders group by state")
        }


class PositionRepo:
    """Positions by contract. The open ones are read with a query, not sqlite-utils' rows_where:
    a missing table must raise (a damaged file), not read as "nothing held"."""

    def __init__(self, db: Database):
        self.db = db

    def upsert(self, position: Position) -> None:
        with write(self.db):
            self.db["positions"].upsert({**position.to_db(), "updated_at": iso()}, pk="con_id")

    def get(self, con_id: int) -> Position | None:
        try:
            return Position.from_db(self.db["positions"].get(con_id))
        except NotFoundError:
            return None

    def open(self) -> list[Position]:
        return [
            Position.from_db(r)
            for r in self.db.query("select * from positions where quantity != 0 order by con_id")
        ]

    def all(self) -> list[Position]:
        return [
            Position.from_db(r) for r in self.db.query("select * from positions order by con_id")
        ]

    def realized_total(self) -> float:
        """Realized P&L over every position ever held (what `all()` would sum, without the rows)."""
        row = self.db.execute("select total(realized_pnl) from positions").fetchone()
        return float(row[0])


class TradingDayRepo:
    """Start-of-day equity and realized P&L keyed by the New York trading date."""

    def __init__(self, db: Database):
        self.db = db

    def get(self, day: date) -> TradingDay | None:
        # A query, not sqlite-utils' get(): asked on every risk check, and it listed the
        # tables each time.
        for row in self.db.query(
            "select * from trading_days where trading_date = ?", [day.isoformat()]
        ):
            return TradingDay.from_row(row)
        return None

    def recent(self, n: int) -> list[TradingDay]:
        """The last `n` trading days, newest first (`optionsbot status`)."""
        # A query, not rows_where: a missing table must raise (a damaged file), not read as empty.
        rows = self.db.query("select * from trading_days order by trading_date desc limit ?", [n])
        return [TradingDay.from_row(r) for r in rows]

    def start_day(self, day: date, equity: float) -> TradingDay:
        """The first call of a day fixes its start equity; later calls return the stored row."""
        with write(self.db):
            self.db.execute(
                "insert or ignore into trading_days (trading_date, start_equity, realized_pnl, guard_tripped, updated_at)"
                " values (?, ?, 0, 0, ?)",
                [day.isoformat(), equity, iso()],
            )
        row = self.get(day)
        assert row is not None
        return row

    def seed(self, day: date, start_equity: float, realized: float | None = None) -> TradingDay:
        """Set the day's start equity (and realized P&L) from the broker's figures, when the
        database did not know the day's beginning: see strategies.broker_state."""
        self.start_day(day, start_equity)
        fields: dict[str, Any] = {"start_equity": start_equity, "updated_at": iso()}
        if realized is not None:
            fields["realized_pnl"] = realized
        with write(self.db):
            self.db["trading_days"].update(day.isoformat(), fields)
        row = self.get(day)
        assert row is not None
        return row

    def add_realized(self, day: date, pnl: float) -> None:
        with write(self.db):
            self.db.execute(
                "update trading_days set realized_pnl = realized_pnl + ?, updated_at = ? where trading_date = ?",
                [pnl, iso(), day.isoformat()],
            )

    def trip_guard(self, day: date) -> None:
        with write(self.db):
            self.db["trading_days"].update(
                day.isoformat(), {"guard_tripped": 1, "updated_at": iso()}
            )


class FillRepo:
    """The fills as the risk side reads them (OrderRepo writes them)."""

    def __init__(self, db: Database):
        self.db = db

    def since(self, day: date) -> list[Fill]:
        """Fills stamped on or after the start of `day` (UTC ISO text compares in time order)."""
        rows = self.db.query("select * from fills where at >= ?", [day.isoformat()])
        return [Fill.from_db(r) for r in rows]


class MachineStateRepo:
    def __init__(self, db: Database):
        self.db = db

    def save(self, name: str, state: str, data: Mapping[str, Any] | None = None) -> None:
        with write(self.db):
            self.db["machine_states"].upsert(
                {"name": name, "state": state, "data": _json(data or {}), "updated_at": iso()},
                pk="name",
            )

    def load(self, name: str) -> tuple[str, dict[str, Any]] | None:
        try:
            row = self.db["machine_states"].get(name)
        except NotFoundError:
            return None
        return row["state"], json.loads(row["data"] or "{}")


class JournalRepo:
    """Every signal and every decision with its reason: the answer to "why did it (not) trade"."""

    def __init__(self, db: Database):
        self.db = db

    def signal(
        self,
        *,
        symbol: str,
        strategy: str,
        direction: str | None,
        confidence: float,
        price: float,
        reasons: Iterable[str],
        bar_time: datetime,
        at: datetime | None = None,
    ) -> None:
        row = SignalRow(
            id=None,
            at=iso(at),
            bar_time=iso(bar_time),
            symbol=symbol,
            strategy=strategy,
            direction=direction or "hold",
            confidence=confidence,
            price=price,
            reasons=tuple(reasons),
        )
        with write(self.db):
            _append(
                self.db,
                "signals",
                _without_id({**asdict(row), "reasons": _json(list(row.reasons))}),
            )

    def decision(
        self,
        *,
        symbol: str,
        stage: str,
        outcome: str,
        reason: str,
        detail: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        row = Decision(
            id=None,
            at=iso(at),
            symbol=symbol,
            stage=stage,
            outcome=outcome,
            reason=redact(reason),
            detail=_json(detail or {}),
        )
        with write(self.db):
            _append(self.db, "decisions", _without_id(asdict(row)))

    def decisions(self, symbol: str | None = None) -> list[Decision]:
        return [Decision.from_row(r) for r in self._rows("decisions", symbol)]

    def last_decision(self, stage: str | None = None) -> Decision | None:
        where, args = ("stage = ?", [stage]) if stage else (None, None)
        rows = self.db["decisions"].rows_where(where, args, order_by="id desc", limit=1)
        row = next(rows, None)
        return Decision.from_row(row) if row is not None else None

    def signals(self, symbol: str | None = None) -> list[SignalRow]:
        return [SignalRow.from_row(r) for r in self._rows("signals", symbol)]

    def _rows(self, table: str, symbol: str | None) -> Iterable[dict[str, Any]]:
        if symbol is None:
            return self.db[table].rows_where(order_by="id")
        return self.db[table].rows_where("symbol = ?", [symbol], order_by="id")


class WhaleRepo:
    def __init__(self, db: Database):
        self.db = db

    def get(self, symbol: str) -> WhaleDebounce | None:
        try:
            return WhaleDebounce.from_row(self.db["whale_debounce"].get(symbol))
        except NotFoundError:
            return None

    def last_fired(self, symbol: str) -> datetime | None:
        row = self.get(symbol)
        return None if row is None else row.last_fired

    def fired(self, symbol: str, at: datetime) -> None:
        row = WhaleDebounce(symbol=symbol, last_fired=at)
        with write(self.db):
            self.db["whale_debounce"].upsert(
                {"symbol": row.symbol, "last_fired": iso(row.last_fired)}, pk="symbol"
            )


class KeyValueRepo:
    def __init__(self, db: Database):
        self.db = db

    def row(self, key: str) -> KeyValue | None:
        for row in self.db.query("select key, value, updated_at from kv where key = ?", [key]):
            return KeyValue(**row)
        return None

    def get(self, key: str, default: str | None = None) -> str | None:
        row = self.row(key)
        return default if row is None else row.value

    def set(self, key: str, value: str) -> None:
        with write(self.db):  # written every tick: a plain upsert, not sqlite-utils' lookups
            self.db.execute(
                "insert into kv (key, value, updated_at) values (?, ?, ?) on conflict(key)"
                " do update set value = excluded.value, updated_at = excluded.updated_at",
                [key, value, iso()],
            )


def recorded_bars(path: Any, bar_size: str = "1 min") -> list[tuple]:
    """(symbol, time, open, high, low, close, volume) of a database's recorded bars, read-only:
    a backtest reads another service's database and must never migrate or lock it for writing."""
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(
            "select symbol, time, open, high, low, close, volume from bars"
            " where bar_size = ? order by symbol, time",
            [bar_size],
        ).fetchall()
    finally:
        conn.close()


class BarRepo:
    """Delivered bars (data.record_bars): one row per (symbol, bar size, start)."""

    def __init__(self, db: Database):
        self.db = db

    def record(self, symbol: str, bar_size: str, bar: Any, live: bool) -> bool:
        """False when this bar was recorded before: a duplicate delivery."""
        with write(self.db):
            cur = self.db.execute(
                "insert or ignore into bars (symbol, bar_size, time, open, high, low, close, volume, live)"
                " values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    symbol,
                    bar_size,
                    iso(bar.time),
                    bar.open,
                    bar.high,
                    bar.low,
                    bar.close,
                    bar.volume,
                    int(live),
                ],
            )
            return cur.rowcount == 1


QUOTE_COLUMNS = tuple(f.name for f in dataclass_fields(OptionQuoteRow) if f.name != "id")


class QuoteRepo:
    """Received option quotes (data.record_quotes), written in batches: one transaction each."""

    def __init__(self, db: Database):
        self.db = db
        ensure_option_quotes(db)

    def record_many(self, rows: Iterable[OptionQuoteRow]) -> int:
        values = [tuple(getattr(r, c) for c in QUOTE_COLUMNS) for r in rows]
        if not values:
            return 0
        sql = (
            f"insert into option_quotes ({', '.join(QUOTE_COLUMNS)})"
            f" values ({', '.join('?' * len(QUOTE_COLUMNS))})"
        )
        with write(self.db):
            self.db.conn.executemany(sql, values)
        return len(values)

    def all(self) -> list[OptionQuoteRow]:
        return [
            OptionQuoteRow.from_db(r) for r in self.db["option_quotes"].rows_where(order_by="id")
        ]


def recorded_option_quotes(
    path: Any, start: datetime | None = None, end: datetime | None = None
) -> list[OptionQuoteRow]:
    """A database's recorded option quotes received in [start, end), in the order they were
    received, read-only (a backtest never migrates or locks another service's database). Empty
    when the file has no option_quotes table (a service that never recorded). Only the dates
    asked are read: a year of recording is gigabytes, a day's backtest needs a day of it."""
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        have = conn.execute(
            "select 1 from sqlite_master where type = 'table' and name = 'option_quotes'"
        ).fetchone()
        if have is None:
            return []
        where, args = [], []
        if start is not None:
            where.append("received_at >= ?")
            args.append(iso(start))
        if end is not None:
            where.append("received_at < ?")
            args.append(iso(end))
        clause = f" where {' and '.join(where)}" if where else ""
        return [
            OptionQuoteRow.from_db(dict(r))
            for r in conn.execute(
                f"select * from option_quotes{clause} order by received_at, id",  # noqa: S608
                args,
            )
        ]
    finally:
        conn.close()

"""Bars: reqHistoricalData (any IB bar size, keepUpToDate streams) and reqRealTimeBars."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from sim import protocol as P
from sim.market import BAR_SIZES, SimBar
from sim.server.contracts import ERR_NO_SECURITY
from sim.server.core import ServerCore
from sim.server.sessions import ClientSession, HistSub, RealTimeSub

# IB's texts, the id appended (error 162 "...query cancelled: 28", error 366 "...ticker id:4").
ERR_HIST_CANCELLED = (
    "Historical Market Data Service error message:API historical data query cancelled: "
)

ERR_NO_HIST_QUERY = "No historical data query found for ticker id:"

# Refuse historical requests that would build more bars than this.
MAX_BARS = 300_000

_BAR_SIZE_RE = re.compile(r"^\s*(\d+)\s*(secs?|mins?|hours?|days?|weeks?|months?|[SDWM])\s*$", re.I)

_DURATION_RE = re.compile(r"^\s*(\d+)\s*([SDWMY])\s*$", re.I)


class HistoryMixin(ServerCore):
    """Historical and real-time bars, built from the market model's native bar sizes.

    Holds no state of its own: a stream's position lives in its HistSub/RealTimeSub on the session.
    """

    def _h_req_historical_data(self, s: ClientSession, fields: list[str]) -> None:
        req = P.decode_req_historical_data(fields)
        now = self.clock.now()
        c = self._resolve_one(s, req.req_id, req.contract, now)
        if c is None:
            return

        def hmds_error(text: str) -> None:
            s.send_error(req.req_id, 162, f"Historical Market Data Service error message:{text}")

        if c.is_option:
            hmds_error("HMDS query returned no data: the simulator has no option bars")
            return
        what = req.what_to_show
        if what not in ("TRADES", "MIDPOINT", "BID", "ASK", "ADJUSTED_LAST"):
            hmds_error(f"whatToShow={what} is not supported by the simulator")
            return
        bar_size = parse_bar_size(req.bar_size)
        if bar_size is None:
            hmds_error(f"Invalid bar size {req.bar_size!r}")
            return
        if req.keep_up_to_date and req.end.strip():
            hmds_error("End date not supported with live updates")
            return
        try:
            end = P.parse_ib_datetime(req.end) or now
        except (ValueError, KeyError):
            hmds_error(f"Invalid endDateTime {req.end!r}")
            return
        end = min(end, now)
        try:
            start = self._duration_start(req.duration, end)
        except ValueError as e:
            hmds_error(str(e))
            return
        span = (end - start).total_seconds()
        if isinstance(bar_size, int) and span / bar_size > MAX_BARS:
            hmds_error("Time length exceed max.")
            return
        bars = self.history_bars(c.symbol, start, end, bar_size)
        daily = bar_size in ("W", "M") or bar_size == 86400
        sent = self._faulty_bars(c.symbol, bars, bar_size, s.client_id, stream=False)
        rows = [_bar_row(b, what, req.format_date, daily) for b in sent]
        s.send(
            P.msg_historical_data(req.req_id, P.format_ib_time(start), P.format_ib_time(end), rows)
        )
        if req.keep_up_to_date:
            s.hist_subs[req.req_id] = HistSub(
                req_id=req.req_id,
                contract=c,
                bar_size=bar_size,
                what=what,
                format_date=req.format_date,
                last_bar_start=bars[-1].time if bars else end,
                last_update=now,
            )

    def _h_cancel_historical_data(self, s: ClientSession, fields: list[str]) -> None:
        # What a real Gateway answers (tws-api message_codes.html; captures in ib_insync issue
        # #268 and IB's historical_market_data.py sample run): a query still open, a live
        # keepUpToDate stream or one not answered yet, is acknowledged with error 162; an id
        # with no open query, unknown or already answered in full, with error 366.
        req_id = P.Reader(fields, 2).int()
        if s.hist_subs.pop(req_id, None) is not None:
            self._answer_hist_cancelled(s, req_id)
        else:
            s.send_error(req_id, 366, f"{ERR_NO_HIST_QUERY}{req_id}")

    def _answer_hist_cancelled(self, s: ClientSession, req_id: int) -> None:
        s.send_error(req_id, 162, f"{ERR_HIST_CANCELLED}{req_id}")

    def _duration_start(self, duration: str, end: datetime) -> datetime:
        m = _DURATION_RE.match(duration)
        if not m:
            raise ValueError(f"Invalid duration {duration!r}")
        n, unit = int(m.group(1)), m.group(2).upper()
        if n <= 0:
            raise ValueError(f"Invalid duration {duration!r}")
        if unit == "S":
            return end - timedelta(seconds=n)
        sessions = {"D": n, "W": 5 * n, "M": 21 * n, "Y": 252 * n}[unit]
        return self.market.sessions_back(end, sessions - 1)

    def history_bars(
        self, symbol: str, start: datetime, end: datetime, bar_size: int | str
    ) -> list[SimBar]:
        """RTH bars of any IB bar size, built from the market model's native sizes."""
        if isinstance(bar_size, int) and bar_size in BAR_SIZES:
            return self.market.bars(symbol, start, end, bar_size)
        if bar_size in ("W", "M"):
            days = self.market.bars(symbol, self._align_start(start, 86400), end, 86400)
            return _group_calendar(days, bar_size)
        assert isinstance(bar_size, int)
        base = max(b for b in (5, 60, 300, 900, 1800) if bar_size % b == 0)
        aligned = self._align_start(start, bar_size)
        return self._group_intraday(self.market.bars(symbol, aligned, end, base), bar_size)

    def _align_start(self, start: datetime, bar_size: int) -> datetime:
        try:
            session_open = self.market.sessions_back(start, 0)
        except ValueError:
            return start
        if bar_size >= 86400:
            return session_open if self.market.session_open_close(start) else start
        offset = (start - session_open).total_seconds()
        if self.market.session_open_close(start) is None:
            return start
        return session_open + timedelta(seconds=(offset // bar_size) * bar_size)

    def _group_intraday(self, bars: list[SimBar], bar_size: int) -> list[SimBar]:
        groups: dict[tuple[datetime, int], list[SimBar]] = {}
        for b in bars:
            session_open = self.market.sessions_back(b.time, 0)
            idx = int((b.time - session_open).total_seconds() // bar_size)
            groups.setdefault((session_open, idx), []).append(b)
        return [
            _merge_bars(group, session_open + timedelta(seconds=idx * bar_size))
            for (session_open, idx), group in sorted(groups.items())
        ]

    def _send_bar_updates(self, s: ClientSession, sub: HistSub, now: datetime) -> None:
        bars = self.history_bars(sub.contract.symbol, sub.last_bar_start, now, sub.bar_size)
        if not bars:
            return
        daily = sub.bar_size in ("W", "M") or sub.bar_size == 86400
        sent = self._faulty_bars(sub.contract.symbol, bars, sub.bar_size, s.client_id, stream=True)
        # Closed bars first with their final values, then the open one: a client never misses a bar.
        s.send_many(
            [
                P.msg_historical_data_update(
                    sub.req_id, _bar_row(b, sub.what, sub.format_date, daily)
                )
                for b in sent
            ]
        )
        sub.last_bar_start = bars[-1].time

    def _h_req_real_time_bars(self, s: ClientSession, fields: list[str]) -> None:
        r = P.Reader(fields, 2)
        req_id = r.int()
        c_req = P.read_contract(r)
        r.skip(1)  # barSize: always 5
        what = r.str().strip().upper()
        now = self.clock.now()
        found = self.resolve(c_req, now)
        if len(found) != 1 or found[0].is_option:
            s.send_error(req_id, 200, ERR_NO_SECURITY)
            return
        start = datetime.fromtimestamp(math.ceil(now.timestamp() / 5) * 5, UTC)
        s.rt_subs[req_id] = RealTimeSub(req_id, found[0], what or "TRADES", start)

    def _h_cancel_real_time_bars(self, s: ClientSession, fields: list[str]) -> None:
        s.rt_subs.pop(P.Reader(fields, 2).int(), None)

    def _send_real_time_bars(self, s: ClientSession, sub: RealTimeSub, now: datetime) -> None:
        if now - sub.next_start < timedelta(seconds=5):
            return
        bars = self.market.bars(sub.contract.symbol, sub.next_start, now, 5)
        msgs = []
        for b in bars:
            if b.time + timedelta(seconds=5) > now:
                break
            msgs.append(P.msg_real_time_bar(sub.req_id, b.time, _bar_row(b, sub.what, 2, False)))
            sub.next_start = b.time + timedelta(seconds=5)
        if not bars:
            sub.next_start = now - timedelta(seconds=now.timestamp() % 5)
        s.send_many(msgs)


def parse_bar_size(text: str) -> int | str | None:
    """Seconds per bar for IB's barSizeSetting, "W"/"M" for weekly/monthly, None if unsupported."""
    m = _BAR_SIZE_RE.match(text or "")
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2).lower()
    if n <= 0:
        return None
    if unit.startswith("sec") or unit == "s":
        seconds = n
    elif unit.startswith("min"):
        seconds = 60 * n
    elif unit.startswith("hour"):
        seconds = 3600 * n
    elif unit.startswith("day") or unit == "d":
        return 86400 if n == 1 else None
    elif unit.startswith("week") or unit == "w":
        return "W" if n == 1 else None
    else:
        return "M" if n == 1 else None
    if seconds in BAR_SIZES:
        return seconds
    if seconds % 5 or seconds > 8 * 3600:
        return None
    return seconds


def _merge_bars(group: list[SimBar], start: datetime) -> SimBar:
    volume = sum(b.volume for b in group)
    wap = sum(b.wap * b.volume for b in group) / volume if volume else group[-1].close
    return SimBar(
        time=start,
        open=group[0].open,
        high=max(b.high for b in group),
        low=min(b.low for b in group),
        close=group[-1].close,
        volume=volume,
        wap=round(wap, 4),
        count=sum(b.count for b in group),
    )


def _group_calendar(days: list[SimBar], unit: str) -> list[SimBar]:
    groups: dict[tuple[int, int], list[SimBar]] = {}
    for b in days:
        d = b.time.astimezone(P.EASTERN).date()
        key = tuple(d.isocalendar()[:2]) if unit == "W" else (d.year, d.month)
        groups.setdefault(key, []).append(b)  # type: ignore[arg-type]
    return [_merge_bars(g, g[0].time) for _, g in sorted(groups.items())]


def _bar_row(b: SimBar, what: str, format_date: int, daily: bool) -> P.BarRow:
    t = P.format_bar_time(b.time, format_date, daily)
    if what in ("TRADES", "ADJUSTED_LAST"):
        return P.BarRow(t, b.open, b.high, b.low, b.close, b.volume, b.wap, b.count)
    if what == "MIDPOINT":
        return P.BarRow(t, b.open, b.high, b.low, b.close, -1, -1.0, -1)
    sign = -1.0 if what == "BID" else 1.0

    def shift(p: float) -> float:
        half = max(0.01, round(p * 0.0001, 2))
        return round(p + sign * half, 2)

    return P.BarRow(t, shift(b.open), shift(b.high), shift(b.low), shift(b.close), -1, -1.0, -1)

"""Gates: what may refuse, hold or queue a request before its handler runs.

The message-rate limit, market data lines, historical pacing and the open-request limit (rules in
sim/pacing.py), the faults that act on a request (contract_not_found, read_only, order_reject,
no_entitlement, ...), and the requests held back until a delay, a farm or an outage ends."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sim import protocol as P
from sim.config import PacingOptions
from sim.orders import PENDING_CANCEL
from sim.pacing import (
    HIST_PACING_TEXT,
    LINES_TEXT,
    MESSAGE_RATE,
    MESSAGE_RATE_DISCONNECT,
    OPEN_HISTORICAL,
    OPEN_HISTORICAL_TEXT,
    RateVerdict,
    message_rate_text,
)
from sim.protocol import In, ProtocolError
from sim.server.contracts import CLASS_UNDERLYING, ERR_NO_SECURITY
from sim.server.core import ServerCore
from sim.server.faults import fill_quantity
from sim.server.history import parse_bar_size
from sim.server.sessions import ClientSession

log = logging.getLogger(__name__)

ERR_CLIENT_ID_IN_USE = (
    "Unable to connect as the client id is already in use. Retry with a unique client id."
)

ERR_READ_ONLY = (
    "Error validating request.-'bO' : cause - The API interface is currently in Read-Only mode."
)

ERR_NO_ENTITLEMENT = {
    354: "Requested market data is not subscribed.Delayed market data is available.{symbol} {exchange}/TOP/ALL",
    10089: (
        "Requested market data requires additional subscription for API. See link in "
        "'Market Data Connections' dialog for more details.Delayed market data is available."
        "{symbol} {exchange}/TOP/ALL"
    ),
}

ERR_DELAYED_NOT_ENABLED = (
    "Requested market data is not subscribed. Delayed market data is not enabled."
)


@dataclass
class HeldRequest:
    """A historical request received but not answered yet, and why."""

    session: ClientSession
    req_id: int
    fields: list[str]
    # "stall" (never), "delay" (at release_at), "farm:<code>"/"outage" (when that ends),
    # "queue" (a free slot under the open-request limit), "latency" (the answer's own delay,
    # at release_at).
    reason: str
    release_at: float | None = None
    symbol: str | None = None
    msg_id: int = In.REQ_HISTORICAL_DATA

    @property
    def open(self) -> bool:
        # Queued requests wait in front of the limit; the others are open at the data farm.
        return self.msg_id == In.REQ_HISTORICAL_DATA and self.reason != "queue"


class GatesMixin(ServerCore):
    """The gate per message id (see the table in dispatch.py) and the held requests."""

    # Historical and contract requests received but not answered yet, in arrival order.
    _held: list[HeldRequest]
    # Messages answered but not sent yet (a snapshot's end): (monotonic due time, session, messages).
    _deferred: list[tuple[float, ClientSession, list[Any]]]

    def _init_gates(self) -> None:
        self._held = []
        self._deferred = []

    def _drop_held(self, session: ClientSession | None = None) -> None:
        """Forget the held requests of one closed session, or everyone's (a Gateway restart)."""
        if session is None:
            self._held.clear()
            self._deferred.clear()
        else:
            self._held = [h for h in self._held if h.session is not session]
            self._deferred = [d for d in self._deferred if d[1] is not session]

    def set_pacing(self, options: PacingOptions) -> None:
        """Change the pacing rules of a running simulator (windows and message counts start afresh)."""
        self.pacing.configure(options)
        for s in self.sessions:
            s.rate = None

    def _rate_ok(self, session: ClientSession) -> bool:
        if not self.pacing.on("message_rate"):
            return True
        if session.rate is None:
            session.rate = self.pacing.new_message_rate()
        verdict = session.rate.check(session.arrived)
        if verdict is RateVerdict.OK:
            return True
        if verdict is RateVerdict.DROP:
            return False
        rate = session.rate
        self.pacing.record(MESSAGE_RATE)
        session.send_error(
            -1, 100, message_rate_text(rate.limit, rate.received_in_window, rate.violations)
        )
        if verdict is RateVerdict.DISCONNECT:
            self.pacing.record(MESSAGE_RATE_DISCONNECT)
            self.stats["dropped_connections"] += 1
            log.warning("%r: message rate violation %d; dropping it", session, rate.violations)
            session.close()
        return False

    def _lines_in_use(self) -> int:
        open_lines = sum(len(s.mkt_subs) + len(s.rt_subs) for s in self.sessions if not s.closed)
        # Lines accepted but still waiting for their first tick hold their line already.
        return open_lines + sum(1 for h in self._held if h.reason == "latency" and _is_line(h))

    def _open_historical(self) -> int:
        subs = sum(len(s.hist_subs) for s in self.sessions if not s.closed)
        return subs + sum(1 for h in self._held if h.open)

    def _request_symbol(
        self, s: ClientSession, msg_id: int, fields: list[str], now: datetime
    ) -> str | None:
        """The (underlying) symbol a request is about, or None."""
        try:
            if msg_id == In.REQ_HISTORICAL_DATA:
                c = P.decode_req_historical_data(fields).contract
            elif msg_id == In.REQ_MKT_DATA:
                c = P.decode_req_mkt_data(fields).contract
            elif msg_id == In.REQ_CONTRACT_DATA:
                c = P.decode_req_contract_details(fields).contract
            elif msg_id == In.PLACE_ORDER:
                c = P.decode_place_order(fields, s.version).contract
            elif msg_id == In.REQ_REAL_TIME_BARS:
                r = P.Reader(fields, 2)
                r.skip(1)
                c = P.read_contract(r)
            elif msg_id == In.REQ_SEC_DEF_OPT_PARAMS:
                r = P.Reader(fields, 1)
                r.skip(1)
                symbol = r.str().strip().upper()
                r.skip(2)
                con_id = r.int()
                if not symbol and con_id:
                    known = self.contract_by_con_id(con_id, now)
                    return known.symbol if known else None
                return symbol or None
            elif msg_id == In.CANCEL_ORDER:
                order = self.book.find_for_client(
                    s.client_id or 0, P.Reader(fields, 2).int(), s.is_master
                )
                return order.contract.symbol if order else None
            else:
                return None
        except (ProtocolError, ValueError, IndexError, TypeError):
            return None
        if c.symbol:
            return c.symbol
        if c.local_symbol:
            occ = P.parse_occ_local_symbol(c.local_symbol)
            if occ is None:
                return c.local_symbol.strip().upper()
            return CLASS_UNDERLYING.get(occ[0], occ[0])
        if c.con_id:
            known = self.contract_by_con_id(c.con_id, now)
            return known.symbol if known else None
        return None

    def _not_found(self, s: ClientSession, symbol: str | None, req_id: int) -> bool:
        """Error 200 for a symbol a contract_not_found fault hides; True when it did."""
        f = self.faults.active("contract_not_found", symbol, s.client_id)
        if f is None:
            return False
        self.faults.hit(f)
        s.send_error(req_id, 200, ERR_NO_SECURITY)
        return True

    def _gate_start_api(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        if s.api_started:
            return True
        client_id = P.Reader(fields, 2).int()
        for f in self.faults.all_active("client_id_in_use"):
            if f.client_ids is not None and client_id not in f.client_ids:
                continue
            if f["mode"] == "quick_reconnect":
                closed = self._last_closed.get(client_id)
                if closed is None or self.monotonic() - closed >= f["within_seconds"]:
                    continue
            self.faults.hit(f)
            log.info("%r: fault %s refuses client id %d", s, f.label, client_id)
            s.send_error(-1, 326, ERR_CLIENT_ID_IN_USE)
            s.close()
            return False
        return True

    def _gate_mkt_data(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        req = P.decode_req_mkt_data(fields)
        symbol = self._request_symbol(s, In.REQ_MKT_DATA, fields, now)
        s.delayed_reqs.discard(req.req_id)
        if self._not_found(s, symbol, req.req_id):
            return False
        f = self.faults.active("no_entitlement", symbol, s.client_id)
        if f is not None:
            self.faults.hit(f)
            delayed_type = s.market_data_type in (3, 4)
            if not delayed_type:
                is_stock = req.contract.sec_type in ("", "STK") and symbol is not None
                exchange = self.market.spec(symbol).primary_exchange if is_stock else "OPRA"
                text = ERR_NO_ENTITLEMENT[f["code"]].format(symbol=symbol, exchange=exchange)
                s.send_error(req.req_id, f["code"], text)
                return False
            if not f["delayed"]:
                s.send_error(req.req_id, 10168, ERR_DELAYED_NOT_ENABLED)
                return False
            s.delayed_reqs.add(req.req_id)
        snapshot = req.snapshot or req.regulatory_snapshot
        if not snapshot and req.req_id not in s.mkt_subs:
            if not self.pacing.lines_allow(self._lines_in_use()):
                s.send_error(req.req_id, 101, LINES_TEXT)
                return False
        return True

    def _gate_real_time_bars(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        req_id = P.Reader(fields, 2).int()
        symbol = self._request_symbol(s, In.REQ_REAL_TIME_BARS, fields, now)
        if self._not_found(s, symbol, req_id):
            return False
        if req_id not in s.rt_subs and not self.pacing.lines_allow(self._lines_in_use()):
            s.send_error(req_id, 101, LINES_TEXT)
            return False
        # IB's realtime_bars.html: real-time bars "combine the limitations of both, top and
        # historical market data": a line each (above), and the pacing of small bars (30 s or
        # less), e.g. "no more than 60 *new* requests for real time bars can be made in 10
        # minutes". Counted in the same window as small historical bars.
        if req_id not in s.rt_subs and self.pacing.historical_applies(5):
            r = P.Reader(fields, 2)
            r.skip(1)
            c = P.read_contract(r)
            r.skip(1)
            what = r.str().strip().upper()
            found = self.resolve(c, now)
            ident = found[0].con_id if len(found) == 1 else (c.symbol, c.sec_type)
            rule = self.pacing.check_historical(
                (ident, c.exchange, "rt", req_id, what), (ident, c.exchange, what)
            )
            if rule is not None:
                log.info("%r: real-time bars request %d breaks %s", s, req_id, rule)
                s.send_error(req_id, 162, HIST_PACING_TEXT)
                return False
        return True

    def _gate_historical(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        req = P.decode_req_historical_data(fields)
        symbol = self._request_symbol(s, In.REQ_HISTORICAL_DATA, fields, now)
        if self._not_found(s, symbol, req.req_id):
            return False
        full = self.pacing.open_full(self._open_historical())
        fail_when_full = self.pacing.options.open_historical_overflow == "fail"
        if full and fail_when_full:
            # Refused before it reaches the data farm, so it does not count for pacing.
            self.pacing.record(OPEN_HISTORICAL)
            limit = self.pacing.options.max_open_historical
            s.send_error(req.req_id, 162, OPEN_HISTORICAL_TEXT.format(limit=limit))
            return False
        if self.pacing.historical_applies(parse_bar_size(req.bar_size)):
            rule = self.pacing.check_historical(*self._hist_keys(req, now))
            if rule is not None:
                log.info("%r: historical request %d breaks %s", s, req.req_id, rule)
                s.send_error(req.req_id, 162, HIST_PACING_TEXT)
                return False
        if full:
            self.pacing.record(OPEN_HISTORICAL)
            self._held.append(HeldRequest(s, req.req_id, fields, "queue", symbol=symbol))
            return False
        return not self._hold_historical(s, req.req_id, fields, symbol)

    def _hist_keys(self, req: P.HistoricalDataRequest, now: datetime) -> tuple[Any, Any, int]:
        c = req.contract
        found = self.resolve(c, now)
        ident: Any = (
            found[0].con_id
            if len(found) == 1
            else (c.con_id, c.symbol, c.sec_type, c.expiry, c.strike, c.right, c.local_symbol)
        )
        what = req.what_to_show
        identical = (
            ident,
            c.exchange,
            req.end.strip(),
            req.bar_size.strip(),
            req.duration.strip(),
            req.use_rth,
            what,
            req.format_date,
            req.keep_up_to_date,
        )
        # IB counts a BID_ASK request twice.
        return identical, (ident, c.exchange, what), 2 if what == "BID_ASK" else 1

    def _hold_historical(
        self, s: ClientSession, req_id: int, fields: list[str], symbol: str | None
    ) -> bool:
        """Hold a historical request a fault keeps unanswered; True when it is held."""
        if (f := self.faults.active("history_stall", symbol, s.client_id)) is not None:
            self.faults.hit(f)
            self._held.append(HeldRequest(s, req_id, fields, "stall", symbol=symbol))
            return True
        if (f := self.faults.active("history_delay", symbol, s.client_id)) is not None:
            self.faults.hit(f)
            release = self.monotonic() + f["delay_seconds"]
            self._held.append(HeldRequest(s, req_id, fields, "delay", release, symbol))
            return True
        if 2105 in self._broken_farms:
            self._held.append(HeldRequest(s, req_id, fields, "farm:2105", symbol=symbol))
            return True
        if self._outages:
            self._held.append(HeldRequest(s, req_id, fields, "outage", symbol=symbol))
            return True
        return False

    def _gate_cancel_historical(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        req_id = P.Reader(fields, 2).int()
        before = len(self._held)
        self._held = [
            h
            for h in self._held
            if not (h.session is s and h.req_id == req_id and h.msg_id == In.REQ_HISTORICAL_DATA)
        ]
        if len(self._held) < before:
            # A query held unanswered is still open: cancelling it is acknowledged (error 162).
            self._answer_hist_cancelled(s, req_id)
            return False
        return True

    def _gate_contract_details(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        req_id = P.Reader(fields, 2).int()
        symbol = self._request_symbol(s, In.REQ_CONTRACT_DATA, fields, now)
        if self._not_found(s, symbol, req_id):
            return False
        return not self._hold_sec_def(s, In.REQ_CONTRACT_DATA, req_id, fields)

    def _hold_sec_def(self, s: ClientSession, msg_id: int, req_id: int, fields: list[str]) -> bool:
        """Contract lookups wait while the sec-def farm is broken; True when this one waits."""
        if 2157 not in self._broken_farms:
            return False
        self._held.append(HeldRequest(s, req_id, fields, "farm:2157", msg_id=msg_id))
        return True

    def _gate_sec_def(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        req_id = P.Reader(fields, 1).int()
        symbol = self._request_symbol(s, In.REQ_SEC_DEF_OPT_PARAMS, fields, now)
        if self._not_found(s, symbol, req_id):
            return False
        if self._hold_sec_def(s, In.REQ_SEC_DEF_OPT_PARAMS, req_id, fields):
            return False
        f = self.faults.active("empty_chain", symbol, s.client_id)
        if f is not None:
            self.faults.hit(f)
            s.send(P.msg_sec_def_opt_params_end(req_id))
            return False
        return True

    def _gate_place_order(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        req = P.decode_place_order(fields, s.version)
        symbol = self._request_symbol(s, In.PLACE_ORDER, fields, now)
        client_id = s.client_id or 0
        if (f := self.faults.active("read_only", symbol, client_id)) is not None:
            self.faults.hit(f)
            s.send_error(req.order_id, 321, ERR_READ_ONLY)
            return False
        if self._not_found(s, symbol, req.order_id):
            return False
        is_new = self.book.get(client_id, req.order_id) is None
        if is_new and (f := self.faults.active("order_reject", symbol, client_id)) is not None:
            self.faults.hit(f)
            self.book.consume_order_id(client_id, req.order_id)
            s.send_error(req.order_id, 201, f"Order rejected - reason:{f['reason']}")
            return False
        return True

    def _gate_cancel_order(self, s: ClientSession, fields: list[str], now: datetime) -> bool:
        order_id = P.Reader(fields, 2).int()
        order = self.book.find_for_client(s.client_id or 0, order_id, s.is_master)
        if order is None or not order.is_live:
            return True
        f = self.faults.active("fill_after_cancel", order.contract.symbol, order.client_id)
        if f is None:
            return True
        quote = self._book_quote(order.contract, now)
        price = self._racing_fill_price(order, quote)
        if price is None:
            return True
        self.faults.hit(f)
        order.status = PENDING_CANCEL
        self.order_changed(order, False)
        fraction = self.faults.draw(f, f["fraction"])
        qty = fill_quantity(order.remaining, fraction, allow_all=True)
        # The fill was already on its way from the exchange when the cancel arrived.
        self.book.fill_now(order, qty, price, now)
        if not order.is_done:
            self.book.cancel_by_system(order, now, reason="")
        self._account_changed()
        return False

    def _release_where(self, pred: Callable[[HeldRequest], bool]) -> None:
        due = [h for h in self._held if pred(h)]
        if not due:
            return
        self._held = [h for h in self._held if not pred(h)]
        for h in due:
            self._answer_held(h)

    def _hold_for_latency(self, s: ClientSession, msg_id: int, fields: list[str]) -> bool:
        """Hold a request for its kind's drawn latency; True when held (answered on release).

        Order requests (place and cancel) of one session stay in arrival order: a cancel never
        overtakes the order it cancels, and a fill never comes before the order's acknowledgement.
        """
        kind = LATENCY_OF.get(msg_id)
        if kind is None or self.options.latency.instant:
            return False
        delay = self.latency.draw(kind)
        if delay <= 0:
            return False
        release = self.monotonic() + delay
        if kind == "order_ack":
            for h in self._held:
                if h.session is s and h.reason == "latency" and h.msg_id in ORDER_MSGS:
                    release = max(release, h.release_at or release)
        symbol = None
        if msg_id == In.REQ_HISTORICAL_DATA:
            symbol = self._request_symbol(s, msg_id, fields, self.clock.now())
        self._held.append(
            HeldRequest(s, _req_id(msg_id, fields), fields, "latency", release, symbol, msg_id)
        )
        return True

    def _defer(self, s: ClientSession, delay: float, msgs: list[Any]) -> None:
        """Send `msgs` to `s` after `delay` real seconds (at once when 0)."""
        if delay <= 0:
            s.send_many(msgs)
            return
        self._deferred.append((self.monotonic() + delay, s, msgs))

    def _forget_held_mkt_data(self, s: ClientSession, req_id: int) -> None:
        """A cancelMktData for a line or snapshot not answered yet: it will never be."""
        self._held = [
            h
            for h in self._held
            if not (h.session is s and h.req_id == req_id and h.msg_id == In.REQ_MKT_DATA)
        ]

    def _release_held(self) -> None:
        mono = self.monotonic()
        if self._deferred:
            due = [d for d in self._deferred if d[0] <= mono]
            if due:
                self._deferred = [d for d in self._deferred if d[0] > mono]
                for _, s, msgs in due:
                    s.send_many(msgs)
        if not self._held:
            return
        self._release_where(
            lambda h: h.reason == "delay" and h.release_at is not None and h.release_at <= mono
        )
        due = [
            h
            for h in self._held
            if h.reason == "latency" and h.release_at is not None and h.release_at <= mono
        ]
        for h in due:
            self._held.remove(h)
            # What happened while it was on its way applies: a farm that broke, an outage.
            if h.msg_id == In.REQ_HISTORICAL_DATA:
                if self._hold_historical(h.session, h.req_id, h.fields, h.symbol):
                    continue
            elif h.msg_id in (In.REQ_CONTRACT_DATA, In.REQ_SEC_DEF_OPT_PARAMS):
                if self._hold_sec_def(h.session, h.msg_id, h.req_id, h.fields):
                    continue
            self._answer_held(h)
        limit = self.pacing.options.max_open_historical
        while any(h.reason == "queue" for h in self._held):
            if self.pacing.on("open_historical") and self._open_historical() >= limit:
                break
            h = next(h for h in self._held if h.reason == "queue")
            self._held.remove(h)
            # Faults that started while it waited apply to it as to a fresh request.
            if not self._hold_historical(h.session, h.req_id, h.fields, h.symbol):
                self._answer_held(h)

    def _answer_held(self, h: HeldRequest) -> None:
        if h.session.closed:
            return
        self._run_handler(h.session, h.msg_id, self._handlers[h.msg_id], h.fields)


# Message id -> the latency kind (sim/latency.py) its answer waits for.
LATENCY_OF = {
    In.REQ_CONTRACT_DATA: "contract_details",
    In.REQ_SEC_DEF_OPT_PARAMS: "sec_def",
    In.REQ_MKT_DATA: "first_tick",
    In.REQ_HISTORICAL_DATA: "historical",
    In.PLACE_ORDER: "order_ack",
    In.CANCEL_ORDER: "order_ack",
}
ORDER_MSGS = frozenset({In.PLACE_ORDER, In.CANCEL_ORDER})


def _req_id(msg_id: int, fields: list[str]) -> int:
    """The request id a later cancel names (market data, history), or -1."""
    try:
        if msg_id == In.REQ_MKT_DATA:
            return P.decode_req_mkt_data(fields).req_id
        if msg_id == In.REQ_HISTORICAL_DATA:
            return P.decode_req_historical_data(fields).req_id
    except (ProtocolError, ValueError, IndexError, TypeError):
        pass
    return -1


def _is_line(h: HeldRequest) -> bool:
    if h.msg_id != In.REQ_MKT_DATA:
        return False
    try:
        req = P.decode_req_mkt_data(h.fields)
    except (ProtocolError, ValueError, IndexError, TypeError):
        return False
    return not (req.snapshot or req.regulatory_snapshot)

"""Market data: reqMktData streams and snapshots, delayed data, tick messages, and the quotes the
order book matches against."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from typing import Any

from sim import protocol as P
from sim.orders import Quote, SimContract
from sim.pricing import option_tick
from sim.protocol import Tick
from sim.server.core import ServerCore
from sim.server.sessions import ClientSession, MktDataSub

log = logging.getLogger(__name__)

MSG_DELAYED = "Requested market data is not subscribed. Displaying delayed market data."

# Delayed data is 15 minutes old and comes with its own tick types (what ib_async and ib_insync map).
DELAY = timedelta(minutes=15)

DELAYED_TICKS = {
    Tick.BID: 66,
    Tick.ASK: 67,
    Tick.LAST: 68,
    Tick.VOLUME: 74,
    Tick.CLOSE: 75,
    Tick.MODEL_OPTION: 83,
}


class MarketDataMixin(ServerCore):
    """Quotes from the market model, turned into IB tick messages for each subscription."""

    # (conId, instant) -> quote: one simulation step asks for the same quote many times.
    _quote_cache: dict[tuple[int, float], Any]
    # (conId, session date) -> that session's close, for the close tick (9).
    _prev_close_cache: dict[tuple[int, date], float]

    def _init_market_data(self) -> None:
        self._quote_cache = {}
        self._prev_close_cache = {}

    def _forget_quotes(self) -> None:
        """Simulated time moved (a new step, a clock jump): the cached quotes are of another instant."""
        self._quote_cache.clear()

    def _h_req_market_data_type(self, s: ClientSession, fields: list[str]) -> None:
        data_type = P.Reader(fields, 2).int(1)
        if data_type in (1, 2, 3, 4):
            s.market_data_type = data_type

    def _h_req_mkt_data(self, s: ClientSession, fields: list[str]) -> None:
        req = P.decode_req_mkt_data(fields)
        now = self.clock.now()
        c = self._resolve_one(s, req.req_id, req.contract, now)
        if c is None:
            return
        generic = frozenset(g.strip() for g in req.generic_ticks.split(",") if g.strip())
        delayed = req.req_id in s.delayed_reqs
        s.delayed_reqs.discard(req.req_id)
        sub = MktDataSub(req.req_id, c, generic, delayed=delayed)
        msgs: list[Any] = []
        if delayed:
            msgs.append(P.msg_error(s.version, req.req_id, 10167, MSG_DELAYED))
            self.stats["errors"][10167] += 1
        msgs.append(P.msg_market_data_type(req.req_id, s.market_data_type))
        if not self._outages and 2103 not in self._broken_farms:
            msgs += self._tick_messages(sub, now, force=True, client_id=s.client_id)
        if req.snapshot or req.regulatory_snapshot:
            s.send_many(msgs)
            # The end comes once IB has gathered the snapshot, up to 11 s after the request.
            self._defer(s, self.latency.draw("snapshot"), [P.msg_tick_snapshot_end(req.req_id)])
            return
        s.mkt_subs[req.req_id] = sub
        s.send_many(msgs)

    def _h_cancel_mkt_data(self, s: ClientSession, fields: list[str]) -> None:
        req_id = P.Reader(fields, 2).int()
        s.mkt_subs.pop(req_id, None)
        self._forget_held_mkt_data(s, req_id)

    def _tick_messages(
        self, sub: MktDataSub, now: datetime, force: bool, client_id: int | None = None
    ) -> list[Any]:
        c = sub.contract
        if sub.delayed:
            now = now - DELAY
        try:
            q = self._quote(c, now)
        except (ValueError, KeyError) as e:
            log.debug("no quote for %s: %s", c.local_symbol, e)
            return []
        q, raw = self._faulty_quote(c, q, client_id)
        msgs = self._live_tick_messages(sub, c, q, now, force, raw)
        if sub.delayed:
            msgs = [_as_delayed(m) for m in msgs]
        return msgs

    def _live_tick_messages(
        self, sub: MktDataSub, c: SimContract, q: Any, now: datetime, force: bool, raw: bool = False
    ) -> list[Any]:
        rid = sub.req_id
        last = sub.last
        msgs: list[Any] = []

        def changed(key: str, value: Any) -> bool:
            if force or last.get(key) != value:
                last[key] = value
                return True
            return False

        index = c.sec_type == "IND"
        # An index is a calculated value: IB sends its last (and close), never a bid, ask or volume.
        if not index and changed("bid", (q.bid, q.bid_size)):
            msgs.append(
                P.msg_tick_price(rid, Tick.BID, q.bid if q.bid > 0 or raw else -1.0, q.bid_size, 1)
            )
        if not index and changed("ask", (q.ask, q.ask_size)):
            msgs.append(
                P.msg_tick_price(rid, Tick.ASK, q.ask if q.ask > 0 or raw else -1.0, q.ask_size, 1)
            )
        if q.last and changed("last", q.last):
            size = 1 if c.is_option else 0 if index else 100
            msgs.append(P.msg_tick_price(rid, Tick.LAST, q.last, size, 0))
        if not index and changed("volume", q.volume):
            msgs.append(P.msg_tick_size(rid, Tick.VOLUME, q.volume))
        if force:
            close = self._prev_close(c, now)
            if close:
                msgs.append(P.msg_tick_price(rid, Tick.CLOSE, close, 0, 0))
        if c.is_option:
            comp = (q.iv, q.delta, q.model_price, q.gamma, q.vega, q.theta, q.und_price)
            if changed("greeks", comp):
                msgs.append(
                    P.msg_tick_option_computation(
                        rid,
                        Tick.MODEL_OPTION,
                        q.iv,
                        q.delta,
                        q.model_price,
                        0.0,
                        q.gamma,
                        q.vega,
                        q.theta,
                        q.und_price,
                    )
                )
            if "106" in sub.generic and changed("iv", q.iv):
                msgs.append(P.msg_tick_generic(rid, Tick.OPTION_IMPLIED_VOL, q.iv))
            if "101" in sub.generic and force:
                oi = 500 + (c.con_id % 20_000)
                tick = (
                    Tick.OPTION_CALL_OPEN_INTEREST
                    if c.right == "C"
                    else Tick.OPTION_PUT_OPEN_INTEREST
                )
                msgs.append(P.msg_tick_size(rid, tick, oi))
        elif "106" in sub.generic and force:
            msgs.append(
                P.msg_tick_generic(rid, Tick.OPTION_IMPLIED_VOL, self.market.spec(c.symbol).vol)
            )
        return msgs

    def _quote(self, c: SimContract, now: datetime) -> Any:
        key = (c.con_id, now.timestamp())
        q = self._quote_cache.get(key)
        if q is None:
            if c.is_option:
                q = self.market.option_quote(c.symbol, c.expiry, c.strike, c.right, now)
            else:
                q = self.market.quote(c.symbol, now)
            if len(self._quote_cache) > 10_000:
                self._quote_cache.clear()
            self._quote_cache[key] = q
        return q

    def _book_quote(self, c: SimContract, now: datetime) -> Quote | None:
        try:
            q = self._quote(c, now)
        except (ValueError, KeyError) as e:
            log.debug("no quote for %s: %s", c.local_symbol, e)
            return None
        return Quote(q.bid, q.ask, q.bid_size, q.ask_size)

    def _price_tick(self, c: SimContract, price: float) -> float:
        if c.is_option:
            return option_tick(c.symbol, price)
        return 0.01 if price >= 1.0 else 0.0001

    def _prev_close(self, c: SimContract, now: datetime) -> float | None:
        """The previous session's closing price, as IB's close tick (9) reports it."""
        try:
            prev_open = self.market.sessions_back(now, 1)
        except ValueError:
            return None
        bounds = self.market.session_open_close(prev_open)
        if bounds is None:
            return None
        key = (c.con_id, bounds[1].date())
        cached = self._prev_close_cache.get(key)
        if cached is not None:
            return cached
        if c.is_option:
            value = self.market.option_quote(
                c.symbol, c.expiry, c.strike, c.right, bounds[1] - timedelta(seconds=1)
            ).last
        else:
            value = self.market.last_price(c.symbol, bounds[1])
        if len(self._prev_close_cache) > 10_000:
            self._prev_close_cache.clear()
        self._prev_close_cache[key] = value
        return value


def _as_delayed(msg: list[Any]) -> list[Any]:
    """A live tick message re-labelled with its delayed tick type."""
    msg_id = msg[0]
    if msg_id in (P.Out.TICK_PRICE, P.Out.TICK_SIZE):
        tick = msg[3]
        if tick in DELAYED_TICKS:
            return [*msg[:3], DELAYED_TICKS[tick], *msg[4:]]
    elif msg_id == P.Out.TICK_OPTION_COMPUTATION:
        tick = msg[2]
        if tick in DELAYED_TICKS:
            return [*msg[:2], DELAYED_TICKS[tick], *msg[3:]]
    return msg

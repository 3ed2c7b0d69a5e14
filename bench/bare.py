"""The simplest program that trades like the service: one ib_async script, everything inline.

The yardstick of `python -m bench.latency`: the same stream (keepUpToDate 1-minute bars, or
real-time 5-second bars aggregated to minutes), the same scalp rule on each closed bar, the same
option choice from the same quote requests (qualify the strikes in play, one snapshot each), and
the same bracket, one contract. No actors, no database, no risk gate, no pacing of its own: what
it costs is what IB's answers cost.

    python -m bench.bare --port 4002 --symbols SPY QQQ
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ib_async import IB, LimitOrder, Stock, StopOrder

from actors import messages as m
from actors.connection.convert import bar_from_ib, ib_option, price
from actors.hours import MarketHours
from actors.orders.entry import bracket_legs, candidates, choose, new_bracket_ref
from strategies.aggregate import MinuteAggregator
from strategies.bars import Bar
from strategies.options import OptionParams
from strategies.scalp import Cooldown, ScalpParams, ScalpStrategy
from strategies.ticks import bracket_prices

log = logging.getLogger("bench.bare")


class Bare:
    """One connection, one rule per symbol, one entry per signal."""

    def __init__(
        self,
        port: int,
        symbols: list[str],
        now: Callable[[], datetime],
        client_id: int = 77,
        stream: str = "historical",
        scalp: ScalpParams | None = None,
        cooldown_bars: int = 0,
        options: OptionParams | None = None,
    ) -> None:
        self.port, self.symbols, self.now, self.client_id = port, symbols, now, client_id
        self.stream = stream
        self.scalp = {s: ScalpStrategy(s, scalp or ScalpParams()) for s in symbols}
        self.cooldown = {s: Cooldown(cooldown_bars) for s in symbols}
        self.params = options or OptionParams()
        self.chains: dict[str, m.Chain] = {}
        self.minutes = {s: MinuteAggregator() for s in symbols}
        self.ib = IB()
        self.entries = 0
        self.skips: dict[str, int] = {}
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        ib = self.ib
        await ib.connectAsync("127.0.0.1", self.port, clientId=self.client_id, timeout=20)
        for symbol in self.symbols:
            [stock] = await ib.qualifyContractsAsync(Stock(symbol, "SMART", "USD"))
            rows = await ib.reqSecDefOptParamsAsync(symbol, "", "STK", stock.conId)
            row = sorted(
                [r for r in rows if r.exchange == "SMART"] or rows,
                key=lambda r: (r.tradingClass != symbol, -len(r.expirations)),
            )[0]
            self.chains[symbol] = m.Chain(
                symbol=symbol,
                con_id=stock.conId,
                trading_class=row.tradingClass,
                multiplier=int(float(row.multiplier or 100)),
                expirations=tuple(sorted(row.expirations)),
                strikes=tuple(sorted(row.strikes)),
            )
            if self.stream == "realtime":
                history = await ib.reqHistoricalDataAsync(
                    stock, "", "1 D", "1 min", "TRADES", True, 2, keepUpToDate=False
                )
                self._warm(symbol, history)
                live = ib.reqRealTimeBars(stock, 5, "TRADES", True)
                live.updateEvent += self._on_five_seconds(symbol)
            else:
                bars = await ib.reqHistoricalDataAsync(
                    stock, "", "1 D", "1 min", "TRADES", True, 2, keepUpToDate=True
                )
                self._warm(symbol, bars[:-1])
                bars.updateEvent += self._on_update(symbol)

    def _warm(self, symbol: str, history: Any) -> None:
        for b in history:
            bar = bar_from_ib(b)
            if bar.time + timedelta(minutes=1) <= self.now():
                self.scalp[symbol].on_bar(bar, MarketHours.trading_date(bar.time))

    def _on_update(self, symbol: str) -> Callable[[Any, bool], None]:
        def on_update(bars: Any, has_new_bar: bool) -> None:
            if has_new_bar and len(bars) >= 2:
                self._closed(symbol, bar_from_ib(bars[-2]))

        return on_update

    def _on_five_seconds(self, symbol: str) -> Callable[[Any, bool], None]:
        def on_bar(bars: Any, _: bool) -> None:
            b = bars[-1]
            five = Bar(b.time.astimezone(UTC), b.open_, b.high, b.low, b.close, max(0.0, b.volume))
            for minute in self.minutes[symbol].update(five):
                self._closed(symbol, minute)

        return on_bar

    def _closed(self, symbol: str, bar: Bar) -> None:
        signal = self.scalp[symbol].on_bar(bar, MarketHours.trading_date(bar.time))
        self.cooldown[symbol].on_bar()
        if signal.direction is None or not self.cooldown[symbol].admit():
            return
        task = asyncio.ensure_future(self._enter(signal))
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._skip(f"error: {task.exception()!r}")

    async def _enter(self, signal: Any) -> None:
        ib, symbol = self.ib, signal.symbol
        today: date = MarketHours.trading_date(self.now())
        found = candidates(signal, self.chains[symbol], today, self.params)
        if isinstance(found, str):
            self._skip(found)
            return
        contracts = [ib_option(c) for c in found.contracts]
        qualified = [q for q in await ib.qualifyContractsAsync(*contracts) if q and q.conId]
        tickers = await ib.reqTickersAsync(*qualified)
        now = self.now()
        quotes = []
        for c, t in zip(found.contracts, tickers, strict=False):
            bid, ask = price(t.bid), price(t.ask)
            if math.isnan(bid) or math.isnan(ask):
                continue
            quotes.append(
                m.OptionQuote(
                    contract=m.OptionContract(
                        symbol, c.expiry, t.contract.strike, c.right, con_id=t.contract.conId
                    ),
                    bid=bid,
                    ask=ask,
                    last=math.nan,
                    volume=t.volume if math.isfinite(t.volume) else 0.0,
                    time=now,
                    age_known=True,  # a snapshot is taken as fresh: the simplest program would
                )
            )
        choice = choose(symbol, quotes, (), found.target, now, 1.0, self.params)
        if isinstance(choice, str):
            self._skip(choice)
            return
        take_profit, stop = bracket_prices(symbol, choice.limit, 0.30, 0.20)
        legs = bracket_legs(new_bracket_ref(symbol, now), 1, choice.limit, take_profit, stop)
        contract = next(q for q in qualified if q.conId == choice.contract.con_id)
        ids: dict[str, int] = {}
        for leg in legs:
            if leg.order_type == "LMT":
                order = LimitOrder(leg.action, leg.quantity, leg.limit_price)
            else:
                order = StopOrder(leg.action, leg.quantity, leg.aux_price)
            order.orderId = ib.client.getReqId()
            order.orderRef, order.transmit, order.tif = leg.order_ref, leg.transmit, leg.tif
            if leg.parent_ref:
                order.parentId = ids[leg.parent_ref]
            if leg.oca_group:
                order.ocaGroup, order.ocaType = leg.oca_group, 1
            ids[leg.order_ref] = order.orderId
            ib.placeOrder(contract, order)
        self.entries += 1

    def _skip(self, reason: str) -> None:
        key = reason.split(":", 1)[0]
        self.skips[key] = self.skips.get(key, 0) + 1

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.ib.disconnect()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=4002)
    p.add_argument("--symbols", nargs="+", default=["SPY"])
    p.add_argument("--stream", choices=("historical", "realtime"), default="historical")
    args = p.parse_args(argv)
    bare = Bare(args.port, args.symbols, lambda: datetime.now(UTC), stream=args.stream)

    async def run() -> None:
        await bare.start()
        while True:
            await asyncio.sleep(60)
            print(f"{bare.entries} entries; skipped {bare.skips}")

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a backtest's market comes from: the simulator's seeded market, or recorded bars.

Either way the answers have the shapes the ConnectionActor gives the other actors (our `Bar`,
`m.Chain`, `m.OptionQuote`), so the replay (replay.py) can stand in for it. Options are priced
from the underlying by the simulator's model (sim/market.py, sim/pricing.py: Black-Scholes with
its skew and spread rules): from the model's own path for the seeded market, from the last
closed bar's close for recorded bars (nothing later is ever used: no lookahead).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from actors import messages as m
from actors.hours import MarketHours
from sim.market import BIG_ETFS, RATE, MarketModel, default_spec
from sim.pricing import black_scholes, option_tick, round_to_tick
from sim.protocol import occ_local_symbol
from strategies.aggregate import HourlyAggregator
from strategies.bars import Bar

NEW_YORK = ZoneInfo("America/New_York")
MINUTE = timedelta(minutes=1)
_YEAR = 365.0 * 86400.0


class Market(Protocol):
    description: str

    def minute_bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]: ...
    def hour_bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]: ...
    def chain(self, symbol: str, t: datetime) -> m.Chain | None: ...
    def option_quote(self, contract: m.OptionContract, t: datetime) -> m.OptionQuote | str: ...


def _bar(b) -> Bar:
    return Bar(b.time, b.open, b.high, b.low, b.close, float(b.volume))


def _full(contract: m.OptionContract, model: MarketModel) -> m.OptionContract:
    """The contract as qualification at the Gateway would return it: conId and OCC symbol."""
    return m.OptionContract(
        symbol=contract.symbol,
        expiry=contract.expiry,
        strike=contract.strike,
        right=contract.right,
        con_id=model.option_con_id(
            contract.symbol, contract.expiry, contract.strike, contract.right
        ),
        local_symbol=occ_local_symbol(
            contract.symbol, contract.expiry, contract.strike, contract.right
        ),
        trading_class=contract.trading_class or contract.symbol,
        multiplier=contract.multiplier or 100,
    )


class SimMarket:
    """The simulator's seeded market, asked directly (no socket): the same numbers the embedded
    Gateway simulator serves for the same seed and time."""

    description = "the simulator's seeded market (sim/market.py); options priced by its model"

    def __init__(self, seed: int, symbols: Iterable[str]) -> None:
        specs = [default_spec(s) for s in symbols]
        # Memory flat over a long run: the run walks forward, so a few sessions per symbol do.
        self.model = MarketModel(seed=seed, specs=specs, paths_per_symbol=4)
        self._keep = 2 * len(specs) + 2
        # (symbol, session open) -> that session's minute bars and their start times: the
        # driver asks for one new bar per symbol per minute, and the model would aggregate
        # the bar again on every call.
        self._sessions: dict[tuple[str, datetime], tuple[list[datetime], list[Bar]]] = {}

    def minute_bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        session = self.model.session_open_close(end - MINUTE)
        if session is not None and session[0] <= start:
            key = (symbol, session[0])
            if key not in self._sessions:
                bars = [_bar(b) for b in self.model.bars(symbol, session[0], session[1], 60)]
                self._sessions[key] = ([b.time for b in bars], bars)
                if len(self._sessions) > self._keep:  # today's and yesterday's per symbol
                    del self._sessions[next(iter(self._sessions))]
            times, bars = self._sessions[key]
            i, j = bisect.bisect_left(times, start), bisect.bisect_left(times, end)
            return [b for b in bars[i:j] if b.time + MINUTE <= end]
        # The model adds the bar still forming at `end`: not a bar yet.
        return [_bar(b) for b in self.model.bars(symbol, start, end, 60) if b.time + MINUTE <= end]

    def hour_bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        return [_bar(b) for b in self.model.bars(symbol, start, end, 3600)]

    def chain(self, symbol: str, t: datetime) -> m.Chain | None:
        c = self.model.option_chain(symbol, t)
        spec = self.model.spec(symbol)
        return m.Chain(
            symbol=symbol,
            con_id=spec.con_id,
            trading_class=c.trading_class,
            multiplier=int(c.multiplier),
            expirations=c.expirations,
            strikes=c.strikes,
        )

    def option_quote(self, contract: m.OptionContract, t: datetime) -> m.OptionQuote | str:
        c = contract
        if c.expiry < self.model.session_date(t).strftime("%Y%m%d"):
            return "expired"
        q = self.model.option_quote(c.symbol, c.expiry, c.strike, c.right, t)
        return m.OptionQuote(
            contract=_full(c, self.model),
            bid=q.bid,
            ask=q.ask,
            last=q.last,
            volume=float(q.volume),
            time=t,
        )


def price_option(
    symbol: str,
    expiry: str,
    strike: float,
    right: str,
    spot: float,
    t: datetime,
    vol: float,
    center: float,
    session_fraction: float,
    session_day: date,
    daily_volume: float,
) -> tuple[float, float, float, float]:
    """(bid, ask, last, volume) by the simulator's rules (sim/market.py `option_quote`), from
    a given spot instead of the model's own path; the volume without its per-contract noise."""
    exp_date = datetime.strptime(expiry, "%Y%m%d").date()
    exp_ts = datetime.combine(exp_date, time(16, 0), NEW_YORK).timestamp()
    t_years = max(0.0, (exp_ts - t.timestamp()) / _YEAR)
    moneyness = math.log(strike / spot)
    iv = vol * (1.0 + 0.8 * abs(moneyness))
    if right == "P":
        iv += 0.1 * max(0.0, -moneyness)
    model = black_scholes(spot, strike, t_years, iv, RATE, right)
    spread = max(option_tick(symbol, model), (0.03 + 0.4 * abs(moneyness)) * model)
    bid_raw, ask_raw = model - spread / 2.0, model + spread / 2.0
    bid = round_to_tick(bid_raw, option_tick(symbol, bid_raw), "down") if bid_raw > 0 else 0.0
    ask = round_to_tick(ask_raw, option_tick(symbol, ask_raw), "up")
    ask = max(ask, round(bid + option_tick(symbol, bid), 2))
    mid = 0.5 * (bid + ask)
    last = round_to_tick(mid, option_tick(symbol, mid), "nearest")
    dte = (exp_date - session_day).days
    volume = 0.0
    if dte >= 0:
        atm = 30000.0 * (daily_volume / 60e6) / (1.0 + dte / 3.0)
        width = 0.01 * (1.0 + math.sqrt(dte / 2.0))
        otm = strike >= center if right == "C" else strike <= center
        shape = math.exp(-0.5 * (math.log(strike / center) / width) ** 2)
        volume = float(
            int(atm * (1.0 if otm else 0.35) * shape * min(1.0, max(0.0, session_fraction)))
        )
    return bid, ask, last, volume


class BarsMarket:
    """Recorded 1-minute bars (a CSV file or a service database's `bars` table).

    Hourly bars are built from the minutes on IB's RTH grid (the DataActor's own aggregator).
    Chains take the simulator's expiry calendar and strikes around the session's first open;
    quotes are priced from the last close at or before the time asked: never a later bar.
    """

    description = (
        "recorded 1-minute bars; options priced from the underlying by the simulator's model "
        "(Black-Scholes, its skew and spreads; volatility from sim/market.py's symbol table)"
    )

    def __init__(
        self, bars: dict[str, list[Bar]], hours: MarketHours, options: SimMarket | None = None
    ) -> None:
        """`options`: take chains and option quotes from the simulator's market instead (bars
        the simulator served, recorded by a service: its options are the recorded quotes)."""
        self.options = options
        if options is not None:
            self.description = (
                "recorded 1-minute bars; options as the simulator quoted them (its seeded model)"
            )
        self.bars = {s: sorted(b, key=lambda x: x.time) for s, b in bars.items()}
        self.times = {s: [b.time for b in bs] for s, bs in self.bars.items()}
        self.hours = hours
        self.calendar = MarketModel(seed=0)  # only its expiry calendar and contract ids

    def _slice(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        times = self.times.get(symbol, [])
        i, j = bisect.bisect_left(times, start), bisect.bisect_left(times, end)
        return self.bars[symbol][i:j] if times else []

    def minute_bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        return [b for b in self._slice(symbol, start, end) if b.time + MINUTE <= end]

    def hour_bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        out: list[Bar] = []
        agg, session = HourlyAggregator(), None
        for bar in self.minute_bars(symbol, start, end):
            s = self.hours.session_at(bar.time)
            if s is None:
                continue
            if s != session:
                agg, session = HourlyAggregator(), s
            out.extend(agg.update(bar, s.open, s.close))
        return out

    def _last_close(self, symbol: str, t: datetime) -> Bar | None:
        """The newest bar that has closed by `t`."""
        times = self.times.get(symbol, [])
        i = bisect.bisect_right(times, t - MINUTE) - 1
        return self.bars[symbol][i] if i >= 0 else None

    def _center(self, symbol: str, t: datetime) -> float | None:
        session = self.hours.session_at(t)
        if session is not None:
            first = self._slice(symbol, session.open, t)
            if first:
                return first[0].open
        last = self._last_close(symbol, t)
        return last.close if last else None

    def chain(self, symbol: str, t: datetime) -> m.Chain | None:
        if self.options is not None:
            return self.options.chain(symbol, t)
        center = self._center(symbol, t)
        if center is None:
            return None
        spec = default_spec(symbol)
        step = spec.strike_step
        if symbol not in BIG_ETFS and center < 25:
            step = 0.5 if center < 10 else 1.0
        lo, hi = (
            math.ceil(round(center * 0.85 / step, 9)),
            math.floor(round(center * 1.15 / step, 9)),
        )
        return m.Chain(
            symbol=symbol,
            con_id=spec.con_id,
            trading_class=symbol,
            multiplier=100,
            expirations=self.calendar.option_chain(symbol, t).expirations,
            strikes=tuple(round(i * step, 6) for i in range(lo, hi + 1)),
        )

    def option_quote(self, contract: m.OptionContract, t: datetime) -> m.OptionQuote | str:
        if self.options is not None:
            return self.options.option_quote(contract, t)
        c = contract
        last = self._last_close(c.symbol, t)
        center = self._center(c.symbol, t)
        if last is None or center is None:
            return "no underlying price yet"
        session = self.hours.session_at(t) or self.hours.last_session(t)
        if session is None:
            return "no session"
        frac = (t - session.open) / (session.close - session.open)
        spec = default_spec(c.symbol)
        bid, ask, price, volume = price_option(
            c.symbol,
            c.expiry,
            c.strike,
            c.right,
            last.close,
            t,
            spec.vol,
            center,
            frac,
            session.date,
            spec.daily_volume,
        )
        return m.OptionQuote(
            contract=_full(c, self.calendar),
            bid=bid,
            ask=ask,
            last=price,
            volume=volume,
            time=t.astimezone(UTC),
        )

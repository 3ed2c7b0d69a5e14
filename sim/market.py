"""Seeded, deterministic, order-independent market model: stock paths, bars, quotes and option chains."""

from __future__ import annotations

import functools
import hashlib
import math
import struct
import threading
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import accumulate
from statistics import NormalDist
from zoneinfo import ZoneInfo

import numpy as np

from sim.listed import DAILY_EXPIRY, LISTED, listed_con_id
from sim.pricing import black_scholes, greeks, normalize_right, option_tick, round_to_tick

NEW_YORK = ZoneInfo("America/New_York")
BIG_ETFS = frozenset({"SPY", "QQQ", "IWM"})
BAR_SIZES = frozenset({5, 60, 300, 900, 1800, 3600, 86400})
RATE = 0.04
STEP_SECONDS = 5
FULL_SESSION_STEPS = 4680  # 6.5 h of 5 s steps
# Session 0 of every symbol's chain; fixed so a session's random stream never depends on first use.
ANCHOR_DATE = "2020-01-02"
CALENDAR_END = "2035-12-31"

_MASK64 = (1 << 64) - 1
_YEAR_SECONDS = 252 * 6.5 * 3600
_SECONDS_PER_YEAR_CAL = 365.0 * 86400.0

# Price path shape. Units of the drift terms are the per-step diffusion sigma.
_GAP_FRACTION = 0.3  # overnight gap sd as a fraction of the daily sd
# Per-session pull of log price toward spec.price, so prices years after the anchor stay near it.
_REVERSION = 1.0 / 60.0
_DRIFT_SD = 0.05  # stationary sd of the OU drift regime
# OU mean-reversion time in steps (20 min): regimes last long enough to show on 1-min bars.
_DRIFT_TAU = 240.0
_BURST_RATE = 0.8  # strong-trend bursts per full session
_BURST_MAG = (0.08, 0.16)
_BURST_STEPS = (180, 720)  # 15-60 min

# Volume shape.
_DAY_VOLUME_SD = 0.12
_STEP_VOLUME_SD = 0.5
_SPIKE_PROB = 0.04  # share of clock hours with a volume spike
_SPIKE_MULT = (2.0, 4.0)
_BURST_VOLUME = 1.6
_HOUR_STEPS = 720
# U-shaped intraday profile f(u) = A + B exp(-u/C1) + D exp(-(1-u)/C2), u in [0, 1] of the session.
_U_A, _U_B, _U_C1, _U_D, _U_C2 = 0.55, 2.2, 0.05, 1.3, 0.04

# Option spread width in dollars before ticks: base + share of the premium, per liquidity tier.
# Calibrated to what a broker's option chain shows on a normal day (a guess from public chains,
# see README "Simulated option market"): SPY/QQQ ATM weeklies near $2-3 trade 1 cent wide and a
# 30-day ATM (~$12) a few cents; a liquid single stock's 30-day ATM (~$8) is 0.05-0.10 wide; a thin
# name's a dime or more.
_SPREAD_TIERS: dict[str, tuple[float, float]] = {
    "etf": (0.008, 0.0015),
    "liquid": (0.02, 0.008),
    "thin": (0.05, 0.025),
    "index": (0.05, 0.002),
}
# Index options: the trading classes each index lists, and their expiry styles. SPX lists the
# AM-settled monthlies under SPX and everything else (dailies, weeklies, PM monthlies, quarter
# ends) under SPXW, as IB's reqSecDefOptParams shows them.
INDEX_OPTION_CLASSES: dict[str, tuple[tuple[str, str], ...]] = {
    "SPX": (("SPX", "index_monthly"), ("SPXW", "daily")),
}
# Extra width per standard deviation away from the money, and per year past the first (LEAPS).
_SPREAD_PER_SD = 0.15
_SPREAD_PER_YEAR = 0.5


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    symbol: str
    price: float
    vol: float
    con_id: int
    primary_exchange: str
    strike_step: float  # option strike spacing
    daily_volume: float = 0.0  # average shares per full session; 0 derives it from symbol and price
    sec_type: str = "STK"  # "IND" for an index: quoted and charted, no volume, no orders
    # Option spreads ("etf", "liquid", "thin") and expiries ("daily", "weekly", "monthly").
    option_tier: str = "thin"
    chain_style: str = "monthly"
    long_name: str = ""
    kind: str = "COMMON"  # "ETF", "COMMON" or "IND"


@dataclass(frozen=True, slots=True)
class SimBar:
    time: datetime  # bar START, tz-aware UTC
    open: float
    high: float
    low: float
    close: float
    volume: int
    wap: float
    count: int


@dataclass(frozen=True, slots=True)
class Quote:
    bid: float
    ask: float
    last: float
    bid_size: int
    ask_size: int
    volume: int  # day volume
    time: datetime


@dataclass(frozen=True, slots=True)
class OptionQuote:
    bid: float
    ask: float
    last: float
    bid_size: int
    ask_size: int
    volume: int
    iv: float
    delta: float
    gamma: float
    vega: float
    theta: float
    und_price: float
    model_price: float
    time: datetime


@dataclass(frozen=True, slots=True)
class OptionChain:
    trading_class: str
    multiplier: str  # "100"
    expirations: tuple[str, ...]  # "YYYYMMDD", ascending
    strikes: tuple[
        float, ...
    ]  # ascending: the union over every expiry, as reqSecDefOptParams sends
    # Each expiry's own strikes: far expiries list a wider, coarser range; not every pair exists.
    expiry_strikes: tuple[tuple[str, tuple[float, ...]], ...] = ()

    def strikes_for(self, expiry: str) -> tuple[float, ...]:
        for e, strikes in self.expiry_strikes:
            if e == expiry:
                return strikes
        return () if self.expiry_strikes else self.strikes

    def lists(self, expiry: str, strike: float) -> bool:
        """True when the (expiry, strike) pair is a listed contract."""
        return any(abs(s - strike) < 1e-6 for s in self.strikes_for(expiry))


def _norm_symbol(symbol: str) -> str:
    return str(symbol).strip().upper()


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8")) & 0xFFFFFFFF


def default_spec(symbol: str) -> SymbolSpec:
    """Spec for a symbol: from the listed table (sim/listed.py), otherwise from a stable hash of the name."""
    sym = _norm_symbol(symbol)
    entry = LISTED.get(sym)
    if entry is not None:
        daily = sym in DAILY_EXPIRY
        index = entry.kind == "IND"
        return SymbolSpec(
            sym,
            entry.price,
            entry.vol,
            listed_con_id(sym, entry),
            entry.primary_exchange,
            5.0 if index else _base_strike_step(entry.price, etf=entry.kind == "ETF"),
            entry.daily_volume,
            sec_type="IND" if index else "STK",
            option_tier="index" if index else "etf" if daily else "liquid",
            chain_style="daily" if daily else "weekly",
            long_name=entry.long_name,
            kind=entry.kind,
        )
    h = _crc(sym)
    # A tiny private stream turns one 32-bit hash into several independent-looking attributes.
    rng = np.random.default_rng([0x5EC5, h])
    price = round(math.exp(rng.uniform(math.log(20.0), math.log(500.0))), 2)
    vol = round(float(rng.uniform(0.25, 0.45)), 4)
    exch = "NASDAQ" if rng.random() < 0.5 else "NYSE"
    con_id = 100_000_000 + h % 800_000_000
    step = 2.5 if price < 200.0 else 5.0
    return SymbolSpec(sym, price, vol, con_id, exch, step, _derived_daily_volume(sym, price))


def _base_strike_step(price: float, etf: bool) -> float:
    """Strike spacing near the money, as listed for weeklies and front months (CBOE's intervals)."""
    if etf:
        return 1.0 if price >= 25.0 else 0.5
    if price < 25.0:
        return 0.5
    if price < 50.0:
        return 1.0
    if price < 300.0:
        return 2.5
    if price < 1000.0:
        return 5.0
    return 10.0


def _derived_daily_volume(symbol: str, price: float) -> float:
    entry = LISTED.get(symbol)
    if entry is not None and entry.daily_volume:
        return entry.daily_volume
    # Cheaper stocks trade more shares, but damped so a $20 name is not billions a day.
    return 8e6 * math.sqrt(100.0 / max(price, 0.01))


def _epoch(t: datetime, name: str = "t") -> float:
    if not isinstance(t, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(t).__name__}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {t!r}")
    return t.timestamp()


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _hash_u64(*parts: int) -> int:
    packed = struct.pack(f"<{len(parts)}Q", *(p & _MASK64 for p in parts))
    return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "little")


def _hash_normal(*parts: int) -> float:
    u = (_hash_u64(*parts) + 0.5) / 2.0**64
    return NormalDist().inv_cdf(u)


def _u_profile(u: np.ndarray) -> np.ndarray:
    return _U_A + _U_B * np.exp(-u / _U_C1) + _U_D * np.exp(-(1.0 - u) / _U_C2)


def _u_cumulative(u: float) -> float:
    """Share of the day's volume traded by session fraction `u` under the U profile."""
    u = min(max(u, 0.0), 1.0)

    def raw(x: float) -> float:
        return (
            _U_A * x
            + _U_B * _U_C1 * (1.0 - math.exp(-x / _U_C1))
            + _U_D * _U_C2 * (math.exp(-(1.0 - x) / _U_C2) - math.exp(-1.0 / _U_C2))
        )

    return raw(u) / raw(1.0)


@dataclass(frozen=True, slots=True)
class _Sessions:
    opens: np.ndarray  # float64 epoch seconds
    closes: np.ndarray
    ordinals: np.ndarray  # int64 date.toordinal() of each session
    dates: tuple[date, ...]
    steps: np.ndarray  # int64 5 s steps per session


@functools.lru_cache(maxsize=8)
def _load_sessions(calendar_name: str) -> _Sessions:
    import exchange_calendars as xcals

    with warnings.catch_warnings():
        # exchange_calendars trips pandas deprecation warnings that are not ours to fix.
        warnings.simplefilter("ignore")
        cal = xcals.get_calendar(calendar_name, start=ANCHOR_DATE, end=CALENDAR_END)
        opens_ns = np.asarray(cal.opens_nanos, dtype=np.int64)
        closes_ns = np.asarray(cal.closes_nanos, dtype=np.int64)
        dates = tuple(ts.date() for ts in cal.sessions)
    opens = (opens_ns // 1_000_000_000).astype(np.float64)
    closes = (closes_ns // 1_000_000_000).astype(np.float64)
    steps = ((closes_ns - opens_ns) // (STEP_SECONDS * 1_000_000_000)).astype(np.int64)
    ordinals = np.array([d.toordinal() for d in dates], dtype=np.int64)
    for arr in (opens, closes, ordinals, steps):
        arr.flags.writeable = False
    return _Sessions(opens, closes, ordinals, dates, steps)


@dataclass(frozen=True, slots=True)
class _Chain:
    """Per-symbol daily chain: every session's open and close, derived from each session's own stream."""

    open_log: np.ndarray
    day_ret: np.ndarray
    open_raw: np.ndarray
    close_raw: np.ndarray
    open_px: np.ndarray  # rounded to the cent
    close_px: np.ndarray


@dataclass(frozen=True, slots=True)
class _Path:
    """One session's 5 s path: px[j] is the trade price at open + 5*j, vol[j] the volume in step j."""

    px: np.ndarray  # float64, steps + 1, cents
    vol: np.ndarray  # int32, steps

    @property
    def nbytes(self) -> int:
        return int(self.px.nbytes + self.vol.nbytes)


class MarketModel:
    """Deterministic market for the simulator: same seed and specs give bit-identical answers in any order."""

    def __init__(
        self,
        seed: int,
        specs: Iterable[SymbolSpec] = (),
        calendar_name: str = "XNYS",
        history_sessions: int = 40,
        paths_per_symbol: int | None = None,
    ) -> None:
        self._seed = int(seed)
        self._seed_key = self._seed & _MASK64
        self._cal = _load_sessions(calendar_name)
        self.calendar_name = calendar_name
        self.history_sessions = int(history_sessions)
        # Room for every known symbol's history plus a few live sessions; a backtest that only
        # walks forward keeps a few (paths are independent per session, so a miss only recomputes).
        self._per_symbol_paths = paths_per_symbol or max(16, self.history_sessions + 8)
        self._lock = threading.RLock()
        self._specs: dict[str, SymbolSpec] = {}
        for s in specs:
            self._specs[_norm_symbol(s.symbol)] = s
        self._chains: dict[str, _Chain] = {}
        self._paths: OrderedDict[tuple[str, int], _Path] = OrderedDict()
        self._day_bars: dict[tuple[str, int], SimBar] = {}
        self._option_chains: OrderedDict[tuple[str, int, float], tuple[OptionChain, ...]] = (
            OrderedDict()
        )

    @property
    def seed(self) -> int:
        return self._seed

    # ----------------------------------------------------------------- specs and calendar

    def spec(self, symbol: str) -> SymbolSpec:
        sym = _norm_symbol(symbol)
        spec = self._specs.get(sym)
        if spec is None:
            with self._lock:
                spec = self._specs.setdefault(sym, default_spec(sym))
        return spec

    def prepare(self, symbols: Iterable[str]) -> None:
        """Compute each symbol's day-to-day chain now (about 65 ms a symbol: a random stream per
        session of the whole calendar) rather than at its first request. A Gateway answers
        history from IB's servers without such a cost; a simulator that paid it in the middle of
        a cold start held up every other answer (50 symbols: 3.3 s of the 5.4 s)."""
        for sym in symbols:
            self._chain(_norm_symbol(sym))

    def _last_open_at_or_before(self, ts: float) -> int:
        return int(np.searchsorted(self._cal.opens, ts, side="right")) - 1

    def _live_session(self, ts: float) -> int:
        """Index of the session trading at `ts`, or -1."""
        k = self._last_open_at_or_before(ts)
        if k >= 0 and ts < self._cal.closes[k]:
            return k
        return -1

    def is_open(self, t: datetime) -> bool:
        return self._live_session(_epoch(t)) >= 0

    def next_open(self, t: datetime) -> datetime:
        k = int(np.searchsorted(self._cal.opens, _epoch(t), side="right"))
        if k >= len(self._cal.opens):
            raise ValueError(f"{t!r} is past the simulated calendar (ends {CALENDAR_END})")
        return _utc(float(self._cal.opens[k]))

    def session_open_close(self, t: datetime) -> tuple[datetime, datetime] | None:
        k = self._live_session(_epoch(t))
        if k < 0:
            return None
        return _utc(float(self._cal.opens[k])), _utc(float(self._cal.closes[k]))

    def sessions_back(self, t: datetime, n: int) -> datetime:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        k = self._last_open_at_or_before(_epoch(t)) - n
        if k < 0:
            raise ValueError(
                f"{n} sessions before {t!r} is before the simulated calendar ({ANCHOR_DATE})"
            )
        return _utc(float(self._cal.opens[k]))

    def history_start(self, t: datetime) -> datetime:
        """Open of the oldest session of the configured history window ending at `t`."""
        k = max(0, self._last_open_at_or_before(_epoch(t)) - self.history_sessions)
        return _utc(float(self._cal.opens[k]))

    def session_date(self, t: datetime) -> date:
        """Trading date `t` belongs to for expiries: today's until the close, then the next session's."""
        k = int(np.searchsorted(self._cal.closes, _epoch(t), side="right"))
        if k >= len(self._cal.closes):
            raise ValueError(f"{t!r} is past the simulated calendar (ends {CALENDAR_END})")
        return self._cal.dates[k]

    # ----------------------------------------------------------------- random streams

    def _session_rng(self, sym: str, k: int) -> np.random.Generator:
        return np.random.default_rng([self._seed_key, _crc(sym), k])

    def _chain(self, sym: str) -> _Chain:
        chain = self._chains.get(sym)
        if chain is not None:
            return chain
        spec = self.spec(sym)
        steps = self._cal.steps
        # Only the first two draws of each session's stream are needed to chain the days: the day's
        # return is fixed up front and the intraday path is later drawn as a bridge ending on it.
        draws = np.array([self._session_rng(sym, k).standard_normal(2) for k in range(len(steps))])
        daily_sd = spec.vol / math.sqrt(252.0)
        gaps = _GAP_FRACTION * daily_sd * draws[:, 0]
        day_ret = daily_sd * np.sqrt(steps / FULL_SESSION_STEPS) * draws[:, 1]
        keep = 1.0 - _REVERSION
        # open_log[k+1] - base = keep * (open_log[k] - base + day_ret[k]) + gap[k+1]: always computed over
        # the whole calendar from the anchor, so no session depends on which one was asked for first.
        impulses = np.zeros(len(steps))
        impulses[1:] = keep * day_ret[:-1] + gaps[1:]
        dev = _ar1(impulses, keep, 0.0)
        open_log = math.log(spec.price) + dev
        open_raw = np.exp(open_log)
        close_raw = np.exp(open_log + day_ret)
        chain = _Chain(
            open_log=open_log,
            day_ret=day_ret,
            open_raw=open_raw,
            close_raw=close_raw,
            open_px=np.round(open_raw, 2),
            close_px=np.round(close_raw, 2),
        )
        with self._lock:
            return self._chains.setdefault(sym, chain)

    def _path(self, sym: str, k: int) -> _Path:
        key = (sym, k)
        with self._lock:
            path = self._paths.get(key)
            if path is not None:
                self._paths.move_to_end(key)
                return path
        path = self._simulate(sym, k)
        with self._lock:
            self._paths[key] = path
            self._paths.move_to_end(key)
            capacity = self._per_symbol_paths * max(1, len(self._chains))
            while len(self._paths) > capacity:
                self._paths.popitem(last=False)
        return path

    def _simulate(self, sym: str, k: int) -> _Path:
        spec = self.spec(sym)
        chain = self._chain(sym)
        n = int(self._cal.steps[k])
        rng = self._session_rng(sym, k)
        rng.standard_normal(2)  # gap and day return, already used by the chain
        sigma = spec.vol * math.sqrt(STEP_SECONDS / _YEAR_SECONDS)

        noise = rng.standard_normal(n)
        # Ornstein-Uhlenbeck drift regime: slow swings that give EMA crossovers and RSI excursions.
        a = math.exp(-1.0 / _DRIFT_TAU)
        drift_sd = _DRIFT_SD * sigma
        eps = rng.standard_normal(n)
        mu0 = float(rng.standard_normal())
        drift = _ar1(drift_sd * math.sqrt(1.0 - a * a) * eps, a, a * drift_sd * mu0)
        in_burst = np.zeros(n, dtype=bool)
        for _ in range(int(rng.poisson(_BURST_RATE * n / FULL_SESSION_STEPS))):
            start = int(rng.integers(0, n))
            length = int(rng.integers(*_BURST_STEPS))
            sign = 1.0 if rng.random() < 0.5 else -1.0
            mag = float(rng.uniform(*_BURST_MAG)) * sigma
            drift[start : start + length] += sign * mag
            in_burst[start : start + length] = True

        x = np.empty(n + 1)
        x[0] = 0.0
        np.cumsum(sigma * noise + drift, out=x[1:])
        # Brownian bridge onto the chained day return, so the path ends exactly on the day's close.
        x -= np.arange(n + 1) * ((x[n] - chain.day_ret[k]) / n)
        raw = np.exp(chain.open_log[k] + x)
        raw[0] = chain.open_raw[k]
        raw[n] = chain.close_raw[k]
        px = np.round(raw, 2)

        u = (np.arange(n) + 0.5) / n
        profile = _u_profile(u)
        profile *= (n / FULL_SESSION_STEPS) / profile.sum()
        # Indices print no volume (IB's index bars carry 0).
        daily = (
            0.0
            if spec.sec_type == "IND"
            else (spec.daily_volume or _derived_daily_volume(sym, spec.price))
        )
        day_total = daily * math.exp(
            _DAY_VOLUME_SD * float(rng.standard_normal()) - 0.5 * _DAY_VOLUME_SD**2
        )
        step_noise = np.exp(_STEP_VOLUME_SD * rng.standard_normal(n) - 0.5 * _STEP_VOLUME_SD**2)
        # Spike blocks follow clock hours (the open is at :30), so a spike lands in one hourly bar.
        half = _HOUR_STEPS // 2
        n_blocks = (n + half) // _HOUR_STEPS + 1
        spike_draw = rng.random(n_blocks)
        spike_mult = rng.uniform(*_SPIKE_MULT, n_blocks)
        block_mult = np.where(spike_draw < _SPIKE_PROB, spike_mult, 1.0)
        mult = block_mult[(np.arange(n) + half) // _HOUR_STEPS]
        mult[in_burst] *= _BURST_VOLUME
        vol = np.rint(day_total * profile * step_noise * mult).astype(np.int32)
        px.flags.writeable = False
        vol.flags.writeable = False
        return _Path(px=px, vol=vol)

    # ----------------------------------------------------------------- stock prices

    def last_price(self, symbol: str, t: datetime) -> float:
        sym = _norm_symbol(symbol)
        ts = _epoch(t)
        k = self._last_open_at_or_before(ts)
        chain = self._chain(sym)
        if k < 0:
            return float(chain.open_px[0])
        if ts >= self._cal.closes[k]:
            return float(chain.close_px[k])
        j = int((ts - self._cal.opens[k]) // STEP_SECONDS)
        return float(self._path(sym, k).px[j])

    def quote(self, symbol: str, t: datetime) -> Quote:
        sym = _norm_symbol(symbol)
        ts = _epoch(t)
        k = self._last_open_at_or_before(ts)
        chain = self._chain(sym)
        if k < 0:
            last, prev, day_volume, step = float(chain.open_px[0]), float(chain.open_px[0]), 0, 0
        elif ts >= self._cal.closes[k]:
            step = int(self._cal.steps[k])
            last = float(chain.close_px[k])
            day_volume = self._day_bar(sym, k).volume
            prev = last
        else:
            path = self._path(sym, k)
            step = int((ts - self._cal.opens[k]) // STEP_SECONDS)
            last = float(path.px[step])
            prev = float(path.px[step - 1]) if step > 0 else last
            day_volume = int(path.vol[:step].sum(dtype=np.int64))
        last_c = round(last * 100)
        spec = self.spec(sym)
        if spec.sec_type == "IND":
            # An index is a calculated value: IB sends its last price with no bid, ask or sizes.
            return Quote(0.0, 0.0, last, 0, 0, 0, t.astimezone(UTC))
        if sym in BIG_ETFS:
            spread_c = 1
        elif sym in LISTED:
            # The most traded names are a penny wide; the four-digit ones a couple of cents.
            spread_c = max(1, round(last * 0.00002 * 100))
        else:
            spread_c = max(1, round(last * 0.0002 * 100))
        if spread_c == 1:
            # With a one-cent market the last trade sits on the side the last move came from.
            bid_c = last_c - 1 if last >= prev else last_c
        else:
            bid_c = last_c - spread_c // 2
        bid_c = max(bid_c, 1)
        h = _hash_u64(self._seed_key, _crc(sym), k, step)
        lots = 50 if sym in BIG_ETFS else 10
        return Quote(
            bid=bid_c / 100.0,
            ask=(bid_c + spread_c) / 100.0,
            last=last,
            bid_size=100 * (1 + h % lots),
            ask_size=100 * (1 + (h >> 16) % lots),
            volume=day_volume,
            time=t.astimezone(UTC),
        )

    # ----------------------------------------------------------------- bars

    def _day_bar(self, sym: str, k: int) -> SimBar:
        bar = self._day_bars.get((sym, k))
        if bar is not None:
            return bar
        path = self._path(sym, k)
        bar = self._aggregate(sym, k, path, np.array([0]), np.array([len(path.vol)]))[0]
        with self._lock:
            return self._day_bars.setdefault((sym, k), bar)

    def _aggregate(
        self, sym: str, k: int, path: _Path, ia: np.ndarray, ib: np.ndarray
    ) -> list[SimBar]:
        """Bars over contiguous step ranges [ia[i], ib[i]); only the last range may be empty."""
        px, vol = path.px, path.vol
        m = len(ia)
        opens = px[ia]
        closes = px[ib]
        highs = np.maximum(opens, closes)
        lows = np.minimum(opens, closes)
        volumes = np.zeros(m, dtype=np.int64)
        pv = np.zeros(m)
        counts = np.zeros(m, dtype=np.int64)
        full = m - 1 if ib[-1] == ia[-1] else m
        if full > 0:
            lo, hi = int(ia[0]), int(ib[full - 1])
            idx = ia[:full] - lo
            seg_px = px[lo:hi]
            seg_vol = vol[lo:hi].astype(np.int64)
            # Each step trades at the midpoint of its two grid prices.
            seg_pv = seg_vol * (0.5 * (px[lo:hi] + px[lo + 1 : hi + 1]))
            trade_size = 150 if sym in BIG_ETFS else 100
            seg_cnt = (seg_vol + trade_size - 1) // trade_size
            highs[:full] = np.maximum(highs[:full], np.maximum.reduceat(seg_px, idx))
            lows[:full] = np.minimum(lows[:full], np.minimum.reduceat(seg_px, idx))
            volumes[:full] = np.add.reduceat(seg_vol, idx)
            pv[:full] = np.add.reduceat(seg_pv, idx)
            counts[:full] = np.add.reduceat(seg_cnt, idx)
        open_ts = float(self._cal.opens[k])
        out = []
        for i in range(m):
            v = int(volumes[i])
            wap = round(float(pv[i]) / v, 4) if v > 0 else float(closes[i])
            out.append(
                SimBar(
                    time=_utc(open_ts + STEP_SECONDS * int(ia[i])),
                    open=float(opens[i]),
                    high=float(highs[i]),
                    low=float(lows[i]),
                    close=float(closes[i]),
                    volume=v,
                    wap=wap,
                    count=int(counts[i]),
                )
            )
        return out

    def _bar_bounds(self, k: int, bar_seconds: int) -> np.ndarray:
        """Bar start offsets (seconds from the session open) plus the session length at the end."""
        length = int(self._cal.steps[k]) * STEP_SECONDS
        if bar_seconds == 86400:
            return np.array([0, length])
        if bar_seconds == 3600:
            # IB's RTH hourly bars break on clock hours, so the first bar is the 30 minutes to 10:00.
            open_ts = int(self._cal.opens[k])
            first = -open_ts % 3600 or 3600
            return np.array([0, *range(first, length, 3600), length])
        return np.array([*range(0, length, bar_seconds), length])

    def bars(self, symbol: str, start: datetime, end: datetime, bar_seconds: int) -> list[SimBar]:
        """RTH bars starting in [start, end), plus the partial bar still open at `end`."""
        if bar_seconds not in BAR_SIZES:
            raise ValueError(f"bar_seconds must be one of {sorted(BAR_SIZES)}, got {bar_seconds!r}")
        sym = _norm_symbol(symbol)
        s, e = _epoch(start, "start"), _epoch(end, "end")
        if e <= s:
            return []
        cal = self._cal
        k0 = int(np.searchsorted(cal.closes, s, side="right"))
        k1 = int(np.searchsorted(cal.opens, e, side="left")) - 1
        out: list[SimBar] = []
        for k in range(k0, k1 + 1):
            out.extend(self._session_bars(sym, k, s, e, bar_seconds))
        return out

    def _session_bars(self, sym: str, k: int, s: float, e: float, bar_seconds: int) -> list[SimBar]:
        open_ts = float(self._cal.opens[k])
        bounds = self._bar_bounds(k, bar_seconds)
        starts = open_ts + bounds[:-1]
        ends = open_ts + bounds[1:]
        complete = (starts >= s) & (ends <= e)
        partial = (starts < e) & (e < ends)
        chosen = np.flatnonzero(complete | partial)
        if len(chosen) == 0:
            return []
        if bar_seconds == 86400 and complete[0]:
            return [self._day_bar(sym, k)]
        ia = bounds[chosen] // STEP_SECONDS
        ib = bounds[chosen + 1] // STEP_SECONDS
        if partial[chosen[-1]]:
            ib[-1] = int((e - open_ts) // STEP_SECONDS)
        return self._aggregate(sym, k, self._path(sym, k), ia, ib)

    # ----------------------------------------------------------------- options

    def option_chain(self, symbol: str, t: datetime) -> OptionChain:
        """A stock's (or ETF's) one option chain at `t`; see option_chains."""
        chains = self.option_chains(symbol, t)
        if not chains:
            raise ValueError(f"{symbol} lists no options")
        return chains[0]

    def option_chains(self, symbol: str, t: datetime) -> tuple[OptionChain, ...]:
        """The listed options at `t`, one chain per trading class (an index may have several,
        SPX and SPXW; VIX, NDX and RUT options are not listed here).

        Expiries by the symbol's chain style, strikes per expiry.

        Shaped after what IB's reqSecDefOptParams shows for SPY and a large stock (checked against
        CBOE's listing rules as summarised in the README): dailies for SPY/QQQ/IWM, Friday weeklies
        for about six weeks, monthlies (third Friday), quarterlies (the last session of the
        quarter, daily-expiry ETFs) and January LEAPS. Each expiry lists strikes over a range that
        widens with time to expiry; near the money at the base spacing, further out coarser.
        """
        sym = _norm_symbol(symbol)
        spec = self.spec(sym)
        if spec.sec_type == "IND":
            classes = INDEX_OPTION_CLASSES.get(sym, ())
        else:
            classes = ((sym, spec.chain_style),)
        if not classes:
            return ()
        ts = _epoch(t)
        cal = self._cal
        k0 = int(np.searchsorted(cal.closes, ts, side="right"))
        if k0 >= len(cal.closes):
            raise ValueError(f"{t!r} is past the simulated calendar (ends {CALENDAR_END})")
        # Strikes center on the session's open while it trades and on the frozen close while closed, so
        # the chain never changes within either, and never peeks at the next session's gap.
        if self._live_session(ts) == k0:
            center = float(self._chain(sym).open_px[k0])
        else:
            center = self.last_price(sym, t)
        key = (sym, k0, center)
        cached = self._option_chains.get(key)
        if cached is not None:
            return cached
        d0 = cal.dates[k0]
        chains = []
        for trading_class, style in classes:
            per_expiry = []
            union: set[float] = set()
            for d in sorted(self._expiries(style, k0)):
                strikes = _expiry_strikes(spec, center, max((d - d0).days, 1) / 365.0)
                per_expiry.append((d.strftime("%Y%m%d"), strikes))
                union.update(strikes)
            chains.append(
                OptionChain(
                    trading_class=trading_class,
                    multiplier="100",
                    expirations=tuple(e for e, _ in per_expiry),
                    strikes=tuple(sorted(union)),
                    expiry_strikes=tuple(per_expiry),
                )
            )
        with self._lock:
            got = self._option_chains.setdefault(key, tuple(chains))
            self._option_chains.move_to_end(key)
            # A few chains per symbol (each is tens of KB): memory flat however long the run.
            while len(self._option_chains) > 3 * max(1, len(self._chains)):
                self._option_chains.popitem(last=False)
            return got

    def _expiries(self, style: str, k0: int) -> set[date]:
        cal = self._cal
        d0 = cal.dates[k0]
        out: set[date] = set()

        def add(d: date) -> None:
            adjusted = self._session_on_or_before(d)
            if adjusted is not None and adjusted >= d0:
                out.add(adjusted)

        if style == "index_monthly":
            # AM-settled monthlies for a year, December LEAPS for three more. They settle on the
            # expiry day's opening prints, so that day they are no longer listed.
            for ahead in range(13):
                year, month = divmod(d0.year * 12 + d0.month - 1 + ahead, 12)
                add(_third_friday(year, month + 1))
            for dy in range(1, 4):
                add(_third_friday(d0.year + dy, 12))
            out.discard(d0)
            return out
        if style == "daily":
            # Every session for five weeks (SPY, QQQ and IWM list Monday-to-Friday expiries).
            k = k0
            while k < len(cal.dates) and cal.dates[k] < d0 + timedelta(days=35):
                out.add(cal.dates[k])
                k += 1
        weeks = {"daily": 8, "weekly": 8}.get(style, 5)
        friday = d0 + timedelta(days=(4 - d0.weekday()) % 7)
        for _ in range(weeks):
            add(friday)
            friday += timedelta(days=7)
        months = {"daily": 12, "weekly": 6}.get(style, 4)
        for ahead in range(months):
            year, month = divmod(d0.year * 12 + d0.month - 1 + ahead, 12)
            add(_third_friday(year, month + 1))
        if style != "monthly":
            # The quarterly cycle's months out to a year.
            for ahead in range(months, 13):
                year, month = divmod(d0.year * 12 + d0.month - 1 + ahead, 12)
                if (month + 1) % 3 == 0:
                    add(_third_friday(year, month + 1))
            # LEAPS: January (and June) of the next two years, three for the daily-expiry ETFs.
            for dy in range(1, 4 if style == "daily" else 3):
                add(_third_friday(d0.year + dy, 1))
                if style == "weekly":
                    add(_third_friday(d0.year + dy, 6))
        if style == "daily":
            # Quarterlies: the last session of each quarter for a year, and December LEAPS.
            for ahead in range(0, 13):
                year, month = divmod(d0.year * 12 + d0.month - 1 + ahead, 12)
                if (month + 1) % 3 == 0:
                    last = date(year, month + 1, 1) + timedelta(days=31)
                    add(last.replace(day=1) - timedelta(days=1))
            for dy in range(1, 3):
                add(_third_friday(d0.year + dy, 12))
        return out

    def _session_on_or_before(self, d: date) -> date | None:
        i = int(np.searchsorted(self._cal.ordinals, d.toordinal(), side="right")) - 1
        return self._cal.dates[i] if i >= 0 else None

    def option_quote(
        self, symbol: str, expiry: str, strike: float, right: str, t: datetime
    ) -> OptionQuote:
        sym = _norm_symbol(symbol)
        spec = self.spec(sym)
        r = normalize_right(right)
        strike = float(strike)
        exp_date = datetime.strptime(expiry, "%Y%m%d").date()
        exp_ts = datetime.combine(exp_date, time(16, 0), NEW_YORK).timestamp()
        ts = _epoch(t)
        cal = self._cal
        k = self._last_open_at_or_before(ts)
        # Options are valued at the last traded moment, so quotes freeze with the stock outside hours.
        if k < 0:
            eval_ts, frac = float(cal.opens[0]), 0.0
        elif ts >= cal.closes[k]:
            eval_ts, frac = float(cal.closes[k]), 1.0
        else:
            eval_ts = ts
            frac = (ts - cal.opens[k]) / (cal.closes[k] - cal.opens[k])
        spot = self.last_price(sym, _utc(eval_ts))
        t_years = (exp_ts - eval_ts) / _SECONDS_PER_YEAR_CAL
        moneyness = math.log(strike / spot)
        # Smile plus downside skew by strike, the same for the call and the put, so put-call
        # parity holds within the spreads as it does in a real (arbitraged) market.
        iv = spec.vol * (1.0 + 0.8 * abs(moneyness)) + 0.1 * max(0.0, -moneyness)
        model = black_scholes(spot, strike, t_years, iv, RATE, r)
        g = greeks(spot, strike, t_years, iv, RATE, r)

        bid, ask = _option_market(
            spec, model, moneyness, iv * math.sqrt(max(t_years, 0.0)), t_years
        )
        mid = 0.5 * (bid + ask)
        last = round_to_tick(mid, option_tick(sym, mid), "nearest")

        strike_key = round(strike * 1000)
        right_key = 1 if r == "C" else 2
        exp_key = int(expiry)
        h = _hash_u64(self._seed_key, _crc(sym), exp_key, strike_key, right_key, max(k, 0), 7)
        size_lots = 200 if sym in BIG_ETFS else 40
        volume = 0
        if k >= 0:
            volume = self._option_volume(sym, k, exp_date, strike, r, exp_key, strike_key, frac)
        return OptionQuote(
            bid=bid,
            ask=ask,
            last=last,
            bid_size=1 + h % size_lots,
            ask_size=1 + (h >> 20) % size_lots,
            volume=volume,
            iv=iv,
            delta=g.delta,
            gamma=g.gamma,
            vega=g.vega,
            theta=g.theta,
            und_price=spot,
            model_price=model,
            time=t.astimezone(UTC),
        )

    def _option_volume(
        self,
        sym: str,
        k: int,
        exp_date: date,
        strike: float,
        right: str,
        exp_key: int,
        strike_key: int,
        frac: float,
    ) -> int:
        session_day = self._cal.dates[k]
        dte = (exp_date - session_day).days
        if dte < 0:
            return 0
        spec = self.spec(sym)
        center = float(self._chain(sym).open_px[k])
        moneyness = math.log(strike / center)
        daily = spec.daily_volume or _derived_daily_volume(sym, spec.price)
        atm = 30000.0 * (daily / 60e6) / (1.0 + dte / 3.0)
        width = 0.01 * (1.0 + math.sqrt(dte / 2.0))
        otm = strike >= center if right == "C" else strike <= center
        side = 1.0 if otm else 0.35
        z = _hash_normal(
            self._seed_key, _crc(sym), exp_key, strike_key, 1 if right == "C" else 2, k
        )
        total = atm * side * math.exp(-0.5 * (moneyness / width) ** 2) * math.exp(0.3 * z - 0.045)
        return int(total * _u_cumulative(frac))

    def option_con_id(
        self, symbol: str, expiry: str, strike: float, right: str, trading_class: str = ""
    ) -> int:
        """Stable contract id for an option, independent of the seed. The trading class tells
        apart SPX and SPXW options of one expiry and strike (a stock's class is its symbol)."""
        r = normalize_right(right)
        sym = _norm_symbol(symbol)
        cls = _norm_symbol(trading_class) if trading_class else sym
        root = sym if cls == sym else f"{sym}/{cls}"
        key = f"{root}|{expiry}|{float(strike):.4f}|{r}"
        return 1_000_000_000 + _crc(key) % 1_000_000_000


def _ar1(impulses: np.ndarray, keep: float, y0: float) -> np.ndarray:
    """y[i] = keep * y[i-1] + impulses[i], where `y0` is keep * y[-1] (0 for a cold start)."""
    # A plain sequential loop: exact, order-fixed, and avoids importing scipy.signal (~1 s) for one filter.
    first = float(impulses[0]) + y0
    rest = impulses[1:].tolist()
    return np.fromiter(
        accumulate(rest, lambda acc, x: keep * acc + x, initial=first),
        dtype=np.float64,
        count=len(impulses),
    )


def _option_market(
    spec: SymbolSpec, model: float, moneyness: float, sd: float, t_years: float
) -> tuple[float, float]:
    """Bid and ask around the model price: a whole number of ticks wide, the width growing with the
    premium, with the distance from the money in standard deviations, and for LEAPS."""
    sym = spec.symbol
    base, share = _SPREAD_TIERS.get(spec.option_tier, _SPREAD_TIERS["thin"])
    away = min(abs(moneyness) / sd, 6.0) if sd > 1e-9 else 6.0
    width = (base + share * model) * (1.0 + _SPREAD_PER_SD * away)
    width *= 1.0 + _SPREAD_PER_YEAR * max(0.0, t_years - 1.0)
    tick = option_tick(sym, model)
    n = max(1, round(width / tick))
    # Both sides move by the same rounding, so the market is exactly n ticks wide within a band.
    bid_raw = model - n * tick / 2.0
    bid = round_to_tick(bid_raw, option_tick(sym, bid_raw), "nearest") if bid_raw > 0 else 0.0
    ask_raw = model + n * tick / 2.0
    ask = round_to_tick(ask_raw, option_tick(sym, ask_raw), "nearest")
    ask = max(ask, round(bid + option_tick(sym, bid), 2))
    return max(bid, 0.0), ask


def _expiry_strikes(spec: SymbolSpec, center: float, t_years: float) -> tuple[float, ...]:
    """One expiry's strikes: base spacing near the money, coarser further out, a range growing with
    time (a front week spans about +-8%; a two-year LEAPS from under half to twice the price)."""
    sd = spec.vol * math.sqrt(t_years)
    reach = min(max(0.08, 4.0 * sd), 1.0)
    lo_px, hi_px = center * math.exp(-reach), min(center * math.exp(reach), 2.0 * center)
    base = spec.strike_step
    coarse = base * (5.0 if base <= 1.0 else 2.0)
    # LEAPS list only the coarse grid.
    near = coarse if t_years > 1.0 else base
    # At least four days' sd near the money: a volatile stock's day can take the spot a whole
    # front-week range from the open the strikes center on (hypothesis: NIO from 7.00 to 5.99,
    # below its lowest strike, two days before an expiry). Listed chains reach that far and more.
    inner = max(0.08, 1.5 * sd, 4.0 * spec.vol / math.sqrt(252.0))
    in_lo, in_hi = center * math.exp(-inner), center * math.exp(inner)
    out = set()
    for step, lo, hi, extra in ((coarse, lo_px, hi_px, 0), (near, in_lo, in_hi, 1)):
        # One near strike more each side: a day's move to the edge of the range still leaves
        # the spot between two strikes, as a listed chain does (hypothesis found NIO at 7.50 on
        # its lowest strike).
        i0 = max(1, math.ceil(round(max(lo, step) / step, 9)) - extra)
        i1 = math.floor(round(hi / step, 9)) + extra
        out.update(round(i * step, 6) for i in range(i0, i1 + 1))
    return tuple(sorted(out))


def _third_friday(year: int, month: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(4 - first.weekday()) % 7 + 14)

"""The simulator's listed universe: common US underlyings and indices at realistic levels.

Source note (read before trusting a figure): prices, implied volatilities and average daily share
volumes are APPROXIMATE levels of late 2025 (October-November 2025 closes, typical 30-day implied
vol, roughly 3-month average volume), written from public quote pages from memory, not from a
data feed. They only need to be the right order of magnitude so a client sees AAPL near $270
with a 26% vol rather than a made-up $22; they are not prices to test a strategy's P&L against.
The contract ids of SPY, QQQ, IWM, AAPL, MSFT, AMZN, NVDA, TSLA, META, GOOGL, AMD, INTC, SPX and
VIX are the ones IB uses (as seen in ib_async/ib_insync examples and issue threads); the others
are derived from the symbol (stable, but not IB's).

Option liquidity tiers drive the simulated option spreads (sim/market.py): "etf" for the three
index ETFs whose options trade a cent or two wide, "liquid" for every other listed name (all are in
the Penny Interval Program), and "thin" for names the table does not know.
Chain styles: "daily" (expiries every session, as SPY/QQQ/IWM have since 2022-2023), "weekly"
(Friday weeklies plus monthlies, quarterlies and LEAPS) and "monthly" (the hashed names).
"""

from __future__ import annotations

import zlib
from typing import NamedTuple


class Listing(NamedTuple):
    price: float
    vol: float
    primary_exchange: str
    daily_volume: float  # shares per full session
    kind: str  # "ETF", "COMMON" or "IND"
    con_id: int = 0  # 0: derived from the symbol
    long_name: str = ""


def _etf(price: float, vol: float, exch: str, volume: float, name: str, con_id: int = 0) -> Listing:
    return Listing(price, vol, exch, volume, "ETF", con_id, name)


def _stk(price: float, vol: float, exch: str, volume: float, con_id: int = 0) -> Listing:
    return Listing(price, vol, exch, volume, "COMMON", con_id)


LISTED: dict[str, Listing] = {
    # ETFs
    "SPY": _etf(680.0, 0.16, "ARCA", 60e6, "SPDR S&P 500 ETF TRUST", 756733),
    "QQQ": _etf(610.0, 0.20, "NASDAQ", 45e6, "INVESCO QQQ TRUST SERIES 1", 320227571),
    "IWM": _etf(240.0, 0.22, "ARCA", 30e6, "ISHARES RUSSELL 2000 ETF", 9579970),
    "DIA": _etf(470.0, 0.14, "ARCA", 3.5e6, "SPDR DJ INDUSTRIAL AVERAGE"),
    "TLT": _etf(90.0, 0.13, "NASDAQ", 35e6, "ISHARES 20+ YEAR TREASURY BO"),
    "GLD": _etf(370.0, 0.22, "ARCA", 10e6, "SPDR GOLD SHARES"),
    "SLV": _etf(45.0, 0.35, "ARCA", 30e6, "ISHARES SILVER TRUST"),
    "XLF": _etf(52.0, 0.18, "ARCA", 40e6, "FINANCIAL SELECT SECTOR SPDR"),
    "XLE": _etf(88.0, 0.22, "ARCA", 15e6, "ENERGY SELECT SECTOR SPDR"),
    "XLK": _etf(285.0, 0.24, "ARCA", 7e6, "TECHNOLOGY SELECT SECT SPDR"),
    "EEM": _etf(53.0, 0.18, "ARCA", 30e6, "ISHARES MSCI EMERGING MARKET"),
    "EFA": _etf(93.0, 0.15, "ARCA", 15e6, "ISHARES MSCI EAFE ETF"),
    "HYG": _etf(80.0, 0.07, "ARCA", 35e6, "ISHARES IBOXX HIGH YLD CORP"),
    "SMH": _etf(330.0, 0.38, "NASDAQ", 8e6, "VANECK SEMICONDUCTOR ETF"),
    "TQQQ": _etf(105.0, 0.60, "NASDAQ", 60e6, "PROSHARES ULTRAPRO QQQ"),
    "SQQQ": _etf(15.0, 0.60, "NASDAQ", 100e6, "PROSHARES ULTRAPRO SHORT QQQ"),
    "SOXL": _etf(40.0, 1.00, "ARCA", 90e6, "DIREXION DLY SEMICOND BULL 3X"),
    "ARKK": _etf(80.0, 0.45, "ARCA", 8e6, "ARK INNOVATION ETF"),
    "KRE": _etf(62.0, 0.28, "ARCA", 12e6, "SPDR S&P REGIONAL BANKING"),
    "XBI": _etf(110.0, 0.32, "ARCA", 10e6, "SPDR S&P BIOTECH ETF"),
    "GDX": _etf(75.0, 0.40, "ARCA", 20e6, "VANECK GOLD MINERS ETF"),
    "USO": _etf(72.0, 0.32, "ARCA", 5e6, "UNITED STATES OIL FUND LP"),
    # Common stocks
    "AAPL": _stk(270.0, 0.26, "NASDAQ", 50e6, 265598),
    "MSFT": _stk(510.0, 0.24, "NASDAQ", 20e6, 272093),
    "NVDA": _stk(190.0, 0.45, "NASDAQ", 180e6, 4815747),
    "AMZN": _stk(230.0, 0.32, "NASDAQ", 45e6, 3691937),
    "GOOGL": _stk(280.0, 0.30, "NASDAQ", 35e6, 208813719),
    "GOOG": _stk(281.0, 0.30, "NASDAQ", 22e6),
    "META": _stk(620.0, 0.35, "NASDAQ", 12e6, 107113386),
    "TSLA": _stk(430.0, 0.60, "NASDAQ", 95e6, 76792991),
    "AMD": _stk(240.0, 0.55, "NASDAQ", 45e6, 4391),
    "AVGO": _stk(350.0, 0.45, "NASDAQ", 22e6),
    "NFLX": _stk(110.0, 0.35, "NASDAQ", 40e6),  # after the 10-for-1 split of November 2025
    "INTC": _stk(38.0, 0.55, "NASDAQ", 90e6, 270639),
    "MU": _stk(230.0, 0.55, "NASDAQ", 25e6),
    "PLTR": _stk(180.0, 0.65, "NASDAQ", 60e6),
    "COIN": _stk(300.0, 0.70, "NASDAQ", 10e6),
    "MSTR": _stk(250.0, 0.75, "NASDAQ", 15e6),
    "SOFI": _stk(28.0, 0.65, "NASDAQ", 90e6),
    "CSCO": _stk(72.0, 0.22, "NASDAQ", 20e6),
    "HOOD": _stk(130.0, 0.75, "NASDAQ", 40e6),
    "MARA": _stk(15.0, 0.85, "NASDAQ", 45e6),
    "RIVN": _stk(14.0, 0.65, "NASDAQ", 35e6),
    "SMCI": _stk(40.0, 0.80, "NASDAQ", 30e6),
    "PYPL": _stk(65.0, 0.35, "NASDAQ", 15e6),
    "BAC": _stk(52.0, 0.24, "NYSE", 40e6),
    "JPM": _stk(305.0, 0.22, "NYSE", 9e6),
    "F": _stk(13.0, 0.32, "NYSE", 55e6),
    "BABA": _stk(160.0, 0.45, "NYSE", 18e6),
    "UBER": _stk(95.0, 0.38, "NYSE", 20e6),
    "DIS": _stk(112.0, 0.26, "NYSE", 9e6),
    "WMT": _stk(102.0, 0.22, "NYSE", 18e6),
    "XOM": _stk(117.0, 0.22, "NYSE", 15e6),
    "BA": _stk(200.0, 0.32, "NYSE", 9e6),
    "C": _stk(100.0, 0.27, "NYSE", 15e6),
    "WFC": _stk(85.0, 0.26, "NYSE", 16e6),
    "ORCL": _stk(230.0, 0.45, "NYSE", 25e6),
    "LLY": _stk(1000.0, 0.33, "NYSE", 3.5e6),
    "UNH": _stk(330.0, 0.38, "NYSE", 12e6),
    "V": _stk(340.0, 0.20, "NYSE", 7e6),
    "NIO": _stk(6.5, 0.75, "NYSE", 50e6),
    # Large caps the soak bench trades (bench/soak.py NAMES), so it meets no hash-made name.
    "CRM": _stk(250.0, 0.32, "NYSE", 7e6),
    "ADBE": _stk(340.0, 0.35, "NASDAQ", 3.5e6),
    "QCOM": _stk(165.0, 0.35, "NASDAQ", 8e6),
    "TXN": _stk(170.0, 0.30, "NASDAQ", 7e6),
    "GS": _stk(800.0, 0.28, "NYSE", 2.2e6),
    "MS": _stk(160.0, 0.28, "NYSE", 6e6),
    "MA": _stk(560.0, 0.22, "NYSE", 3e6),
    "CVX": _stk(150.0, 0.22, "NYSE", 8e6),
    "COP": _stk(90.0, 0.28, "NYSE", 7e6),
    "SLB": _stk(36.0, 0.33, "NYSE", 14e6),
    "KO": _stk(70.0, 0.16, "NYSE", 14e6),
    "PEP": _stk(145.0, 0.20, "NASDAQ", 7e6),
    "COST": _stk(920.0, 0.22, "NASDAQ", 2e6),
    "HD": _stk(370.0, 0.24, "NYSE", 3.5e6),
    "LOW": _stk(240.0, 0.26, "NYSE", 2.5e6),
    "NKE": _stk(65.0, 0.35, "NYSE", 12e6),
    "MCD": _stk(300.0, 0.18, "NYSE", 3.5e6),
    "SBUX": _stk(85.0, 0.30, "NASDAQ", 9e6),
    "CAT": _stk(560.0, 0.30, "NYSE", 3e6),
    "DE": _stk(480.0, 0.26, "NYSE", 1.5e6),
    "GE": _stk(300.0, 0.30, "NYSE", 5e6),
    "GM": _stk(72.0, 0.32, "NYSE", 9e6),
    # Indices (secType IND on CBOE): quoted and charted, never traded.
    "SPX": Listing(6800.0, 0.15, "CBOE", 0.0, "IND", 416904, "S&P 500 Stock Index"),
    "VIX": Listing(18.0, 0.90, "CBOE", 0.0, "IND", 13455763, "CBOE Volatility Index"),
    "NDX": Listing(25000.0, 0.20, "NASDAQ", 0.0, "IND", 0, "NASDAQ 100 Stock Index"),
    "RUT": Listing(2450.0, 0.22, "RUSSELL", 0.0, "IND", 0, "Russell 2000 Stock Index"),
}

# SPY, QQQ and IWM: options with expiries every session, quoted in pennies at every price.
DAILY_EXPIRY = frozenset({"SPY", "QQQ", "IWM"})


def listing(symbol: str) -> Listing | None:
    return LISTED.get(symbol)


def listed_con_id(symbol: str, entry: Listing) -> int:
    if entry.con_id:
        return entry.con_id
    # Away from the hashed names' range (100M..900M), so a listed name never clashes with one.
    return 900_000_000 + zlib.crc32(symbol.encode("utf-8")) % 90_000_000


def is_index(symbol: str) -> bool:
    entry = LISTED.get(symbol)
    return entry is not None and entry.kind == "IND"

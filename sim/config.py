"""Settings for the simulated IB Gateway."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class SimOptions:
    seed: int = 7
    # Simulated seconds per real second.
    time_scale: float = 60.0
    # None: the open of the most recent XNYS session at or before now.
    start: datetime | None = None
    # When the market is closed, jump the clock to the next open so a day passes in minutes.
    skip_closed: bool = True
    account: str = "DU123456"
    starting_cash: float = 100_000.0
    # Per option contract; every order pays at least min_commission.
    commission_per_contract: float = 0.65
    min_commission: float = 1.00
    # Real seconds between simulation steps (matching, ticks, bar updates).
    tick_interval: float = 0.05
    # Simulated seconds between keepUpToDate bar updates.
    bar_update_interval: float = 5.0
    server_version: int = 176
    symbols: tuple[str, ...] = ("SPY", "QQQ", "IWM")

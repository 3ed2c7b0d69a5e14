"""Settings for the simulated IB Gateway."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sim.latency import LatencyOptions

if TYPE_CHECKING:
    from sim.faults import Scenario

OVERFLOW_MODES = ("wait", "fail")


@dataclass(frozen=True)
class PacingOptions:
    """IB's request limits as the simulator enforces them; every window is in real (monotonic) seconds.

    IB paces by its own wall clock, and the service paces itself with real monotonic seconds, so a
    client that paces itself correctly never trips these however fast simulated time runs.
    """

    # Master switch: False turns every rule below off.
    enabled: bool = True
    # Historical data: identical request, burst per contract/exchange/tick type, rolling window.
    historical: bool = True
    hist_identical_seconds: float = 15.0
    hist_burst_count: int = 6
    hist_burst_seconds: float = 2.0
    hist_window_count: int = 60
    hist_window_seconds: float = 600.0
    # IB enforces the three rules for bars of 30 s or less (larger bars are only soft-throttled);
    # 0 applies them to every bar size, stricter than IB, for a client that must pace everything.
    hist_max_bar_seconds: int = 30
    # Messages per second per connection: error 100, and the Nth violation drops the connection.
    message_rate: bool = True
    max_messages_per_second: int = 50
    disconnect_after_violations: int = 3
    # The one-second window is measured this much shorter: the simulator timestamps messages when
    # its loop reads them, so a client that sends 45 on each second boundary (as ib_async does)
    # must not see two of its seconds merge because one batch was read late.
    message_rate_jitter_seconds: float = 0.1
    # Streaming market data lines (reqMktData + reqRealTimeBars) across all clients: error 101.
    market_data_lines: bool = True
    max_market_data_lines: int = 100
    # Open historical requests (unanswered ones and keepUpToDate streams) across all clients.
    open_historical: bool = True
    max_open_historical: int = 50
    # "wait": extra requests queue until a slot frees; "fail": they get error 162 at once.
    open_historical_overflow: str = "wait"

    def __post_init__(self) -> None:
        if self.open_historical_overflow not in OVERFLOW_MODES:
            raise ValueError(
                f"open_historical_overflow must be one of {OVERFLOW_MODES}, "
                f"got {self.open_historical_overflow!r}"
            )
        for name in (
            "hist_burst_count",
            "hist_window_count",
            "max_messages_per_second",
            "disconnect_after_violations",
            "max_market_data_lines",
            "max_open_historical",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.message_rate_jitter_seconds < 1:
            raise ValueError(
                f"message_rate_jitter_seconds must be >= 0 and < 1, got {self.message_rate_jitter_seconds!r}"
            )
        for name in ("hist_identical_seconds", "hist_burst_seconds", "hist_window_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")

    def rule_on(self, rule: str) -> bool:
        return self.enabled and bool(getattr(self, rule))

    @classmethod
    def off(cls) -> PacingOptions:
        return cls(enabled=False)

    def updated(self, values: dict[str, Any]) -> PacingOptions:
        return replace(self, **values)


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
    pacing: PacingOptions = field(default_factory=PacingOptions)
    # How long answers take (sim/latency.py): "instant" by default, "realistic" like a Gateway.
    latency: LatencyOptions = field(default_factory=LatencyOptions)
    # Faults to inject (sim.faults.Scenario); its own settings are applied with Scenario.apply.
    scenario: Scenario | None = None

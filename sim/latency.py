"""How long the simulated Gateway takes to answer each kind of request: seeded lognormal delays.

Profiles: "instant" (every answer at once: the default, so tests keep their speed) and
"realistic" (what a Gateway on a home connection shows on a normal day). Every figure is in real
seconds, like the Gateway's own clock, whatever the simulated time scale.

Sources for the realistic figures (checked 2026-12; a figure without a source is a guess and
says so):
- snapshot: IB's TWS API docs (reqMktData, "snapshot"): a snapshot request is answered with
  tickSnapshotEnd once its data is in, and after 11 seconds at the latest. ib_insync's author
  (erdewit/ib_insync#531, #451): "Each snapshot should be finished in about 12 seconds", "It can
  take 12 seconds for the ticker to be filled"; erdewit/ib_insync#642: reqTickers took "about 5
  seconds" for futures options. Median 4 s, p99 11 s, never past 11 s.
- first_tick: erdewit/ib_insync#642: with reqMktData "the bid/ask is generally available quite
  fast". Median 0.25 s, p99 2 s: a guess shaped by that remark.
- historical: erdewit/ib_insync#390: the first requests for bars took 0.5-0.6 s (later ones
  were slowed by pacing, which sim/pacing.py models separately). Median 0.6 s, p99 5 s (the
  tail is a guess).
- contract_details, sec_def: no published figure; median 0.15 s / 0.3 s, p99 1.5 s / 2.5 s are
  guesses (a round trip to IB's sec-def farm; the option-parameter answer is larger).
- order_ack: no published figure; median 0.08 s, p99 0.6 s is a guess (placeOrder to the first
  openOrder/orderStatus through IB's order servers).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The request kinds with a latency of their own.
LATENCY_KINDS = (
    "contract_details",
    "sec_def",
    "first_tick",
    "snapshot",
    "historical",
    "order_ack",
)
# IB ends a snapshot after 11 seconds whatever is missing.
SNAPSHOT_LIMIT = 11.0
_Z99 = 2.3263478740408408  # standard normal 99th percentile


@dataclass(frozen=True)
class Delay:
    """A lognormal delay by its median and 99th percentile (real seconds); 0/0 is no delay."""

    median: float = 0.0
    p99: float = 0.0
    # Never longer than this (0: three times the p99), so a freak draw cannot hang a client.
    cap: float = 0.0

    def __post_init__(self) -> None:
        for name in ("median", "p99", "cap"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not math.isfinite(v)
                or v < 0
            ):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {v!r}")
        if self.p99 < self.median:
            raise ValueError(f"p99 ({self.p99}) must not be below the median ({self.median})")
        if self.median == 0 and self.p99 > 0:
            raise ValueError("a delay with a p99 needs a median above 0")

    def draw(self, rng: random.Random) -> float:
        if self.median <= 0:
            return 0.0
        sigma = math.log(self.p99 / self.median) / _Z99
        value = self.median * math.exp(sigma * rng.gauss(0.0, 1.0))
        return min(value, self.cap or 3.0 * self.p99)


PROFILES: dict[str, dict[str, Delay]] = {
    "instant": {},
    "realistic": {
        "contract_details": Delay(0.15, 1.5),
        "sec_def": Delay(0.3, 2.5),
        "first_tick": Delay(0.25, 2.0),
        "snapshot": Delay(4.0, 11.0, cap=SNAPSHOT_LIMIT),
        "historical": Delay(0.6, 5.0),
        "order_ack": Delay(0.08, 0.6),
    },
}


@dataclass(frozen=True)
class LatencyOptions:
    """A profile, and per-kind delays that replace the profile's."""

    profile: str = "instant"
    delays: Mapping[str, Delay] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(
                f"latency profile must be one of {sorted(PROFILES)}, got {self.profile!r}"
            )
        for kind in self.delays:
            if kind not in LATENCY_KINDS:
                raise ValueError(
                    f"latency: unknown request kind {kind!r} (known: {list(LATENCY_KINDS)})"
                )

    def delay(self, kind: str) -> Delay:
        return self.delays.get(kind) or PROFILES[self.profile].get(kind) or Delay()

    @property
    def instant(self) -> bool:
        return all(self.delay(k).median == 0 for k in LATENCY_KINDS)

    @classmethod
    def parse(cls, raw: Any, key: str = "latency") -> LatencyOptions:
        """From a scenario or settings value: "realistic", or {profile: ..., historical: {median, p99}}."""
        if isinstance(raw, LatencyOptions):
            return raw
        if isinstance(raw, str):
            try:
                return cls(profile=raw)
            except ValueError as e:
                raise ValueError(f"{key}: {e}") from None
        if not isinstance(raw, Mapping):
            raise ValueError(f"{key}: expected a profile name or a mapping, got {raw!r}")
        profile = raw.get("profile", "instant")
        delays: dict[str, Delay] = {}
        for kind, value in raw.items():
            if kind == "profile":
                continue
            if kind not in LATENCY_KINDS:
                raise ValueError(
                    f"{key}.{kind}: unknown request kind (known: profile, {', '.join(LATENCY_KINDS)})"
                )
            if not isinstance(value, Mapping) or not set(value) <= {"median", "p99", "cap"}:
                raise ValueError(
                    f"{key}.{kind}: expected {{median: seconds, p99: seconds}}, got {value!r}"
                )
            try:
                median = value.get("median", 0.0)
                delays[kind] = Delay(median, value.get("p99", median), value.get("cap", 0.0))
            except ValueError as e:
                raise ValueError(f"{key}.{kind}: {e}") from None
        try:
            return cls(profile=profile, delays=delays)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None


class Latency:
    """Draws each request's delay: one seeded generator per kind, so the delays of one kind do
    not depend on how many requests of another kind came first."""

    def __init__(self, options: LatencyOptions, seed: int) -> None:
        self.options = options
        self._rngs = {k: random.Random(f"{seed}:latency:{k}") for k in LATENCY_KINDS}

    def draw(self, kind: str) -> float:
        return self.options.delay(kind).draw(self._rngs[kind])

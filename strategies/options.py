"""Option selection: expiry, strikes by moneyness, and the liquidity filter over live quotes."""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Literal, TypeVar

from strategies.signals import Direction

K = TypeVar("K", bound=Hashable)

Moneyness = Literal["atm", "itm1", "otm1"]
MONEYNESS: tuple[str, ...] = ("atm", "itm1", "otm1")

# Float slack for "spread <= limit" and strike equality: 1.10 - 1.00 is 0.10000000000000009.
_EPS = 1e-9

REJECTION_CODES = (
    "bad_right",
    "nan_quote",
    "non_positive_quote",
    "crossed",
    "stale",
    "low_volume",
    "wide_spread",
)


@dataclass(frozen=True, slots=True)
class OptionParams:
    moneyness: Moneyness = "atm"
    strike_count: int = 5
    min_dte: int = 1
    allow_expiry_day: bool = False
    min_volume: float = 100
    max_spread_pct: float = 0.10
    spread_allowance: float = 0.10
    max_quote_age_s: float = 10.0

    def __post_init__(self) -> None:
        if self.moneyness not in MONEYNESS:
            raise ValueError(f"moneyness must be one of {MONEYNESS}, got {self.moneyness!r}")
        if self.strike_count < 1:
            raise ValueError("strike_count must be at least 1")
        if self.min_dte < 0:
            raise ValueError("min_dte must not be negative")
        if not self.min_volume >= 0:
            raise ValueError("min_volume must not be negative")
        if not self.max_spread_pct > 0:
            raise ValueError("max_spread_pct must be positive")
        if not self.spread_allowance >= 0:
            raise ValueError("spread_allowance must not be negative")
        if not self.max_quote_age_s > 0:
            raise ValueError("max_quote_age_s must be positive")


def choose_expiry(expirations: Iterable[str], today: date, params: OptionParams) -> str | None:
    """The nearest expiration (YYYYMMDD, returned as given) that may be traded on `today`.

    An expiration d days away qualifies when d >= max(min_dte, 1), or when d == 0 and
    allow_expiry_day is set: allow_expiry_day adds the expiring series on its own day
    whatever min_dte says, and min_dte 0 alone does not allow it. Strings that are not
    YYYYMMDD dates are skipped; past expirations never qualify.
    """
    best: tuple[int, str] | None = None
    for raw in expirations:
        text = str(raw).strip()
        expiry = _expiry_date(text)
        if expiry is None:
            continue
        days = (expiry - today).days
        ok = (days >= max(params.min_dte, 1)) or (days == 0 and params.allow_expiry_day)
        if ok and (best is None or days < best[0]):
            best = (days, text)
    return None if best is None else best[1]


# The same chain is asked on every bar (warm_contracts): parse and clean each one once.
@lru_cache(maxsize=4096)
def _expiry_date(text: str) -> date | None:
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


@lru_cache(maxsize=256)
def _clean_sorted(strikes: tuple) -> tuple[float, ...]:
    return tuple(sorted({float(s) for s in strikes if math.isfinite(s) and s > 0}))


def _clean_strikes(strikes: Iterable[float]) -> tuple[float, ...]:
    """Distinct finite positive strikes, ascending."""
    return _clean_sorted(strikes if isinstance(strikes, tuple) else tuple(strikes))


def _nearer(clean: Sequence[float], spot: float, i: int, j: int) -> bool:
    """Whether clean[i] is nearer `spot` than clean[j]; a tie keeps the lower strike."""
    return (abs(clean[i] - spot), clean[i]) < (abs(clean[j] - spot), clean[j])


def nearest_strikes(strikes: Iterable[float], spot: float, count: int) -> list[float]:
    """The `count` distinct strikes nearest `spot`, ascending; a tie in distance keeps the lower."""
    if count <= 0 or not math.isfinite(spot):
        return []
    clean = _clean_strikes(strikes)
    # Sorted strikes: the nearest ones are a window around spot's insertion point; widen it
    # one strike at a time toward the nearer side.
    hi = bisect.bisect_left(clean, spot)
    lo = hi - 1
    while hi - lo - 1 < count and (lo >= 0 or hi < len(clean)):
        if hi >= len(clean) or (lo >= 0 and _nearer(clean, spot, lo, hi)):
            lo -= 1
        else:
            hi += 1
    return list(clean[lo + 1 : hi])


def target_strike(
    strikes: Iterable[float], spot: float, direction: Direction, moneyness: Moneyness
) -> float | None:
    """The strike to trade, or None when the chain has no such strike.

    atm: the strike nearest `spot` (a tie keeps the lower). itm1: one strike in the money
    from the atm strike: for a CALL the next strike BELOW it, for a PUT the next ABOVE.
    otm1: the opposite neighbour.
    """
    if moneyness not in MONEYNESS:
        raise ValueError(f"moneyness must be one of {MONEYNESS}, got {moneyness!r}")
    if not math.isfinite(spot):
        return None
    clean = _clean_strikes(strikes)
    if not clean:
        return None
    right = bisect.bisect_left(clean, spot)
    if right == len(clean) or (right > 0 and _nearer(clean, spot, right - 1, right)):
        atm_index = right - 1
    else:
        atm_index = right
    if moneyness == "atm":
        return clean[atm_index]
    below_is_itm = Direction(direction) is Direction.CALL
    step = -1 if (moneyness == "itm1") == below_is_itm else 1
    index = atm_index + step
    return clean[index] if 0 <= index < len(clean) else None


@dataclass(frozen=True, slots=True)
class OptionQuoteView:
    strike: float
    right: str  # "C" or "P"
    bid: float
    ask: float
    volume: float
    age_s: float  # real seconds since the bid/ask last changed, at the oldest; inf: unknown


@dataclass(frozen=True, slots=True)
class OptionChoice:
    strike: float
    right: str
    bid: float
    ask: float
    mid: float
    volume: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rejection:
    strike: float
    right: str
    reason: str  # "<code>: <detail>", the code one of REJECTION_CODES

    @property
    def code(self) -> str:
        return self.reason.split(":", 1)[0]


def quote_problem(bid: float, ask: float) -> str | None:
    """Why a bid/ask cannot be traded or filled on ("<code>: <detail>"), or None: NaN, zero or
    negative (IB's -1 means no quote), crossed."""
    if not (math.isfinite(bid) and math.isfinite(ask)):
        return f"nan_quote: bid {bid} ask {ask}"
    if bid <= 0 or ask <= 0:
        return f"non_positive_quote: bid {bid:.2f} ask {ask:.2f}"
    if ask < bid:
        return f"crossed: ask {ask:.2f} < bid {bid:.2f}"
    return None


def quote_rejection(q: OptionQuoteView, params: OptionParams) -> str | None:
    """Why a quote is unusable ("<code>: <detail>"), or None; checks run in REJECTION_CODES order.

    - bad_right: right is not "C" or "P"
    - nan_quote: bid or ask NaN/infinite (no entitlement, no market)
    - non_positive_quote: bid or ask <= 0
    - crossed: ask < bid
    - stale: age_s NaN or > max_quote_age_s
    - low_volume: volume NaN or < min_volume
    - wide_spread: spread = ask - bid, mid = (bid + ask) / 2; the spread is acceptable when
      spread <= max_spread_pct * mid OR spread <= spread_allowance (each with 1e-9 slack
      for float noise), i.e. rejected when spread > max(max_spread_pct * mid, spread_allowance)
    """
    if q.right not in ("C", "P"):
        return f"bad_right: {q.right!r} is not C or P"
    problem = quote_problem(q.bid, q.ask)
    if problem is not None:
        return problem
    if math.isinf(q.age_s):
        return "stale: bid/ask never seen to change (a frozen quote looks exactly like this)"
    if not (q.age_s <= params.max_quote_age_s):
        return f"stale: bid/ask unchanged for {q.age_s:.1f}s > {params.max_quote_age_s:g}s"
    if not (q.volume >= params.min_volume):
        return f"low_volume: volume {q.volume:g} < {params.min_volume:g}"
    spread = q.ask - q.bid
    mid = (q.bid + q.ask) / 2.0
    pct_limit = params.max_spread_pct * mid
    if spread > pct_limit + _EPS and spread > params.spread_allowance + _EPS:
        return (
            f"wide_spread: spread {spread:.2f} > max({params.max_spread_pct:.0%} of mid "
            f"{pct_limit:.2f}, allowance {params.spread_allowance:.2f})"
        )
    return None


def choose_option(
    quotes: Sequence[OptionQuoteView], target: float, params: OptionParams
) -> tuple[OptionChoice | None, list[Rejection]]:
    """Pick the quote to trade among `quotes` (one right, the strikes near the money).

    Every quote is checked with `quote_rejection`; all rejections are returned, in input
    order, whether or not something survives. Among survivors the target strike wins;
    when it was rejected or not quoted, the most liquid survivor: highest volume, then
    tightest spread, then nearest the target, then the lower strike. None when nothing
    survives.
    """
    rejections: list[Rejection] = []
    survivors: list[OptionQuoteView] = []
    for q in quotes:
        reason = quote_rejection(q, params)
        if reason is None:
            survivors.append(q)
        else:
            rejections.append(Rejection(q.strike, q.right, reason))
    if not survivors:
        return None, rejections

    def describe(q: OptionQuoteView) -> str:
        mid = (q.bid + q.ask) / 2.0
        spread = q.ask - q.bid
        return (
            f"{q.strike:g} {q.right}: bid {q.bid:.2f} ask {q.ask:.2f} mid {mid:.3f} "
            f"spread {spread:.2f} ({spread / mid:.1%} of mid) volume {q.volume:g}"
        )

    on_target = [q for q in survivors if abs(q.strike - target) <= _EPS]
    if on_target:
        pick = on_target[0]
        reasons: tuple[str, ...] = (f"target strike {describe(pick)}",)
    else:
        pick = min(
            survivors,
            key=lambda q: (-q.volume, q.ask - q.bid, abs(q.strike - target), q.strike),
        )
        missed = [r.reason for r in rejections if abs(r.strike - target) <= _EPS]
        why = (
            f"target {target:g} rejected ({'; '.join(missed)})"
            if missed
            else (f"target {target:g} not quoted")
        )
        reasons = (why, f"most liquid survivor {describe(pick)}")
    choice = OptionChoice(
        strike=pick.strike,
        right=pick.right,
        bid=pick.bid,
        ask=pick.ask,
        mid=(pick.bid + pick.ask) / 2.0,
        volume=pick.volume,
        reasons=reasons,
    )
    return choice, rejections


def strikes_to_ask(
    strikes: Sequence[float], target: float, answered: Mapping[float, bool]
) -> tuple[float, ...]:
    """Which of an entry's candidate `strikes` to ask quotes for next, given the answers so far
    (strike -> whether its quote passed `quote_rejection`; a strike not quoted, not listed or
    without a line is False). () when nothing is left to ask: the choice can be made.

    The target first, alone: when it passes, `choose_option` takes it whatever the others
    quote, so they are never asked (one line, one request, instead of strike_count of each).
    Once it has failed, every candidate not asked yet, together: the fallback is the most
    liquid survivor, and only every survivor's volume and spread say which that is; one at a
    time would both cost a round trip each and pick a different contract. So the contract
    chosen is the one `choose_option` would choose from every candidate's quote, and no entry
    asks more than twice. A target that is not among `strikes` cannot win: all are asked at
    once, as before.
    """

    def among(strike: float, pool: Iterable[float]) -> bool:
        return any(abs(strike - k) <= _EPS for k in pool)

    if among(target, strikes):
        if not among(target, answered):
            return (next(k for k in strikes if abs(k - target) <= _EPS),)
        if any(ok for k, ok in answered.items() if abs(k - target) <= _EPS):
            return ()
    todo = [k for k in strikes if not among(k, answered)]
    return tuple(dict.fromkeys(todo))


def later_ask_wait(elapsed_s: float, quote_wait_s: float, recheck_s: float) -> float | None:
    """How long an entry's later ask (the candidates after its target failed) may wait for a
    line and for its first quote, or None when it is too late to ask at all; `elapsed_s` is
    the real time since the entry's first ask.

    The bound is the one a single ask always had: a line within quote_wait_s, its first bid and
    ask within quote_wait_s more, quote_recheck_s to see it change (`entry_quote_budget`, 9 s
    with the defaults). Asking the target first must not make an entry act on an older signal
    than asking every strike at once could: a later ask waits only what is left of that bound,
    less half a second for the answer to travel between actors; under a quarter second it is
    not worth a round trip (a realistic Gateway's first tick alone takes about that long).
    """
    left = entry_quote_budget(quote_wait_s, recheck_s) - elapsed_s - recheck_s - 0.5
    if not left / 2 >= 0.25:  # NaN too: an entry of unknown age asks no more
        return None
    return min(quote_wait_s, left / 2)


def entry_quote_budget(quote_wait_s: float, recheck_s: float) -> float:
    """Real seconds an entry may spend on its quotes, over all its asks (see later_ask_wait)."""
    return 2 * quote_wait_s + recheck_s


def warm_plan(
    wanted: Mapping[str, Sequence[K]], budget: int, core: Mapping[str, int] | None = None
) -> dict[str, tuple[K, ...]]:
    """Which symbols get their warm set of quote lines within `budget` lines, in the order
    given (the caller's priority). A symbol's first `core[symbol]` items (all when it has no
    entry) are warmed whole or not at all: a symbol warmed in part would still need a snapshot
    for the rest, which is the round trip warming is for. Symbols that do not fit get nothing;
    a smaller set later in the order may still fit. The items past a core are a margin (the
    strikes the spot's next move brings into play) and are added, again whole and in the same
    order, only with the lines every core has left.
    """
    sets: dict[str, tuple[tuple[K, ...], tuple[K, ...]]] = {}
    for symbol, items in wanted.items():
        n = len(items) if core is None or symbol not in core else max(0, core[symbol])
        head = tuple(dict.fromkeys(items[:n]))
        in_head = frozenset(head)
        rest = tuple(k for k in dict.fromkeys(items) if k not in in_head)
        sets[symbol] = (head, rest) if head else (rest, ())
    plan: dict[str, tuple[K, ...]] = {}
    left = max(0, budget)
    for symbol, (head, _) in sets.items():
        if head and len(head) <= left:
            plan[symbol] = head
            left -= len(head)
    for symbol in list(plan):
        rest = sets[symbol][1]
        if rest and len(rest) <= left:
            plan[symbol] += rest
            left -= len(rest)
    return plan

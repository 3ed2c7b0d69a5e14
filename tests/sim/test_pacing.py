"""The simulator's pacing rules on their own: table-driven cases and properties over a fake monotonic clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.config import PacingOptions
from sim.pacing import (
    HIST_BURST,
    HIST_IDENTICAL,
    HIST_WINDOW,
    HistoricalPacing,
    MessageRate,
    Pacing,
    RateVerdict,
)


class Mono:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# (time, identical key, contract key, weight) -> expected rule (None: answered)
HIST_CASES = {
    "identical within 15 s": (
        [
            (0, "a", "SPY", 1, None),
            (14.99, "a", "SPY", 1, HIST_IDENTICAL),
            (15, "a", "SPY", 1, None),
        ],
    ),
    "refused requests do not extend the identical window": (
        [
            (0, "a", "SPY", 1, None),
            (10, "a", "SPY", 1, HIST_IDENTICAL),
            (15, "a", "SPY", 1, None),
        ],
    ),
    "sixth for one contract within 2 s": (
        [(0.1 * i, f"k{i}", "SPY", 1, None) for i in range(5)]
        + [
            (0.5, "k5", "SPY", 1, HIST_BURST),
            (0.5, "q", "QQQ", 1, None),
            (2.0, "k6", "SPY", 1, None),
        ],
    ),
    "BID_ASK counts twice in a burst": (
        [(0, "a", "SPY", 2, None), (0, "b", "SPY", 2, None), (0, "c", "SPY", 2, HIST_BURST)],
    ),
    "sixty-first in ten minutes": (
        [(10.0 * i, f"k{i}", f"c{i % 7}", 1, None) for i in range(60)]
        + [(599.9, "x", "SPY", 1, HIST_WINDOW), (600.0, "x", "SPY", 1, None)],
    ),
    "BID_ASK counts twice in the window": (
        [(10.0 * i, f"k{i}", f"c{i % 7}", 2, None) for i in range(30)]
        + [(299.0, "x", "SPY", 1, HIST_WINDOW)],
    ),
}


@pytest.mark.parametrize("case", list(HIST_CASES), ids=list(HIST_CASES))
def test_historical_rules_table(case: str) -> None:
    [steps] = HIST_CASES[case]
    mono = Mono()
    pacer = HistoricalPacing(monotonic=mono)
    got = []
    for t, ident, contract, weight, _ in steps:
        mono.t = t
        got.append(pacer.check(ident, contract, weight))
    assert got == [expected for *_, expected in steps]


def test_historical_limits_are_configurable() -> None:
    mono = Mono()
    pacer = HistoricalPacing(identical_seconds=1, burst_count=2, burst_seconds=1, monotonic=mono)
    assert pacer.check("a", "SPY") is None
    assert pacer.check("b", "SPY") == HIST_BURST
    mono.t = 1.0
    assert pacer.check("a", "SPY") is None


requests = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=30, allow_nan=False),  # gap since the previous one
        st.sampled_from(["a", "b", "c", "d"]),  # identical key (within a contract)
        st.sampled_from(["SPY", "QQQ"]),
        st.sampled_from([1, 1, 1, 2]),
    ),
    max_size=150,
)


@settings(max_examples=150, deadline=None)
@given(requests)
def test_historical_rules_are_exact(seq: list[tuple[float, str, str, int]]) -> None:
    """Every answered request breaks no rule, and every refused one breaks one."""
    mono = Mono()
    pacer = HistoricalPacing(monotonic=mono)
    answered: list[tuple[float, tuple[str, str], str, int]] = []
    t = 0.0
    for gap, ident, contract, weight in seq:
        t += gap
        mono.t = t
        key = (contract, ident)
        same = [a for a in answered if a[1] == key and t - a[0] < 15]
        burst = sum(a[3] for a in answered if a[2] == contract and t - a[0] < 2)
        window = sum(a[3] for a in answered if t - a[0] < 600)
        should_refuse = bool(same) or burst + weight >= 6 or window + weight > 60
        rule = pacer.check(key, contract, weight)
        assert (rule is not None) == should_refuse, (t, key, rule)
        if rule is None:
            answered.append((t, key, contract, weight))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(min_value=10.1, max_value=40), st.sampled_from(["SPY", "QQQ", "IWM"])),
        max_size=120,
    ),
    st.booleans(),
)
def test_a_client_pacing_itself_never_trips(seq: list[tuple[float, str]], repeat: bool) -> None:
    """Distinct requests over 10 s apart, or identical ones over 15 s apart, never break a rule."""
    mono = Mono()
    pacer = HistoricalPacing(monotonic=mono)
    for i, (gap, symbol) in enumerate(seq):
        mono.t += gap + (5 if repeat else 0)
        key = (symbol, "1 D") if repeat else (symbol, i)
        assert pacer.check(key, symbol) is None


def test_message_rate_table() -> None:
    mono = Mono()
    rate = MessageRate(limit=50, window=1.0, max_violations=3, monotonic=mono)
    verdicts = [rate.check() for _ in range(53)]
    assert verdicts[:50] == [RateVerdict.OK] * 50
    assert verdicts[50:] == [RateVerdict.VIOLATION, RateVerdict.DROP, RateVerdict.DROP]
    mono.t = 0.999
    assert rate.check() is RateVerdict.DROP
    mono.t = 1.0
    assert [rate.check() for _ in range(51)][-2:] == [RateVerdict.OK, RateVerdict.VIOLATION]
    mono.t = 2.0
    assert [rate.check() for _ in range(51)][-1] is RateVerdict.DISCONNECT
    assert rate.violations == 3


def test_message_rate_counts_arrivals_not_processing() -> None:
    # 80 messages that arrived 25 ms apart, handled late and all at once (a slow answer before
    # them held up the loop): the Gateway counts them as they came, 40 a second at most.
    mono = Mono()
    mono.t = 10.0
    rate = MessageRate(limit=50, window=1.0, monotonic=mono)
    assert [rate.check(i * 0.025) for i in range(80)] == [RateVerdict.OK] * 80
    late = MessageRate(limit=50, window=1.0, monotonic=mono)
    assert RateVerdict.VIOLATION in [late.check() for _ in range(80)]  # stamped when handled


def test_message_rate_sliding_window() -> None:
    mono = Mono()
    rate = MessageRate(limit=3, window=1.0, monotonic=mono)
    for t in (0.0, 0.4, 0.8):
        mono.t = t
        assert rate.check() is RateVerdict.OK
    mono.t = 0.99
    assert rate.check() is RateVerdict.VIOLATION
    mono.t = 1.0  # the one at 0.0 left the window
    assert rate.check() is RateVerdict.OK


def _throttled_arrivals(n: int, delays: list[float], per_second: int = 45) -> list[float]:
    """When messages of a client throttled like ib_async (45 per sliding second) reach the server."""
    sent: list[float] = []
    t = 0.0
    for _ in range(n):
        if len(sent) >= per_second and t - sent[-per_second] < 1.0:
            t = sent[-per_second] + 1.0
        sent.append(t)
    return sorted(s + d for s, d in zip(sent, delays, strict=False))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=1, max_value=300),
    st.lists(st.floats(min_value=0, max_value=0.09), min_size=300, max_size=300),
)
def test_ib_async_throttle_never_trips_the_message_rate(n: int, delays: list[float]) -> None:
    mono = Mono()
    options = PacingOptions()
    rate = Pacing(options, monotonic=mono).new_message_rate()
    for t in _throttled_arrivals(n, delays):
        mono.t = t
        assert rate.check() is RateVerdict.OK


def test_pacing_switches_and_limits() -> None:
    mono = Mono()
    pacing = Pacing(PacingOptions(max_market_data_lines=2, max_open_historical=1), mono)
    assert pacing.lines_allow(1) and not pacing.lines_allow(2)
    assert not pacing.open_full(0) and pacing.open_full(1)
    assert pacing.historical_applies(30) and not pacing.historical_applies(60)
    assert not pacing.historical_applies("W")
    assert dict(pacing.violations) == {"market_data_lines": 1}
    pacing.configure(PacingOptions(hist_max_bar_seconds=0))
    assert pacing.historical_applies(60) and pacing.historical_applies("W")
    off = Pacing(PacingOptions.off(), mono)
    assert off.lines_allow(10_000) and not off.open_full(10_000)
    assert not off.historical_applies(5) and not off.on("message_rate")
    rule_off = Pacing(PacingOptions(market_data_lines=False), mono)
    assert rule_off.lines_allow(10_000) and rule_off.on("historical")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(open_historical_overflow="drop"), "open_historical_overflow"),
        (dict(max_market_data_lines=0), "max_market_data_lines"),
        (dict(hist_burst_count=True), "hist_burst_count"),
        (dict(hist_identical_seconds=-1), "hist_identical_seconds"),
        (dict(message_rate_jitter_seconds=1.0), "message_rate_jitter_seconds"),
    ],
)
def test_pacing_options_are_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PacingOptions(**kwargs)

"""SpikeGuard: a spike is held and dropped, a real gap is held and confirmed, ordinary bars pass."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.bars import Bar
from strategies.sanity import (
    SpikeGuard,
    SpikeParams,
    implausible,
    observe_quote,
    quote_age_s,
    spike_threshold,
    true_range,
)

T = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
P = SpikeParams()


def bar(i: int, close: float, spread: float = 0.1, prev: float | None = None) -> Bar:
    o = close if prev is None else prev
    return Bar(
        T + timedelta(minutes=i), o, max(o, close) + spread, min(o, close) - spread, close, 1e4
    )


def walk(steps: list[float], start: float = 100.0) -> list[Bar]:
    """Bars of a random walk whose moves are `steps` (fractions of the price)."""
    out, price = [], start
    for i, step in enumerate(steps):
        new = price * (1.0 + step)
        out.append(bar(i, new, spread=price * 0.0005, prev=price))
        price = new
    return out


def feed(guard: SpikeGuard, bars: list[Bar]) -> list[tuple[str, Bar]]:
    return [(v.outcome, v.bar) for b in bars for v in guard.offer(b)]


# Ordinary minutes: moves of at most 0.2% (the simulator's 1-minute bars stay under 4 ATR).
ordinary = st.lists(st.floats(-0.002, 0.002), min_size=20, max_size=120)


@settings(max_examples=150, deadline=None)
@given(ordinary)
def test_ordinary_bars_are_never_suspect(steps: list[float]) -> None:
    bars = walk(steps)
    out = feed(SpikeGuard(P), bars)
    assert [o for o, _ in out] == ["accept"] * len(bars)


@settings(max_examples=150, deadline=None)
@given(ordinary, st.integers(16, 200), st.sampled_from([0.1, 0.2, 3.0, 10.0]))
def test_a_spike_that_reverts_is_dropped_and_never_delivered(
    steps: list[float], at: int, factor: float
) -> None:
    bars = walk(steps)
    at = at % (len(bars) - 2) + 1
    at = max(at, min(16, len(bars) - 2))
    good = bars[at]
    spike = Bar(good.time, *(p * factor for p in (good.open, good.high, good.low, good.close)), 1.0)
    series = bars[:at] + [spike] + bars[at + 1 :]
    out = feed(SpikeGuard(P), series)
    delivered = [b for o, b in out if o in ("accept", "confirm")]
    assert spike not in delivered
    assert ("drop", spike) in out
    assert delivered == bars[:at] + bars[at + 1 :]


def test_the_issue_spike_spy_at_ten_times_is_dropped() -> None:
    g = SpikeGuard(P)
    bars = [bar(i, 673.1 + 0.05 * (i % 3)) for i in range(20)]
    feed(g, bars)
    spike = bar(20, 6731.0)
    assert [v.outcome for v in g.offer(spike)] == ["hold"]
    after = bar(21, 673.2)
    assert [(v.outcome, v.bar) for v in g.offer(after)] == [("drop", spike), ("accept", after)]


def test_a_gap_that_persists_is_confirmed_then_its_level_is_the_new_normal() -> None:
    g = SpikeGuard(P)
    feed(g, [bar(i, 100.0 + 0.02 * (i % 2)) for i in range(20)])
    gap = bar(20, 104.0, prev=100.0)
    assert [v.outcome for v in g.offer(gap)] == ["hold"]
    nxt = bar(21, 104.1, prev=104.0)
    assert [(v.outcome, v.bar) for v in g.offer(nxt)] == [("confirm", gap), ("accept", nxt)]
    # The gap is not the new yardstick: the ATR is of the bars after it.
    assert g.atr is not None and g.atr < 1.0
    assert [v.outcome for v in g.offer(bar(22, 104.05, prev=104.1))] == ["accept"]


def test_two_spikes_in_a_row_far_apart_are_both_dropped() -> None:
    g = SpikeGuard(P)
    feed(g, [bar(i, 50.0) for i in range(20)])
    up, down, back = bar(20, 500.0), bar(21, 5.0), bar(22, 50.0)
    out = [(v.outcome, v.bar) for b in (up, down, back) for v in g.offer(b)]
    assert out == [("hold", up), ("drop", up), ("hold", down), ("drop", down), ("accept", back)]


def test_warm_up_floor_catches_a_ten_x_bar_before_any_atr() -> None:
    g = SpikeGuard(P)
    first, spike, back = bar(0, 20.0), bar(1, 200.0), bar(2, 20.1)
    out = [(v.outcome, v.bar) for b in (first, spike, back) for v in g.offer(b)]
    assert out == [("accept", first), ("hold", spike), ("drop", spike), ("accept", back)]


@given(
    st.floats(1.0, 1e4),
    st.floats(0.0, 50.0),
    st.floats(1e-4, 1.0),
)
def test_threshold_is_never_below_the_floor(prev: float, atr: float, floor: float) -> None:
    p = SpikeParams(floor_pct=floor)
    assert spike_threshold(prev, atr, p) >= floor * prev
    assert spike_threshold(prev, None, p, warm=False) >= max(floor, p.warmup_pct) * prev


@given(st.floats(1.0, 1e4), st.floats(1e-3, 10.0), st.floats(1.0, 1e3))
def test_implausible_exactly_when_true_range_exceeds_threshold(
    prev: float, atr: float, factor: float
) -> None:
    b = bar(0, prev * factor, prev=prev)
    expected = true_range(b, prev) > spike_threshold(prev, atr, P)
    assert (implausible(b, prev, atr, P) is not None) == expected


@pytest.mark.parametrize(
    "kw",
    [{"atr_multiple": 0}, {"atr_period": 0}, {"floor_pct": 0}, {"warmup_pct": float("nan")}],
)
def test_bad_params_are_refused(kw: dict) -> None:
    with pytest.raises(ValueError):
        SpikeParams(**kw)


# ---------------------------------------------------------------------- quote marks

prices = st.sampled_from([1.00, 1.05, 1.10, 2.00])


@given(st.lists(st.tuples(prices, prices, st.integers(1, 30), st.booleans()), max_size=30))
def test_quote_age_is_never_younger_than_the_last_change_seen(
    looks: list[tuple[float, float, int, bool]],
) -> None:
    """Whatever the looks, the age is at least the time since the last observed change, and
    infinite while no change was ever observed (a frozen quote stays that way)."""
    mark, now, changed_at, values = None, T, None, None
    for bid, ask, gap_s, watched in looks:
        prev_seen = mark.seen if mark else None
        now += timedelta(seconds=gap_s)
        mark = observe_quote(mark, bid, ask, now, watched)
        if values is not None and (bid, ask) != values:
            changed_at = now if watched else prev_seen
        values = (bid, ask)
        age = quote_age_s(mark, now)
        if changed_at is None:
            assert age == float("inf")
        else:
            assert age >= (now - changed_at).total_seconds()


def test_a_change_seen_between_two_snapshots_is_dated_to_the_first() -> None:
    a = observe_quote(None, 1.00, 1.10, T)
    assert quote_age_s(a, T) == float("inf")
    b = observe_quote(a, 1.05, 1.15, T + timedelta(seconds=1))
    assert quote_age_s(b, T + timedelta(seconds=1)) == 1.0
    frozen = observe_quote(b, 1.05, 1.15, T + timedelta(seconds=30))
    assert quote_age_s(frozen, T + timedelta(seconds=30)) == 30.0
    # On a line that stayed open, a change is now.
    live = observe_quote(frozen, 1.10, 1.20, T + timedelta(seconds=31), watched=True)
    assert quote_age_s(live, T + timedelta(seconds=31)) == 0.0

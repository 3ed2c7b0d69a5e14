"""Option choice: expiry rules, strikes by moneyness, quote rejections, liquid fallback."""

import math
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies.options import (
    REJECTION_CODES,
    OptionParams,
    OptionQuoteView,
    choose_expiry,
    choose_option,
    entry_quote_budget,
    later_ask_wait,
    nearest_strikes,
    quote_rejection,
    strikes_to_ask,
    target_strike,
    warm_plan,
)
from strategies.signals import Direction

FRI = date(2024, 3, 15)  # an expiry day
EXPS = ["20240315", "20240318", "20240320", "20240322", "20240419"]


@pytest.mark.parametrize(
    ("today", "params", "expected"),
    [
        (FRI, OptionParams(), "20240318"),  # default min_dte 1: not today's series
        (FRI, OptionParams(min_dte=0), "20240318"),  # min_dte 0 alone does not allow day 0
        (FRI, OptionParams(allow_expiry_day=True), "20240315"),
        (FRI, OptionParams(min_dte=0, allow_expiry_day=True), "20240315"),
        (FRI, OptionParams(min_dte=4), "20240320"),  # 5 days away
        (FRI, OptionParams(min_dte=3), "20240318"),  # exactly 3 days: >= min_dte
        (FRI, OptionParams(min_dte=40), None),
        (date(2024, 3, 14), OptionParams(), "20240315"),  # 1 day away
        (date(2024, 3, 16), OptionParams(allow_expiry_day=True), "20240318"),  # 15th is past
        (date(2024, 4, 20), OptionParams(), None),
    ],
)
def test_choose_expiry(today, params, expected):
    assert choose_expiry(EXPS, today, params) == expected


def test_choose_expiry_ignores_order_and_junk():
    exps = ["20240419", "garbage", "", "2024-03-18", "20240320", "20240318"]
    assert choose_expiry(iter(exps), FRI, OptionParams()) == "20240318"
    assert choose_expiry([], FRI, OptionParams()) is None


STRIKES = [670.0, 675.0, 680.0, 681.0, 682.0, 683.0, 684.0, 685.0, 690.0]


@pytest.mark.parametrize(
    ("spot", "count", "expected"),
    [
        (682.4, 3, [681.0, 682.0, 683.0]),
        (682.4, 5, [680.0, 681.0, 682.0, 683.0, 684.0]),
        (682.5, 2, [682.0, 683.0]),
        (700.0, 2, [685.0, 690.0]),
        (682.0, 0, []),
        (float("nan"), 3, []),
    ],
)
def test_nearest_strikes(spot, count, expected):
    assert nearest_strikes(STRIKES, spot, count) == expected


def test_nearest_strikes_dedupes_and_drops_bad_strikes():
    assert nearest_strikes([5.0, 5.0, float("nan"), -1.0, 0.0, 6.0], 5.2, 5) == [5.0, 6.0]


@pytest.mark.parametrize(
    ("direction", "moneyness", "expected"),
    [
        # spot 682.4: atm 682; a CALL is in the money BELOW spot, a PUT above
        (Direction.CALL, "atm", 682.0),
        (Direction.CALL, "itm1", 681.0),
        (Direction.CALL, "otm1", 683.0),
        (Direction.PUT, "atm", 682.0),
        (Direction.PUT, "itm1", 683.0),
        (Direction.PUT, "otm1", 681.0),
    ],
)
def test_target_strike(direction, moneyness, expected):
    assert target_strike(STRIKES, 682.4, direction, moneyness) == expected


def test_target_strike_edges():
    assert target_strike([], 100.0, Direction.CALL, "atm") is None
    assert target_strike([100.0, 105.0], 99.0, Direction.CALL, "itm1") is None
    assert target_strike([100.0, 105.0], 106.0, Direction.PUT, "itm1") is None
    assert target_strike([100.0, 105.0], 102.5, Direction.PUT, "atm") == 100.0  # tie: lower
    assert target_strike([100.0, 105.0], float("nan"), Direction.PUT, "atm") is None
    with pytest.raises(ValueError):
        target_strike([100.0], 100.0, Direction.CALL, "itm2")


@given(
    strikes=st.lists(st.integers(1, 2000), min_size=3, max_size=40, unique=True),
    spot=st.floats(1, 2000),
)
def test_itm_and_otm_sides(strikes, spot):
    strikes = [float(s) for s in strikes]
    atm = target_strike(strikes, spot, Direction.CALL, "atm")
    assert atm == target_strike(strikes, spot, Direction.PUT, "atm")
    assert all(abs(atm - spot) <= abs(s - spot) for s in strikes)
    call_itm = target_strike(strikes, spot, Direction.CALL, "itm1")
    put_itm = target_strike(strikes, spot, Direction.PUT, "itm1")
    if call_itm is not None:
        assert call_itm < atm and call_itm == target_strike(strikes, spot, Direction.PUT, "otm1")
    if put_itm is not None:
        assert put_itm > atm and put_itm == target_strike(strikes, spot, Direction.CALL, "otm1")


P = OptionParams()  # min_volume 100, spread ok <= max(10% of mid, 0.10), age <= 10 s
NAN = float("nan")


def q(strike=680.0, bid=2.00, ask=2.10, volume=500.0, age_s=1.0, right="C"):
    return OptionQuoteView(strike, right, bid, ask, volume, age_s)


@pytest.mark.parametrize(
    ("quote", "code"),
    [
        (q(right="X"), "bad_right"),
        (q(bid=NAN), "nan_quote"),
        (q(ask=float("inf")), "nan_quote"),
        (q(bid=0.0), "non_positive_quote"),
        (q(bid=-1.0), "non_positive_quote"),
        (q(bid=2.2, ask=2.1), "crossed"),
        (q(age_s=10.5), "stale"),
        (q(age_s=NAN), "stale"),
        (q(volume=99.0), "low_volume"),
        (q(volume=NAN), "low_volume"),
        (q(bid=2.00, ask=2.30), "wide_spread"),  # 0.30 > max(0.215, 0.10)
        (q(bid=0.40, ask=0.55), "wide_spread"),  # 0.15 > max(0.0475, 0.10)
    ],
)
def test_each_rejection_reason(quote, code):
    choice, rejections = choose_option([quote], quote.strike, P)
    assert choice is None
    assert [r.code for r in rejections] == [code]
    assert rejections[0].strike == quote.strike and rejections[0].right == quote.right
    assert rejections[0].reason.startswith(code + ": ")


def test_all_codes_listed():
    assert set(REJECTION_CODES) == {
        "bad_right", "nan_quote", "non_positive_quote", "crossed", "stale", "low_volume", "wide_spread",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("bid", "ask"),
    [
        (1.00, 1.10),  # spread == allowance 0.10 (float noise: 0.10000000000000009)
        (0.05, 0.15),  # cheap option: 200% of mid, but within the $0.10 allowance
        (5.00, 5.50),  # 0.50 <= 10% of mid 5.25
        (10.00, 11.00),  # 1.00 <= 10% of 10.50
        (2.00, 2.00),  # locked market
    ],
)
def test_spread_accepted_by_either_rule(bid, ask):
    choice, rejections = choose_option([q(bid=bid, ask=ask)], 680.0, P)
    assert rejections == [] and choice is not None
    assert choice.mid == pytest.approx((bid + ask) / 2)


def test_boundaries_are_inclusive():
    choice, rejections = choose_option([q(volume=100.0, age_s=10.0)], 680.0, P)
    assert choice is not None and rejections == []


def test_target_preferred_even_when_less_liquid():
    quotes = [q(679.0, volume=9000), q(680.0, volume=150), q(681.0, volume=5000)]
    choice, rejections = choose_option(quotes, 680.0, P)
    assert choice.strike == 680.0 and rejections == []
    assert choice.reasons[0].startswith("target strike 680 C")


def test_liquid_fallback_when_target_rejected():
    quotes = [
        q(678.0, volume=4000, bid=3.0, ask=3.6),  # wide
        q(679.0, volume=3000, bid=2.5, ask=2.6),
        q(680.0, volume=50),  # target, too thin
        q(681.0, volume=3000, bid=1.50, ask=1.55),  # ties 679 on volume, tighter spread
        q(682.0, volume=2000),
    ]
    choice, rejections = choose_option(quotes, 680.0, P)
    assert choice.strike == 681.0
    assert [(r.strike, r.code) for r in rejections] == [
        (678.0, "wide_spread"),
        (680.0, "low_volume"),
    ]
    assert choice.reasons[0].startswith("target 680 rejected (low_volume: volume 50 < 100)")
    assert choice.reasons[1].startswith("most liquid survivor 681 C")


def test_fallback_ties_go_to_nearest_target():
    quotes = [q(676.0), q(683.0), q(679.0)]  # same volume, same spread
    choice, _ = choose_option(quotes, 680.0, P)
    assert choice.strike == 679.0
    assert choice.reasons[0] == "target 680 not quoted"


def test_nothing_survives():
    quotes = [q(679.0, bid=NAN), q(680.0, volume=0), q(681.0, age_s=60)]
    choice, rejections = choose_option(quotes, 680.0, P)
    assert choice is None
    assert [r.code for r in rejections] == ["nan_quote", "low_volume", "stale"]
    assert choose_option([], 680.0, P) == (None, [])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"moneyness": "deep"},
        {"strike_count": 0},
        {"min_dte": -1},
        {"min_volume": -1},
        {"max_spread_pct": 0},
        {"spread_allowance": -0.01},
        {"max_quote_age_s": 0},
    ],
)
def test_bad_params_rejected(kwargs):
    with pytest.raises(ValueError):
        OptionParams(**kwargs)


@given(
    sizes=st.lists(st.integers(0, 15), max_size=12),
    budget=st.integers(-5, 120),
)
def test_warm_plan_warms_whole_sets_in_order_within_the_budget(sizes, budget):
    wanted = {f"S{i}": tuple(range(100 * i, 100 * i + n)) for i, n in enumerate(sizes)}
    plan = warm_plan(wanted, budget)
    assert sum(len(v) for v in plan.values()) <= max(0, budget)
    assert all(plan[s] == wanted[s] for s in plan)  # whole, never in part
    # Greedy in the caller's order: a set left out did not fit in what was left at its turn.
    left = max(0, budget)
    for symbol, items in wanted.items():
        if items and len(items) <= left:
            assert symbol in plan
            left -= len(items)
        else:
            assert symbol not in plan


def test_warm_plan_counts_a_repeated_contract_once():
    assert warm_plan({"SPY": ("a", "a", "b")}, 2) == {"SPY": ("a", "b")}


# The bisect versions against the definition they replaced (a full sort by distance per call).
# Strikes are prices in cents (a tie is then a real one, not two strikes 1e-217 apart whose
# distances round equal); bad values are mixed in because chains carry them.
def _by_definition_nearest(strikes, spot, count):
    clean = sorted({float(s) for s in strikes if math.isfinite(s) and s > 0})
    return sorted(sorted(clean, key=lambda s: (abs(s - spot), s))[:count])


def _by_definition_atm(strikes, spot):
    clean = sorted({float(s) for s in strikes if math.isfinite(s) and s > 0})
    return min(clean, key=lambda s: (abs(s - spot), s)) if clean else None


_strike_lists = st.lists(
    st.one_of(
        st.integers(1, 60).map(lambda k: k * 2.5),  # grids with exact ties at half steps
        st.integers(1, 50_000).map(lambda c: c / 100),
        st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -5.0]),
    ),
    max_size=40,
)


@given(
    strikes=_strike_lists,
    spot=st.one_of(st.integers(0, 160).map(lambda k: k * 1.25), st.floats(0.01, 600)),
    count=st.integers(0, 45),
    as_tuple=st.booleans(),
)
def test_nearest_and_atm_agree_with_the_definition(strikes, spot, count, as_tuple):
    given_strikes = tuple(strikes) if as_tuple else strikes
    assert nearest_strikes(given_strikes, spot, count) == _by_definition_nearest(
        strikes, spot, count
    )
    for direction in (Direction.CALL, Direction.PUT):
        assert target_strike(given_strikes, spot, direction, "atm") == _by_definition_atm(
            strikes, spot
        )


@given(
    sets=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 6)), max_size=10),
    budget=st.integers(-5, 120),
)
def test_warm_plan_adds_margins_only_with_what_every_core_left(sets, budget):
    """Cores first, whole, in order (exactly the plan of the cores alone); then margins, whole,
    in the same order, from what is left: a margin never takes a line a later core fits in."""
    wanted = {
        f"S{i}": tuple(range(100 * i, 100 * i + c + extra)) for i, (c, extra) in enumerate(sets)
    }
    core = {f"S{i}": c for i, (c, _) in enumerate(sets) if c}
    plan = warm_plan(wanted, budget, core)
    cores_only = warm_plan(
        {s: items[: core.get(s, len(items))] for s, items in wanted.items()}, budget
    )
    assert {s: v[: len(cores_only[s])] for s, v in plan.items()} == cores_only
    assert sum(len(v) for v in plan.values()) <= max(0, budget)
    left = max(0, budget) - sum(len(v) for v in cores_only.values())
    for symbol in cores_only:
        margin = wanted[symbol][len(cores_only[symbol]) :]
        if margin and len(margin) <= left:
            assert plan[symbol] == wanted[symbol]
            left -= len(margin)
        else:
            assert plan[symbol] == cores_only[symbol]


# -- an entry asks its target strike first (issue 17) -----------------------------------------

# Per candidate strike, what asking for its quote brings: a quote (good or bad) or nothing
# (not quoted, no line free, no such contract).
_views = st.builds(
    OptionQuoteView,
    strike=st.just(0.0),  # set per strike below
    right=st.sampled_from(["C", "C", "C", "P", "X"]),
    bid=st.one_of(st.floats(-1.0, 20.0), st.just(NAN), st.sampled_from([1.0, 2.0, 2.05])),
    ask=st.one_of(st.floats(-1.0, 20.0), st.just(NAN), st.sampled_from([1.05, 2.1, 2.15])),
    volume=st.one_of(st.floats(0.0, 5000.0), st.just(NAN), st.sampled_from([100.0, 500.0])),
    age_s=st.one_of(st.floats(0.0, 30.0), st.just(math.inf), st.just(NAN)),
)


@st.composite
def _entries(draw):
    """Candidate strikes (ascending, distinct), the target among them, and what each brings."""
    strikes = sorted(set(draw(st.lists(st.integers(600, 700).map(float), min_size=1, max_size=7))))
    target = draw(st.sampled_from(strikes))
    answers = {}
    for k in strikes:
        v = draw(st.one_of(st.none(), _views))
        answers[k] = (
            None if v is None else OptionQuoteView(k, v.right, v.bid, v.ask, v.volume, v.age_s)
        )
    return strikes, target, answers


def _run_asks(strikes, target, answers, params=P):
    """The entry's asks as OrderActor makes them; the answers gathered in the order they came."""
    answered, got, asks = {}, [], []
    while ask := strikes_to_ask(strikes, target, answered):
        assert not set(ask) & set(answered), "a strike asked twice"
        asks.append(ask)
        for k in ask:
            v = answers[k]
            answered[k] = v is not None and quote_rejection(v, params) is None
            if v is not None:
                got.append(v)
        assert len(asks) <= 2
    return asks, got


@given(_entries())
def test_an_entry_asks_its_target_alone_and_the_rest_only_when_it_fails(entry):
    strikes, target, answers = entry
    asks, _ = _run_asks(strikes, target, answers)
    assert asks[0] == (target,)
    v = answers[target]
    if v is not None and quote_rejection(v, P) is None:
        assert asks == [(target,)]  # one contract, one line: nothing else asked
    else:
        rest = tuple(k for k in strikes if k != target)
        assert asks == ([(target,), rest] if rest else [(target,)])


@given(_entries())
def test_asking_the_target_first_chooses_what_asking_every_strike_at_once_chose(entry):
    """The old entry asked every candidate together and took choose_option's pick; the new one
    asks fewer but picks the same contract from the same quotes, whichever way they fail."""
    strikes, target, answers = entry
    _, got = _run_asks(strikes, target, answers)
    everything = [v for v in answers.values() if v is not None]
    new, _ = choose_option(got, target, P)
    old, _ = choose_option(everything, target, P)
    if old is None:
        assert new is None
    else:
        assert new is not None
        assert (new.strike, new.right, new.bid, new.ask) == (
            old.strike,
            old.right,
            old.bid,
            old.ask,
        )


def test_strikes_to_ask_edges():
    strikes = [679.0, 680.0, 681.0]
    # float noise on the target still asks the listed strike, once
    assert strikes_to_ask(strikes, 680.0 + 1e-12, {}) == (680.0,)
    assert strikes_to_ask(strikes, 680.0, {680.0 + 1e-12: True}) == ()
    # a target that is not a candidate cannot win: every strike at once, as before
    assert strikes_to_ask(strikes, 685.0, {}) == (679.0, 680.0, 681.0)
    assert strikes_to_ask(strikes, 685.0, dict.fromkeys(strikes, False)) == ()
    # a neighbour that passed does not end the asking while the target is unasked
    assert strikes_to_ask(strikes, 680.0, {679.0: True}) == (680.0,)
    assert strikes_to_ask([], 680.0, {}) == ()


@given(
    elapsed=st.one_of(st.floats(-1.0, 60.0), st.just(NAN), st.just(math.inf)),
    wait=st.floats(0.01, 30.0),
    recheck=st.floats(0.01, 10.0),
)
def test_a_later_ask_never_takes_an_entry_past_what_one_ask_could_take(elapsed, wait, recheck):
    """A later ask waits a line up to `w`, its first quote up to `w` more, then rechecks: it
    must end within the bound a single ask always had, measured from the first ask."""
    w = later_ask_wait(elapsed, wait, recheck)
    budget = entry_quote_budget(wait, recheck)
    if w is None:
        assert not (budget - elapsed - recheck - 0.5) / 2 >= 0.25
        return
    assert 0.25 <= w <= wait
    assert elapsed + 2 * w + recheck <= budget - 0.5 + 1e-9


def test_later_ask_wait_with_the_default_settings():
    assert entry_quote_budget(4.0, 1.0) == 9.0
    assert later_ask_wait(1.3, 4.0, 1.0) == pytest.approx(3.1)  # a stale target seen at 1.3 s
    assert later_ask_wait(0.0, 4.0, 1.0) == pytest.approx(3.75)
    assert later_ask_wait(7.0, 4.0, 1.0) == pytest.approx(0.25)
    assert later_ask_wait(7.1, 4.0, 1.0) is None  # the target waited out its line: too late
    assert later_ask_wait(NAN, 4.0, 1.0) is None

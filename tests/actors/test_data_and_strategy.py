"""DataActor delivers each bar once and in order; StrategyActor trades only live bars."""

import math
from datetime import timedelta

import pytest
from support import SESSION_TIME, FakeRef

from actors import messages as m
from actors.data import DataActor
from actors.hours import MarketHours
from actors.pacing import gap_duration
from actors.strategy import StrategyActor
from sim.clock import ManualClock
from storage import JournalRepo, WhaleRepo
from strategies.bars import Bar

HOURS = MarketHours()


def bar(i: int, close: float = 680.0, start=SESSION_TIME - timedelta(minutes=60)) -> Bar:
    return Bar(start + timedelta(minutes=i), close, close + 0.2, close - 0.2, close, 1000)


@pytest.fixture
def data(make_settings, metrics):
    settings = make_settings(symbols=["SPY"], data={"resubscribe_after_s": 1e-6})
    clock = ManualClock(SESSION_TIME)
    strategy, risk, conn = FakeRef("strategy"), FakeRef("risk"), FakeRef("connection")
    actor = DataActor(
        settings, metrics, clock, HOURS, conn, {"SPY": strategy}, stale_listeners=(risk,)
    )
    return actor, strategy, risk, conn, clock


def test_backfill_then_stream_exactly_once_in_order(data, metrics):
    actor, strategy, _, conn, _ = data
    actor.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    # One stream per symbol (keepUpToDate holds a request open); hourly history is one request.
    assert [(a.bar_size, a.duration) for a in conn.of(m.StreamBars)] == [("1 min", "2 D")]
    assert [(a.bar_size, a.duration) for a in conn.of(m.FetchBars)] == [("1 hour", "30 D")]
    actor.on_BarsBackfilled(
        m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=tuple(bar(i) for i in range(5)))
    )
    actor.on_BarStreamed(m.BarStreamed(symbol="SPY", bar_size="1 min", bar=bar(5)))
    actor.on_BarStreamed(m.BarStreamed(symbol="SPY", bar_size="1 min", bar=bar(5)))  # duplicate
    actor.on_BarStreamed(m.BarStreamed(symbol="SPY", bar_size="1 min", bar=bar(3)))  # late
    actor.on_BarStreamed(
        m.BarStreamed(symbol="SPY", bar_size="1 min", bar=bar(6, close=math.nan))
    )  # bad
    actor.on_BarStreamed(m.BarStreamed(symbol="SPY", bar_size="1 min", bar=bar(7)))
    # 6 was bad, so 7 skips a minute: it waits while exactly the gap is fetched.
    minutes = lambda: [b for b in strategy.of(m.BarClosed) if b.bar_size == "1 min"]  # noqa: E731
    assert [b.bar.time for b in minutes()] == [bar(i).time for i in range(6)]
    assert conn.last(m.FetchBars).bar_size == "1 min"
    actor.on_BarStreamed(m.BarStreamed(symbol="SPY", bar_size="1 min", bar=bar(8)))  # held too
    actor.on_BarsBackfilled(m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=(bar(5), bar(6))))
    got = minutes()
    assert [b.bar.time for b in got] == [bar(i).time for i in range(9)]
    assert [b.live for b in got] == [False] * 5 + [True, False, True, True]
    skipped = {
        r: metrics.registry.get_sample_value(
            "optionsbot_bars_skipped_total", {"symbol": "SPY", "reason": r}
        )
        for r in ("duplicate", "out_of_order", "nan_price")
    }
    assert skipped == {"duplicate": 2, "out_of_order": 1, "nan_price": 1}  # the fill re-sent bar 5


def test_a_reconnect_asks_only_for_the_gap_and_drops_the_overlap(data):
    actor, strategy, _, conn, clock = data
    actor.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    actor.on_BarsBackfilled(
        m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=tuple(bar(i) for i in range(60)))
    )
    conn.told.clear()
    clock.advance(timedelta(minutes=10))
    actor.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    one_min = [a for a in conn.of(m.StreamBars) if a.bar_size == "1 min"][0]
    assert one_min.duration == "780 S"  # 11 minutes since the last bar's start, plus two bars
    assert one_min.since == bar(59).time  # the connection recomputes it if the request waits
    n = len(strategy.of(m.BarClosed))
    actor.on_BarsBackfilled(
        m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=tuple(bar(i) for i in range(55, 70)))
    )
    assert [b.bar.time for b in strategy.of(m.BarClosed)[n:]] == [
        bar(i).time for i in range(60, 70)
    ]


def test_gap_duration_first_time_and_long_gaps():
    assert gap_duration(None, SESSION_TIME, "1 min", "2 D") == "2 D"
    assert gap_duration(SESSION_TIME - timedelta(days=3), SESSION_TIME, "1 hour", "30 D") == "4 D"


def test_stale_only_while_the_market_is_open(data, metrics):
    actor, _, risk, conn, clock = data
    actor.on_BarsBackfilled(m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=(bar(59),)))
    actor.on_Tick(m.Tick(now=clock.now()))
    assert risk.of(m.SymbolStale) == []
    clock.advance(timedelta(minutes=6))
    actor.on_Tick(m.Tick(now=clock.now()))
    assert risk.last(m.SymbolStale).stale
    assert metrics.registry.get_sample_value("optionsbot_data_stale", {"symbol": "SPY"}) == 1
    # A quiet stream may be dead at the Gateway: it is asked for again, once per stale window.
    streams = lambda: [s for s in conn.of(m.StreamBars) if s.symbol == "SPY"]  # noqa: E731
    assert len(streams()) == 1
    clock.advance(timedelta(minutes=2))
    actor.on_Tick(m.Tick(now=clock.now()))
    assert len(streams()) == 1
    clock.advance(timedelta(minutes=4))
    actor.on_Tick(m.Tick(now=clock.now()))
    assert len(streams()) == 2
    actor.on_BarsBackfilled(
        m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=tuple(bar(i) for i in range(60, 72)))
    )  # the gap, up to now
    actor.on_Tick(m.Tick(now=clock.now()))
    assert not risk.last(m.SymbolStale).stale
    clock.set(SESSION_TIME.replace(hour=23))  # after the close: old bars are not stale
    actor.on_Tick(m.Tick(now=clock.now()))
    assert not risk.last(m.SymbolStale).stale


def test_the_open_is_not_stale_because_yesterday_ended(data):
    actor, _, risk, _, clock = data
    yesterday_close = HOURS.session_at(SESSION_TIME).open - timedelta(hours=17, minutes=31)
    actor.on_BarsBackfilled(
        m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=(bar(0, start=yesterday_close),))
    )
    clock.set(HOURS.session_at(SESSION_TIME).open + timedelta(minutes=2))
    actor.on_Tick(m.Tick(now=clock.now()))
    assert risk.of(m.SymbolStale) == []
    clock.advance(timedelta(minutes=6))  # still no bar of today: now it is stale
    actor.on_Tick(m.Tick(now=clock.now()))
    assert risk.last(m.SymbolStale).stale


@pytest.fixture
def strategy(make_settings, metrics):
    settings = make_settings(symbols=["SPY"], scalp={"cooldown_bars": 5})
    risk = FakeRef("risk")
    actor = StrategyActor("SPY", settings, metrics, risk)
    actor.on_start()
    yield actor, risk
    actor.on_stop()


def falling(n: int, start: float = 680.0):
    return [
        Bar(
            SESSION_TIME - timedelta(minutes=n - i),
            start - 0.05 * i,
            start - 0.05 * i + 0.1,
            start - 0.05 * i - 0.1,
            start - 0.05 * i - 0.02,
            1000,
        )
        for i in range(n)
    ]


def test_backfill_warms_up_but_never_trades(strategy):
    actor, risk = strategy
    for b in falling(40):
        actor.on_BarClosed(m.BarClosed(symbol="SPY", bar_size="1 min", bar=b, live=False))
    assert risk.told == []
    assert JournalRepo(actor.db).db["signals"].count == 0


def test_live_bars_journal_every_signal_and_respect_the_cooldown(strategy, metrics):
    actor, risk = strategy
    bars = falling(60)
    for b in bars[:40]:
        actor.on_BarClosed(m.BarClosed(symbol="SPY", bar_size="1 min", bar=b, live=False))
    signals = [
        actor.on_BarClosed(m.BarClosed(symbol="SPY", bar_size="1 min", bar=b, live=True))
        for b in bars[40:]
    ]
    assert all(s.direction and s.direction.value == "put" for s in signals)
    # Every bar says PUT; ideas go out only every cooldown_bars (5) bars.
    ideas = risk.of(m.TradeIdea)
    assert [i.signal.bar_time for i in ideas] == [bars[k].time for k in (40, 45, 50, 55)]
    assert JournalRepo(actor.db).db["signals"].count == 20
    assert metrics.registry.get_sample_value("optionsbot_cycles_total", {"symbol": "SPY"}) == 20


def hourly_sessions(n: int, breakout_volume: float = 10_000):
    """n quiet sessions of 60-minute bars around 100, then one bar closing far above the range."""
    out = []
    sessions = [x for x in HOURS.sessions if x.open < SESSION_TIME][-n - 1 :]
    for s in sessions[:-1]:
        t = s.open
        while t < s.close:
            out.append((Bar(t, 100, 101, 99, 100, 1000), False))
            t += timedelta(hours=1)
    last = sessions[-1].open
    out.append((Bar(last, 100, 106, 100, 105, breakout_volume), True))
    return out


def test_whale_debounce_is_persisted_only_for_live_signals(strategy):
    actor, risk = strategy
    bars = hourly_sessions(21)
    for b, _ in bars:  # all history, the breakout included
        actor.on_BarClosed(m.BarClosed(symbol="SPY", bar_size="1 hour", bar=b, live=False))
    assert WhaleRepo(actor.db).last_fired("SPY") is None
    assert actor.whale.last_fired is None
    breakout = bars[-1][0]
    live = Bar(breakout.time + timedelta(hours=1), 105, 107, 104, 106.5, 10_000)
    signal = actor.on_BarClosed(m.BarClosed(symbol="SPY", bar_size="1 hour", bar=live, live=True))
    assert signal.kind == "whale" and signal.direction.value == "call", signal.reasons
    assert WhaleRepo(actor.db).last_fired("SPY") == live.time
    assert risk.last(m.TradeIdea).signal.kind == "whale"


def test_a_gap_that_cannot_be_filled_is_counted_and_the_stream_goes_on(data, metrics):
    actor, strategy, _, conn, _ = data
    actor.on_BarsBackfilled(m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=(bar(0), bar(1))))
    actor.on_BarStreamed(m.BarStreamed(symbol="SPY", bar_size="1 min", bar=bar(5)))
    actor.on_StreamFailed(m.StreamFailed(symbol="SPY", bar_size="1 min", reason="timed out"))
    got = [b.bar.time for b in strategy.of(m.BarClosed) if b.bar_size == "1 min"]
    assert got == [bar(0).time, bar(1).time, bar(5).time]
    assert (
        metrics.registry.get_sample_value(
            "optionsbot_bars_skipped_total", {"symbol": "SPY", "reason": "gap_unfilled"}
        )
        == 3
    )


def test_history_that_misses_bars_counts_them_as_lost(data, metrics):
    actor, strategy, _, conn, _ = data
    actor.on_BarsBackfilled(m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=(bar(0), bar(1))))
    # A gap fill that came back short: bars 2..4 are not in it.
    actor.on_BarsBackfilled(m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=(bar(5), bar(6))))
    got = [b.bar.time for b in strategy.of(m.BarClosed) if b.bar_size == "1 min"]
    assert got == [bar(i).time for i in (0, 1, 5, 6)]
    assert (
        metrics.registry.get_sample_value(
            "optionsbot_bars_skipped_total", {"symbol": "SPY", "reason": "gap_unfilled"}
        )
        == 3
    )


def test_the_sessions_last_bar_is_asked_for_once_after_the_close(data):
    actor, strategy, _, conn, clock = data
    session = HOURS.session_at(SESSION_TIME)
    close = session.close
    before_last = close - timedelta(minutes=2)
    clock.set(close - timedelta(seconds=30))
    actor.on_BarsBackfilled(m.BarsBackfilled(symbol="SPY", bar_size="1 hour", bars=()))
    actor.on_BarsBackfilled(
        m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=(bar(0, start=before_last),))
    )
    clock.set(close + timedelta(seconds=30))  # the closing prints may still change it
    actor.on_Tick(m.Tick(now=clock.now()))
    assert conn.of(m.CloseLastBar) == []
    clock.set(close + timedelta(minutes=1))
    actor.on_Tick(m.Tick(now=clock.now()))
    actor.on_Tick(m.Tick(now=clock.now()))
    asked = conn.of(m.CloseLastBar)
    assert [(a.symbol, a.bar_time) for a in asked] == [("SPY", close - timedelta(minutes=1))]
    # The connection answers with the stream's forming bar, which is the day's last: delivered,
    # and it closes the day's last hourly bar too.
    last = bar(1, start=before_last)
    actor.on_BarStreamed(m.BarStreamed(symbol="SPY", bar_size="1 min", bar=last))
    got = strategy.of(m.BarClosed)
    assert got[-2].bar.time == last.time and got[-2].live
    assert got[-1].bar_size == "1 hour" and got[-1].bar.time == close - timedelta(hours=1)


def test_a_plain_answer_ends_before_the_bar_still_forming(data):
    actor, strategy, _, _, clock = data
    forming = SESSION_TIME - timedelta(seconds=20)  # started 20 s ago: not closed yet
    bars = (bar(58), bar(59), Bar(forming, 680, 681, 679, 680, 10))
    actor.on_BarsBackfilled(m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=bars))
    got = [b.bar.time for b in strategy.of(m.BarClosed) if b.bar_size == "1 min"]
    assert got == [bar(58).time, bar(59).time]


def test_a_bar_forming_when_the_answer_came_stays_out_though_read_after_its_end(data):
    """At 150x a few real milliseconds in a busy inbox are a simulated minute: the answer's
    last bar, forming when the Gateway sent it, had ended by the time DataActor read it, and
    was kept as history, partial (then the real-time stream's whole minute was dropped as a
    duplicate of it)."""
    actor, strategy, _, _, clock = data
    forming = SESSION_TIME - timedelta(seconds=20)
    bars = (bar(58), bar(59), Bar(forming, 680, 681, 679, 680, 10))
    clock.set(SESSION_TIME + timedelta(minutes=2))  # read late: the partial minute has ended
    actor.on_BarsBackfilled(
        m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=bars, as_of=SESSION_TIME)
    )
    got = [b.bar.time for b in strategy.of(m.BarClosed) if b.bar_size == "1 min"]
    assert got == [bar(58).time, bar(59).time]


def test_a_spike_is_held_then_dropped_and_a_gap_is_held_then_confirmed(data, metrics):
    actor, strategy, _, conn, _ = data
    actor.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    actor.on_BarsBackfilled(
        m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=tuple(bar(i) for i in range(20)))
    )
    fetches = len(conn.of(m.FetchBars))
    stream = lambda b: actor.on_BarStreamed(  # noqa: E731
        m.BarStreamed(symbol="SPY", bar_size="1 min", bar=b)
    )
    minutes = lambda: [b for b in strategy.of(m.BarClosed) if b.bar_size == "1 min"]  # noqa: E731
    stream(bar(20, close=6800.0))  # the 10x print
    assert len(minutes()) == 20, "a suspect bar reached the strategy"
    stream(bar(21))  # back to normal: the spike is dropped; no gap fill for the held minute
    assert [b.bar.time for b in minutes()][-1] == bar(21).time and minutes()[-1].live
    assert len(conn.of(m.FetchBars)) == fetches
    stream(bar(22, close=690.0))  # a genuine gap of 10 (50 x its ATR)
    stream(bar(23, close=690.1))  # ... that persists
    got = minutes()[-2:]
    assert [(b.bar.time, b.live) for b in got] == [(bar(22).time, False), (bar(23).time, True)]
    assert (
        metrics.registry.get_sample_value(
            "optionsbot_bars_skipped_total", {"symbol": "SPY", "reason": "spike"}
        )
        == 1
    )
    assert all(b.bar.close < 1000 for b in strategy.of(m.BarClosed))


def test_a_first_backfill_that_failed_is_asked_again_without_a_reconnect(data):
    """A request the Gateway dropped (a message-rate violation, a stalled HMDS) at start-up
    would leave the symbol without any data all day on a connection that never drops."""
    actor, strategy, _, conn, clock = data
    actor.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    actor.on_StreamFailed(m.StreamFailed(symbol="SPY", bar_size="1 min", reason="timed out"))
    actor.on_StreamFailed(m.StreamFailed(symbol="SPY", bar_size="1 hour", reason="timed out"))
    actor.on_Tick(m.Tick(now=clock.now()))
    assert len(conn.of(m.StreamBars)) == 2 and len(conn.of(m.FetchBars)) == 2
    assert conn.last(m.StreamBars).duration == "2 D"
    actor.on_Tick(m.Tick(now=clock.now()))  # asked once per failure, not on every tick
    assert len(conn.of(m.StreamBars)) == 2
    # Once it has its history, a failed stream is the stale check's to ask again, not this.
    actor.on_BarsBackfilled(m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=(bar(0),)))
    actor.on_StreamFailed(m.StreamFailed(symbol="SPY", bar_size="1 min", reason="timed out"))
    assert actor.feeds[("SPY", "1 min")].retry_mono is None


def test_minutes_streamed_before_the_history_wait_for_it_and_a_hole_is_filled(data):
    """A real-time stream can outlive its failed backfill: its minutes must not reach the
    strategy before the history (which would then be dropped as out of order)."""
    actor, strategy, _, conn, _ = data
    actor.on_BarStreamed(m.BarStreamed(symbol="SPY", bar_size="1 min", bar=bar(3)))
    assert strategy.of(m.BarClosed) == []
    actor.on_BarsBackfilled(m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=(bar(0), bar(1))))
    # bar(2) is missing: the held minute asks for exactly that gap and waits for it.
    assert conn.last(m.FetchBars).since == bar(1).time
    actor.on_BarsBackfilled(m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=(bar(2),)))
    got = [b for b in strategy.of(m.BarClosed) if b.bar_size == "1 min"]
    assert [b.bar.time for b in got] == [bar(i).time for i in range(4)]
    assert [b.live for b in got] == [False, False, False, True]


def test_a_held_live_bar_the_gap_fill_already_brought_is_counted_not_warned(data, metrics, caplog):
    """A gap fill reaches up to now, so the live bar held meanwhile is often in it: an overlap
    by design (it was a WARNING on every skipped minute of a real-time stream). A live bar seen
    twice outside a fill is still worth a line."""
    import logging

    actor, strategy, _, conn, _ = data
    actor.on_ConnectionChanged(m.ConnectionChanged(state="connected", may_trade=True, resync=True))
    actor.on_BarsBackfilled(
        m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=tuple(bar(i) for i in range(5)))
    )
    with caplog.at_level(logging.WARNING, logger="optionsbot.data"):
        actor.on_BarStreamed(m.BarStreamed(symbol="SPY", bar_size="1 min", bar=bar(6)))  # 5 lost
        assert conn.last(m.FetchBars).bar_size == "1 min"  # the gap is asked for; 6 is held
        actor.on_BarsBackfilled(
            m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=(bar(5), bar(6)))
        )
        assert not [r for r in caplog.records if "skipped: duplicate" in r.getMessage()]
        actor.on_BarStreamed(m.BarStreamed(symbol="SPY", bar_size="1 min", bar=bar(6)))
        assert [r for r in caplog.records if "skipped: duplicate" in r.getMessage()]
    minutes = [b.bar.time for b in strategy.of(m.BarClosed) if b.bar_size == "1 min"]
    assert minutes == [bar(i).time for i in range(7)]
    dup = {"symbol": "SPY", "reason": "duplicate"}
    assert metrics.registry.get_sample_value("optionsbot_bars_skipped_total", dup) == 2


def test_a_recent_history_gives_the_spot_before_the_first_live_bar(make_settings, metrics):
    """The last closed minute of the start-up history is the spot OrderActor warms and fetches
    the day's chain on, so the first live bar's entry waits for neither; a history that ends
    long ago (before the open, after a weekend) says nothing of today's spot."""
    settings = make_settings(symbols=["SPY"])
    clock = ManualClock(SESSION_TIME)
    orders = FakeRef("orders")
    actor = DataActor(
        settings, metrics, clock, HOURS, FakeRef("connection"), {}, spot_listeners=(orders,)
    )
    actor.on_BarsBackfilled(
        m.BarsBackfilled(
            symbol="SPY", bar_size="1 min", bars=tuple(bar(i, close=670.0 + i) for i in range(60))
        )
    )
    [spot] = orders.of(m.SpotMoved)
    assert (spot.symbol, spot.price, spot.time) == ("SPY", 729.0, bar(59).time)
    old = DataActor(
        settings, metrics, clock, HOURS, FakeRef("connection"), {}, spot_listeners=(orders,)
    )
    old.on_BarsBackfilled(
        m.BarsBackfilled(symbol="SPY", bar_size="1 min", bars=tuple(bar(i) for i in range(57)))
    )
    old.on_BarsBackfilled(m.BarsBackfilled(symbol="SPY", bar_size="1 hour", bars=()))
    assert len(orders.of(m.SpotMoved)) == 1  # 3 minutes old: not today's spot any more

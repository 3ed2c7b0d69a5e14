"""MessageGate: IB's message-rate rule at the client, orders before data, no time but the one given."""

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.pacing import BARS, DATA, ORDERS, MessageGate, message_class


def req(msg_id: int, n: int = 0) -> str:
    return f"{msg_id}\0{n}\0"


def send_all(gate: MessageGate, arrivals: list[tuple[float, int]], now: float) -> list[float]:
    """When each message offered (after each gap, so many) leaves, the gate drained on its own
    schedule as the loop drains it."""
    sent_at: list[float] = []
    for gap, count in arrivals:
        now += gap
        for _ in range(count):
            sent_at += [now] * len(gate.offer(req(20), now))
    while gate.wait() is not None:
        now += gate.wait() + 1e-6
        sent_at += [now] * len(gate.take(now))
    return sent_at


def test_messages_are_classed_by_their_id():
    assert message_class(req(3)) == ORDERS  # placeOrder
    assert message_class(req(4)) == ORDERS  # cancelOrder
    assert message_class(req(71)) == ORDERS  # startApi goes first
    assert message_class(req(49)) == ORDERS  # reqCurrentTime: the clock and the probe
    assert message_class(req(20)) == BARS  # reqHistoricalData: before quotes
    assert message_class(req(50)) == BARS  # reqRealTimeBars
    assert message_class(req(1)) == DATA  # reqMktData
    assert message_class("") == DATA


def test_a_burst_is_capped_and_the_rest_waits_its_turn():
    gate = MessageGate(rate=30, burst=10)
    sent = [m for i in range(25) for m in gate.offer(req(20, i), now=0.0)]
    assert len(sent) == 10
    assert gate.depth(BARS) == 15
    assert abs(gate.wait() - 1 / 30) < 1e-9
    # Idle time refills the bucket only up to the burst: never 15 at once.
    assert gate.take(1.0) == [req(20, i) for i in range(10, 20)]
    assert gate.take(1.0 + 5.5 / 30) == [req(20, i) for i in range(20, 25)]
    assert gate.wait() is None


def test_orders_jump_the_data_queue_and_keep_their_own_order():
    gate = MessageGate(rate=10, burst=2)
    gate.offer(req(20, 1), 0.0)
    gate.offer(req(20, 2), 0.0)
    assert gate.offer(req(20, 3), 0.0) == []  # the bucket is empty: data waits
    assert gate.offer(req(3, 1), 0.0) == []
    assert gate.offer(req(3, 2), 0.0) == []
    assert gate.take(0.1) == [req(3, 1)]
    assert gate.take(0.2) == [req(3, 2)]
    assert gate.take(0.35) == [req(20, 3)]


def test_clear_drops_what_was_queued_for_a_closed_connection():
    gate = MessageGate(rate=10, burst=1)
    gate.offer(req(20, 1), 0.0)
    gate.offer(req(20, 2), 0.0)
    gate.offer(req(3, 1), 0.0)
    assert gate.clear() == 2
    assert gate.offer(req(71), 0.0) == [req(71)]  # a new connection starts with a full bucket


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.floats(0, 0.2), st.integers(1, 30)),  # (gap before, messages offered)
        min_size=1,
        max_size=60,
    ),
    st.floats(0.5, 1.0),
)
def test_no_window_ever_carries_50_messages(arrivals, window):
    """Whatever the callers do, any `window` seconds (the Gateway's count, with a read stall
    of up to 1 - window seconds folded in) carry at most burst + rate * window messages."""
    gate = MessageGate(rate=30, burst=10)
    sent_at = send_all(gate, arrivals, 0.0)
    for i, t in enumerate(sent_at):
        in_window = sum(1 for u in sent_at[i:] if u - t < window + 0.2)
        assert in_window <= 10 + 30 * (window + 0.2) + 1e-6 < 50


def test_bars_jump_the_quote_queue_but_not_the_orders():
    gate = MessageGate(rate=10, burst=1)
    gate.offer(req(1, 1), 0.0)  # a quote goes: the bucket is empty now
    for msg in (req(1, 2), req(9, 3), req(20, 4), req(3, 5), req(50, 6)):
        assert gate.offer(msg, 0.0) == []
    order = [m for t in range(1, 12) for m in gate.take(t / 10 + 1e-9)]
    assert order == [req(3, 5), req(20, 4), req(50, 6), req(1, 2), req(9, 3)]


@settings(max_examples=200)
@given(
    st.floats(0, 5),  # when IB said error 100
    st.lists(st.tuples(st.floats(0, 0.3), st.integers(1, 20)), min_size=1, max_size=80),
)
def test_after_error_100_a_second_of_silence_then_half_the_rate(violation_at, arrivals):
    """Error 100 means the Gateway counted more than the gate meant to send: its window must
    empty (nothing for a second) and the rest go at half the rate, one at a time, until the
    back-off ends; then the usual pace again."""
    gate = MessageGate(rate=30, burst=10)
    gate.take(0.0)
    gate.back_off(violation_at, seconds=20.0)
    sent_at = send_all(gate, arrivals, violation_at)
    assert not [t for t in sent_at if violation_at <= t < violation_at + 1.0 - 1e-6]
    slow = [t for t in sent_at if t < violation_at + 20.0]
    for i, t in enumerate(slow):
        in_second = sum(1 for u in slow[i:] if u - t < 1.0)
        assert in_second <= 1 + 15 + 1e-6
    assert len(sent_at) == sum(c for _, c in arrivals)  # nothing lost, only later


def test_the_back_off_ends_and_a_new_session_starts_without_it():
    gate = MessageGate(rate=30, burst=10)
    gate.back_off(0.0, seconds=5.0)
    assert [gate.offer(req(20, i), 0.5) for i in range(2)] == [[], []]
    assert gate.take(6.0) == [req(20, 0), req(20, 1)]  # after the back-off: the usual burst
    gate.back_off(10.0, seconds=60.0)
    gate.clear()
    assert len([m for i in range(12) for m in gate.offer(req(20, i), 10.0)]) == 10


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.floats(0, 0.3), st.integers(0, 40)), min_size=1, max_size=20),
    st.one_of(st.none(), st.floats(0, 3)),
)
def test_the_backlog_says_when_a_message_offered_now_leaves(arrivals, violation_at):
    """A request's timeout is extended by the gate's backlog: the estimate must not be short,
    or a request waiting on us is blamed on the Gateway (nor much long: a real timeout waits)."""
    gate = MessageGate(rate=30, burst=10)
    now = 0.0
    gate.take(now)
    if violation_at is not None:
        gate.back_off(violation_at, seconds=2.0)
    for gap, count in arrivals:
        now += gap
        for _ in range(count):
            gate.offer(req(20), now)
    start = now
    promised = now + gate.backlog_s(now)
    mine = req(20, -1)
    left = now if mine in gate.offer(mine, now) else None
    while left is None:
        now += gate.wait() + 1e-6
        if mine in gate.take(now):
            left = now
    assert left <= promised + 1e-3
    # Long only by a back-off ending meanwhile (reckoned at its half rate to the end).
    wait = promised - start
    assert left - start >= (wait / 2 if violation_at is not None else wait) - 1e-3


@settings(max_examples=100)
@given(
    st.lists(st.tuples(st.floats(0, 0.3), st.integers(1, 30)), min_size=1, max_size=60),
    st.booleans(),
)
def test_after_an_error_100_the_rest_of_the_run_keeps_two_thirds_of_the_rate(arrivals, reconnect):
    """A Gateway that once read late enough to count 50 will again: past the back-off, and
    after a reconnect too, any second carries at most burst + 2/3 of the rate (45 + 4 becomes
    30 + 4, which forgives a read half a second late)."""
    gate = MessageGate(rate=45, burst=4)
    gate.back_off(0.0, seconds=5.0)
    if reconnect:
        gate.clear()
    sent_at = send_all(gate, arrivals, 6.0)
    for i, t in enumerate(sent_at):
        in_second = sum(1 for u in sent_at[i:] if u - t < 1.0)
        assert in_second <= 4 + 30 + 1e-6
    assert 4 + 30 * 1.5 < 50

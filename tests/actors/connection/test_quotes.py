"""Quote lines and snapshots, on an event loop of the test's own, with a fake IB client."""

import asyncio
import math
from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import SESSION_TIME, FakeRef

from actors import messages as m
from actors.connection.session import Session
from sim.clock import ManualClock


class QuoteIB:
    def __init__(self):
        self.subscribed = []

    def isConnected(self):  # noqa: N802 - ib_async's name
        return True

    def reqMktData(self, contract, *args):  # noqa: N802
        self.subscribed.append(contract.conId)


def test_a_watch_waiting_for_a_line_is_dropped_when_unwatched(make_settings, metrics):
    """All quote lines are taken; a watch waits; its unwatch comes first: when a line frees,
    the watch gives it back instead of subscribing quotes nobody wants."""
    session = Session(make_settings(), metrics, None, actor=FakeRef("actor"))
    session.ib = QuoteIB()
    quotes = session.quotes
    contract = m.OptionContract("SPY", "20261123", 680, "C", con_id=4242)

    async def run():
        quotes.lines = asyncio.Semaphore(1)
        await quotes.lines.acquire()  # every line in use
        waiting = asyncio.create_task(quotes.watch(m.WatchQuotes(contract=contract, reply_to=None)))
        await asyncio.sleep(0.01)
        await quotes.stop_watching(contract.con_id)
        quotes.lines.release()  # a line frees
        await waiting
        return quotes.lines.locked()

    assert asyncio.run(run()) is False  # the line was given back
    assert session.ib.subscribed == [] and quotes.quote_lines == {}


class ClosingIB(QuoteIB):
    """The socket closes before the brief line goes out: ib_async's Client.send raises
    ConnectionError("Not connected") for any request on a closed socket."""

    async def qualifyContractsAsync(self, *contracts):  # noqa: N802
        return [
            SimpleNamespace(
                conId=4242, localSymbol="SPY C680", tradingClass="SPY", multiplier="100"
            )
            for _ in contracts
        ]

    async def reqTickersAsync(self, *contracts):  # noqa: N802
        q = contracts[0]
        return [SimpleNamespace(contract=q, bid=2.40, ask=2.46, last=2.43, volume=900.0, ticks=[])]

    def reqMktData(self, contract, *args):  # noqa: N802
        raise ConnectionError("Not connected")


def test_a_quote_fetch_answers_when_the_socket_closes_during_its_brief_watch(
    make_settings, metrics
):
    """The entry waits on this answer and RiskActor holds the symbol (and an open-position slot)
    until it comes: a request that dies without one blocks the symbol for the rest of the run."""
    session = Session(make_settings(), metrics, ManualClock(SESSION_TIME), actor=FakeRef("actor"))
    session.ib = ClosingIB()
    quotes = session.quotes
    reply = FakeRef("orders")
    contract = m.OptionContract("SPY", "20261123", 680, "C")

    async def run():
        quotes.lines = asyncio.Semaphore(1)
        await quotes.fetch(
            m.FetchQuotes(contracts=(contract,), reply_to=reply, wait_s=0.01, tag="SPY")
        )
        return quotes.lines.locked()

    assert asyncio.run(run()) is False  # the line taken for the quote was given back
    answer = reply.last(m.QuotesFetched)
    assert answer.tag == "SPY" and answer.quotes == ()
    assert [why for _, why in answer.missing] == [
        "no quote (NaN): no entitlement, market closed, or no market"
    ]


class WarmIB:
    """Qualifies anything, opens lines as real ib_async Tickers, counts every request. With
    `answers`, a line brings its opening bid and ask at once and a change a moment later."""

    def __init__(self, answers=False, change_after=0.002):
        self.answers, self.change_after = answers, change_after
        self.qualified: list = []
        self.lines: list = []
        self.snapshots = 0
        self.cancelled: list = []

    def isConnected(self):  # noqa: N802 - ib_async's name
        return True

    async def qualifyContractsAsync(self, *contracts):  # noqa: N802
        for c in contracts:
            c.conId = int(c.strike * 10) + (1 if c.right == "C" else 2)
        self.qualified += contracts
        return list(contracts)

    def reqMktData(self, contract, *args):  # noqa: N802
        from ib_async import Ticker

        t = Ticker(contract=contract)
        self.lines.append(t)
        if self.answers:
            loop = asyncio.get_running_loop()
            t.volume = 500.0
            loop.call_soon(_tick, t, 2.0, 2.1)
            loop.call_later(self.change_after, _tick, t, 2.0, 2.15)
        return t

    def cancelMktData(self, contract):  # noqa: N802
        self.cancelled.append(contract.conId)

    async def reqTickersAsync(self, *contracts):  # noqa: N802
        from ib_async import Ticker

        self.snapshots += 1
        return [Ticker(contract=c, bid=2.0, ask=2.1, volume=500) for c in contracts]


def _tick(ticker, bid, ask):
    from ib_async import TickData

    ticker.bid, ticker.ask = bid, ask
    ticker.ticks = [
        TickData(SESSION_TIME, 1, bid, 10),
        TickData(SESSION_TIME, 2, ask, 10),
    ]
    ticker.updateEvent.emit(ticker)


def _session(make_settings, metrics, **settings):
    session = Session(make_settings(**settings), metrics, None, actor=FakeRef("actor"))
    session.ib = WarmIB()
    session.clock = ManualClock(SESSION_TIME)
    return session


def _contracts(strikes, right="C"):
    return tuple(
        m.OptionContract("SPY", "20261123", k, right, trading_class="SPY") for k in strikes
    )


def test_an_entry_on_warm_lines_sends_no_request_at_all(make_settings, metrics):
    """The strikes in play stream before the bar closes: the entry's quotes are answered from
    the lines, with no contract details, no snapshot and no recheck line."""
    session = _session(make_settings, metrics)
    quotes, ib = session.quotes, session.ib
    warm = _contracts([679.0, 680.0, 681.0]) + _contracts([679.0, 680.0, 681.0], "P")

    async def run():
        await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=warm))
        assert len(ib.lines) == 6 and len(ib.qualified) == 6
        for t in ib.lines:
            _tick(t, 2.0, 2.1)  # the line's opening values: what IB held
            session.clock.advance(timedelta(seconds=1))
            _tick(t, 2.05, 2.15)  # a change, seen as it happened
        before = (len(ib.qualified), ib.snapshots, len(ib.lines))
        reply = FakeRef()
        await quotes.fetch(m.FetchQuotes(contracts=warm[:3], reply_to=reply, tag="SPY"))
        assert (len(ib.qualified), ib.snapshots, len(ib.lines)) == before
        got = reply.last(m.QuotesFetched)
        assert [q.contract.strike for q in got.quotes] == [679.0, 680.0, 681.0]
        assert all(q.age_known and q.bid == 2.05 for q in got.quotes)
        assert metrics.quotes_from_lines._value.get() == 1

    asyncio.run(run())


def test_cold_quotes_qualify_once_a_day_and_a_line_not_settled_is_not_trusted(
    make_settings, metrics
):
    session = _session(make_settings, metrics, options={"quote_recheck_s": 0.01})
    session.ib = ib = WarmIB(answers=True)
    quotes = session.quotes
    cold = _contracts([690.0, 691.0])

    async def run():
        for _ in range(2):
            await quotes.fetch(m.FetchQuotes(contracts=cold, reply_to=FakeRef(), tag="SPY"))
        assert len(ib.qualified) == 2  # contract details asked once
        # A brief line per contract and fetch, each closed before the answer; no snapshot.
        assert ib.snapshots == 0 and len(ib.lines) == 4
        assert sorted(ib.cancelled) == [6901, 6901, 6911, 6911]
        assert quotes.lines._value == session.settings.broker.max_market_data_lines
        # A warm line that has brought no bid and ask yet is not read: it is closed (a second
        # request on a contract with a line would make ib_async forget the line's request id)
        # and the contract asked on a brief line of its own.
        ib.answers = False
        await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=cold))
        ib.answers = True
        assert len(ib.qualified) == 2  # qualified already today
        cancelled = len(ib.cancelled)
        reply = FakeRef()
        await quotes.fetch(m.FetchQuotes(contracts=cold, reply_to=reply, tag="SPY"))
        assert ib.snapshots == 0 and len(reply.last(m.QuotesFetched).quotes) == 2
        assert ib.cancelled[cancelled:] == [6901, 6911]  # the two warm lines closed
        # The brief lines that replaced them are the warm lines now: kept open, not reopened.
        assert len(quotes.warm_lines) == 2 and len(ib.lines) == 8
        assert all(len(start.seen) == 2 for _, start, _ in quotes.warm_lines.values())
        assert quotes.lines._value == session.settings.broker.max_market_data_lines - 2
        # The next trading day asks again: an option's definition is only good for its day.
        await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=()))
        session.clock.advance(timedelta(days=3))
        await quotes.fetch(m.FetchQuotes(contracts=cold[:1], reply_to=FakeRef(), tag="SPY"))
        assert len(ib.qualified) == 3

    asyncio.run(run())


def test_warm_lines_stay_within_what_ibs_line_limit_leaves(make_settings, metrics):
    """Lines for positions and an entry's recheck are kept free; a set that does not fit whole
    is not warmed at all, and a symbol's smaller set frees lines for another's."""
    session = _session(make_settings, metrics, broker={"max_market_data_lines": 20})
    quotes, ib = session.quotes, session.ib
    budget = quotes.warm_budget()
    assert budget == 20 - 5 - 4  # strike_count 5 (a recheck), 4 spare, no position, no rt
    spy = _contracts([670.0 + k for k in range(budget)])
    qqq = tuple(
        m.OptionContract("QQQ", "20261123", 500.0 + k, "C", trading_class="QQQ") for k in range(2)
    )

    async def run():
        await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=spy))
        await quotes.warm(m.WarmQuotes(symbol="QQQ", contracts=qqq))
        assert len(quotes.warm_lines) == budget  # QQQ did not fit
        await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=spy[:3]))
        assert {k[0] for k in quotes.warm_lines} == {"SPY", "QQQ"} and len(quotes.warm_lines) == 5
        assert len(ib.cancelled) == budget - 3

    asyncio.run(run())


class ExpiryIB(WarmIB):
    """Lists, for a partly specified option (no strike, no right), every contract of its
    expiry, as IB's contract lookup does; 682 is in the chain's union but not this expiry."""

    STRIKES = (679.0, 680.0, 681.0, 683.0)

    def __init__(self, answers=True):
        super().__init__(answers)
        self.details_asked: list = []

    async def reqTickersAsync(self, *contracts):  # noqa: N802
        tickers = await super().reqTickersAsync(*contracts)
        for t in tickers:
            t.bid, t.ask, t.volume = 2.0, 2.1, 500.0  # Ticker's constructor leaves them NaN
        return tickers

    async def reqContractDetailsAsync(self, contract):  # noqa: N802
        from ib_async import ContractDetails, Option

        self.details_asked.append(contract)
        assert contract.strike == 0 and contract.right == ""  # the whole expiry at once
        return [
            ContractDetails(
                contract=Option(
                    contract.symbol,
                    contract.lastTradeDateOrContractMonth,
                    k,
                    right,
                    "SMART",
                    conId=int(k * 10) + (1 if right == "C" else 2),
                    tradingClass=contract.tradingClass,
                    multiplier="100",
                    localSymbol=f"SPY {k:g}{right}",
                )
            )
            for k in self.STRIKES
            for right in ("C", "P")
        ]


def test_a_symbol_without_warm_lines_waits_for_its_quotes_alone(make_settings, metrics):
    """Lines are too few to warm SPY's set; its expiry is still qualified, in one request,
    before its bar closes: the entry then asks its quotes only, no contract details, and a
    strike the expiry does not list is known missing without a request for an error 200."""
    session = _session(make_settings, metrics, broker={"max_market_data_lines": 9})
    session.ib = ExpiryIB()
    quotes, ib = session.quotes, session.ib
    assert quotes.warm_budget() == 0  # 5 for a recheck, 4 spare
    warm = _contracts([680.0, 681.0, 679.0]) + _contracts([680.0, 681.0, 679.0], "P")
    entry = _contracts([679.0, 680.0, 681.0, 682.0, 683.0])  # the spot has moved since

    async def run():
        await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=warm))
        await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=warm[:2]))  # asked once a day
        assert len(ib.details_asked) == 1 and ib.lines == [] and ib.qualified == []
        reply = FakeRef()
        await quotes.fetch(m.FetchQuotes(contracts=entry, reply_to=reply, tag="SPY", wait_s=0.01))
        assert ib.qualified == [] and len(ib.details_asked) == 1 and ib.snapshots == 0
        got = reply.last(m.QuotesFetched)
        assert [q.contract.strike for q in got.quotes] == [679.0, 680.0, 681.0, 683.0]
        assert [q.contract.con_id for q in got.quotes] == [6791, 6801, 6811, 6831]
        assert [(c.strike, why) for c, why in got.missing] == [(682.0, "no such contract (200)")]
        # The next trading day asks again: the day's list is only good for its day.
        session.clock.advance(timedelta(days=3))
        await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=warm))
        assert len(ib.details_asked) == 2

    asyncio.run(run())


def test_an_entry_waits_for_its_expiry_being_qualified_rather_than_ask_again(
    make_settings, metrics
):
    """The bar closes while the warm set's expiry is being qualified (the day's first bar):
    the entry waits for that answer instead of sending contract details of its own."""
    session = _session(make_settings, metrics, broker={"max_market_data_lines": 9})
    session.ib = ExpiryIB()
    quotes, ib = session.quotes, session.ib
    gate = asyncio.Event()
    listing = ib.reqContractDetailsAsync

    async def slow(contract):
        await gate.wait()
        return await listing(contract)

    ib.reqContractDetailsAsync = slow
    warm = _contracts([680.0, 681.0])

    async def run():
        warming = asyncio.create_task(quotes.warm(m.WarmQuotes(symbol="SPY", contracts=warm)))
        await asyncio.sleep(0)
        reply = FakeRef()
        fetching = asyncio.create_task(
            quotes.fetch(m.FetchQuotes(contracts=warm, reply_to=reply, tag="SPY", wait_s=0.01))
        )
        await asyncio.sleep(0.01)
        assert not fetching.done()
        gate.set()
        await asyncio.gather(warming, fetching)
        assert ib.qualified == [] and len(ib.details_asked) == 1
        assert [q.contract.con_id for q in reply.last(m.QuotesFetched).quotes] == [6801, 6811]

    asyncio.run(run())


class FailingExpiryIB(ExpiryIB):
    async def reqContractDetailsAsync(self, contract):  # noqa: N802
        raise TimeoutError


def test_an_expiry_that_cannot_be_listed_leaves_contracts_qualified_one_by_one(
    make_settings, metrics
):
    session = _session(make_settings, metrics, options={"quote_recheck_s": 0.01})
    session.ib = FailingExpiryIB()
    quotes, ib = session.quotes, session.ib
    cold = _contracts([690.0, 691.0])

    async def run():
        await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=cold))
        assert len(ib.qualified) == 2 and quotes.expiry_loads == {}  # asked again next time
        reply = FakeRef()
        await quotes.fetch(m.FetchQuotes(contracts=cold, reply_to=reply, tag="SPY", wait_s=0.01))
        assert len(reply.last(m.QuotesFetched).quotes) == 2 and len(ib.qualified) == 2

    asyncio.run(run())


_rows = st.lists(
    st.tuples(
        st.sampled_from(["SPY", "QQQ"]),
        st.sampled_from(["20261123", "20261130", "20261123 16:00 US/Eastern"]),
        st.one_of(
            st.floats(min_value=0.5, max_value=2000, allow_nan=False).map(lambda x: round(x, 1)),
            st.sampled_from([0.0, -5.0, math.nan, math.inf]),
        ),
        st.sampled_from(["C", "P", "", "CALL"]),
        st.sampled_from(["SPY", "SPYW", "QQQ"]),
        st.sampled_from(["OPT", "FOP", "STK"]),
        st.integers(min_value=0, max_value=3),  # 0: no conId
    ),
    max_size=30,
)


@given(_rows)
def test_listed_contracts_keeps_exactly_what_an_entry_of_that_expiry_would_name(rows):
    """The cache is keyed as an entry names its contracts (contract_key of the OptionContract
    candidates() builds): a key built any other way would leave every strike unqualified, or,
    once the expiry counts as listed, known missing. Whatever else IB sends is left out."""
    from ib_async import ContractDetails, Option

    from actors.connection.quotes import contract_key, listed_contracts

    asked = m.OptionContract("SPY", "20261123", 0.0, "", trading_class="SPY")
    details = []
    for i, (sym, exp, strike, right, tc, sec, con) in enumerate(rows):
        c = Option(sym, exp, strike, right, "SMART", tradingClass=tc, conId=con and 1000 + i)
        c.secType = sec
        details.append(ContractDetails(contract=c))
    found = listed_contracts(details, asked)
    expected = {}
    for d in details:
        c = d.contract
        if (
            c.conId
            and c.secType == "OPT"
            and c.symbol == "SPY"
            and c.lastTradeDateOrContractMonth[:8] == "20261123"
            and c.tradingClass == "SPY"
            and c.right in ("C", "P")
            and math.isfinite(c.strike)
            and c.strike > 0
        ):
            name = m.OptionContract(
                "SPY", "20261123", c.strike, c.right, trading_class="SPY", multiplier=100
            )
            expected.setdefault(contract_key(name), c)
    assert found == expected


class WideExpiryIB(ExpiryIB):
    STRIKES = (500.0, 679.0, 680.0, 681.0, 800.0)


def test_an_expiry_list_is_kept_near_the_strikes_in_play_only(make_settings, metrics):
    """A chain of hundreds of strikes is not kept whole (memory on a Pi): strikes beyond 10%
    of those in play are qualified on their own if ever asked, never called missing, while a
    strike within the band that the list lacks is known missing without a request."""
    session = _session(make_settings, metrics, broker={"max_market_data_lines": 9})
    session.ib = WideExpiryIB()
    quotes, ib = session.quotes, session.ib

    async def run():
        await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=_contracts([680.0, 681.0])))
        assert sorted({k[2] for k in quotes.qualified}) == [679.0, 680.0, 681.0]
        got = await quotes.qualify(_contracts([800.0, 690.0, 500.0]))
        assert [c.strike for c in ib.qualified] == [800.0, 500.0]  # asked one by one
        assert got[1] is None  # 690 is within the band and not listed: no request for it

    asyncio.run(run())


def test_a_margin_is_warmed_only_with_the_lines_every_core_leaves(make_settings, metrics):
    """SPY's core and margin, then QQQ's core: QQQ's core takes the lines SPY's margin held."""
    session = _session(make_settings, metrics, broker={"max_market_data_lines": 9 + 8})
    quotes = session.quotes
    assert quotes.warm_budget() == 8
    spy = _contracts([680.0, 681.0, 679.0, 682.0, 678.0, 683.0])
    qqq = tuple(
        m.OptionContract("QQQ", "20261123", 500.0 + k, "C", trading_class="QQQ") for k in range(3)
    )

    async def run():
        await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=spy, core=3))
        assert {k[2] for k in quotes.warm_lines} == {678.0, 679.0, 680.0, 681.0, 682.0, 683.0}
        await quotes.warm(m.WarmQuotes(symbol="QQQ", contracts=qqq, core=3))
        assert sorted((k[0], k[2]) for k in quotes.warm_lines) == [
            ("QQQ", 500.0),
            ("QQQ", 501.0),
            ("QQQ", 502.0),
            ("SPY", 679.0),
            ("SPY", 680.0),
            ("SPY", 681.0),
        ]

    asyncio.run(run())


class CountingIB(WarmIB):
    """WarmIB that answers its lines and counts how many are open at once."""

    def __init__(self, answers=True, frozen=False):
        super().__init__(answers and not frozen)
        self.frozen = frozen
        self.open: set = set()
        self.most = 0

    def reqMktData(self, contract, *args):  # noqa: N802
        t = super().reqMktData(contract, *args)
        if self.frozen:  # the opening values, then never a change
            t.volume = 500.0
            asyncio.get_running_loop().call_soon(_tick, t, 2.0, 2.1)
        self.open.add(contract.conId)
        self.most = max(self.most, len(self.open))
        return t

    def cancelMktData(self, contract):  # noqa: N802
        super().cancelMktData(contract)
        self.open.discard(contract.conId)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=25)
@given(lines=st.integers(1, 4), count=st.integers(1, 6))
def test_cold_quotes_come_from_brief_lines_within_the_line_limit(
    make_settings, metrics, lines, count
):
    """No snapshot: each cold contract's first bid/ask and the change that proves it fresh come
    on one line of its own, closed before the answer; never more lines than are free, each
    contract waiting its turn (IB answers a 101st line with error 101)."""
    session = _session(make_settings, metrics, options={"quote_recheck_s": 0.5})
    session.ib = ib = CountingIB()
    quotes = session.quotes
    cold = _contracts([690.0 + k for k in range(count)])

    async def run():
        quotes.lines = asyncio.Semaphore(lines)
        reply = FakeRef()
        await quotes.fetch(m.FetchQuotes(contracts=cold, reply_to=reply, tag="SPY", wait_s=2.0))
        got = reply.last(m.QuotesFetched)
        assert ib.snapshots == 0 and len(ib.lines) == count and ib.open == set()
        assert ib.most <= lines and quotes.lines._value == lines
        assert [q.contract.strike for q in got.quotes] == [c.strike for c in cold]
        assert all(q.age_known and q.ask == 2.15 for q in got.quotes), got

    asyncio.run(run())


def test_a_cold_quote_without_a_free_line_is_missing_not_snapshotted(make_settings, metrics):
    """Every line is taken (positions, warm sets): the contract is reported missing with the
    reason, after the entry's wait, rather than traded on a look that nothing can prove fresh."""
    session = _session(make_settings, metrics)
    session.ib = ib = CountingIB()
    quotes = session.quotes

    async def run():
        quotes.lines = asyncio.Semaphore(0)
        reply = FakeRef()
        fetch = m.FetchQuotes(contracts=_contracts([690.0]), reply_to=reply, tag="SPY", wait_s=0.05)
        await quotes.fetch(fetch)
        got = reply.last(m.QuotesFetched)
        assert ib.snapshots == 0 and ib.lines == [] and got.quotes == ()
        assert [why for _, why in got.missing] == ["no market data line free within 0.05s"]

    asyncio.run(run())


def test_a_frozen_quote_on_a_brief_line_stays_unproven_and_the_line_closes(make_settings, metrics):
    """A line's opening values are whatever IB holds, frozen or not: without a change within
    the recheck the quote goes back with its age unknown (the entry's filter calls it stale)."""
    session = _session(make_settings, metrics, options={"quote_recheck_s": 0.05})
    session.ib = ib = CountingIB(frozen=True)
    quotes = session.quotes

    async def run():
        reply = FakeRef()
        await quotes.fetch(m.FetchQuotes(contracts=_contracts([690.0]), reply_to=reply, tag="SPY"))
        [q] = reply.last(m.QuotesFetched).quotes
        assert not q.age_known and (q.bid, q.ask) == (2.0, 2.1)
        assert ib.snapshots == 0 and ib.open == set() and ib.cancelled == [6901]

    asyncio.run(run())


def test_a_warm_plan_that_wants_a_contract_on_a_brief_line_keeps_that_line(make_settings, metrics):
    """The spot moves while an entry's brief line is open on a strike that is now in play: the
    warm plan opens no second line on it (ib_async keeps one request id per contract, so one
    of the two could never be cancelled at the Gateway: a line lost until the socket closes);
    the brief line stays open as the warm line when the entry is done with it."""
    session = _session(make_settings, metrics, options={"quote_recheck_s": 0.5})
    session.ib = ib = WarmIB(answers=True, change_after=0.1)
    quotes = session.quotes
    cold = _contracts([690.0])
    free = session.settings.broker.max_market_data_lines

    async def run():
        reply = FakeRef()
        fetching = asyncio.create_task(
            quotes.fetch(m.FetchQuotes(contracts=cold, reply_to=reply, tag="SPY", wait_s=1.0))
        )
        while not ib.lines:
            await asyncio.sleep(0.001)
        await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=cold))
        assert not fetching.done() and len(ib.lines) == 1
        await fetching
        [q] = reply.last(m.QuotesFetched).quotes
        assert q.age_known and q.ask == 2.15
        assert (
            len(ib.lines) == 1
            and ib.cancelled == []
            and list(quotes.warm_lines) == [("SPY", "20261123", 690.0, "C", "SPY")]
        )
        assert quotes.lines._value == free - 1
        await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=()))
        assert ib.cancelled == [6901] and quotes.lines._value == free

    asyncio.run(run())


def test_a_contract_on_a_positions_line_is_read_from_it(make_settings, metrics):
    """A position streams the very contract an entry asks about: its line answers (a second
    request on it would make ib_async forget the line's request id: a line lost for good)."""
    from ib_async import Option, Ticker

    session = _session(make_settings, metrics)
    ib, quotes = session.ib, session.quotes
    q = Option("SPY", "20261123", 690.0, "C", "SMART", conId=6901, tradingClass="SPY")
    line = Ticker(contract=q)
    line.bid, line.ask, line.volume = 2.0, 2.1, 500.0  # the constructor leaves them NaN
    quotes.quote_lines[6901] = line
    quotes.qualified_day = session.clock.now().date()
    quotes.qualified[("SPY", "20261123", 690.0, "C", "SPY")] = q
    quotes._mark(6901, 2.0, 2.1, session.clock.now(), watched=True)
    quotes._mark(6901, 2.0, 2.15, session.clock.now(), watched=True)

    async def run():
        reply = FakeRef()
        await quotes.fetch(m.FetchQuotes(contracts=_contracts([690.0]), reply_to=reply, tag="SPY"))
        [got] = reply.last(m.QuotesFetched).quotes
        assert got.age_known and (got.bid, got.ask) == (2.0, 2.1)
        assert ib.snapshots == 0 and ib.lines == [] and ib.cancelled == []

    asyncio.run(run())


def test_an_entry_on_a_positions_line_sends_no_request_not_even_contract_details(
    make_settings, metrics
):
    """The contract of an open position, not qualified today (the service restarted, or a new
    day began, with the position's line restored from its conId): its line answers, like a
    warm line, with no contract-details round trip first."""
    from ib_async import Option, Ticker

    session = _session(make_settings, metrics)
    ib, quotes = session.ib, session.quotes
    q = Option("SPY", "20261123", 690.0, "C", "SMART", conId=6901, tradingClass="SPY")
    q.lastTradeDateOrContractMonth = "20261123"
    line = Ticker(contract=q)
    line.bid, line.ask, line.volume = 2.0, 2.1, 500.0
    quotes.quote_lines[6901] = line
    quotes._mark(6901, 2.0, 2.05, session.clock.now(), watched=True)
    quotes._mark(6901, 2.0, 2.1, session.clock.now(), watched=True)

    async def run():
        reply = FakeRef()
        await quotes.fetch(m.FetchQuotes(contracts=_contracts([690.0]), reply_to=reply, tag="SPY"))
        [got] = reply.last(m.QuotesFetched).quotes
        assert got.age_known and (got.bid, got.ask) == (2.0, 2.1)
        assert got.contract.con_id == 6901
        assert ib.qualified == [] and ib.snapshots == 0 and ib.lines == []
        # A position's line with no bid and ask yet is not read this way: the full path.
        line.bid = math.nan
        await quotes.fetch(m.FetchQuotes(contracts=_contracts([690.0]), reply_to=reply, tag="SPY"))
        assert len(ib.qualified) == 1 and ib.lines == []

    asyncio.run(run())


def test_a_warm_line_opened_while_a_brief_one_waited_is_waited_on_not_doubled(
    make_settings, metrics
):
    """The entry's contract waits for a free line; meanwhile the warm plan opens one on it.
    The entry reads that line, once its first bid and ask are in (an answer read before them
    is NaN: the entry skipped a quote it could have had), and asks nothing more."""
    from ib_async import Option

    session = _session(make_settings, metrics, options={"quote_recheck_s": 0.5})
    session.ib = ib = WarmIB(answers=True, change_after=0.01)
    quotes = session.quotes
    key = ("SPY", "20261123", 690.0, "C", "SPY")
    q = Option("SPY", "20261123", 690.0, "C", "SMART", conId=6901, tradingClass="SPY")

    async def run():
        quotes.lines = asyncio.Semaphore(1)
        await quotes.lines.acquire()  # a position's line, say
        reply = FakeRef()
        fetching = asyncio.create_task(
            quotes.fetch(m.FetchQuotes(contracts=_contracts([690.0]), reply_to=reply, tag="SPY"))
        )
        await asyncio.sleep(0.01)
        assert ib.lines == [] and not fetching.done()
        quotes._open_warm(key, q)  # its line: the position's, freed below
        quotes.lines.release()
        await fetching
        [got] = reply.last(m.QuotesFetched).quotes
        assert (got.bid, got.ask) == (2.0, 2.15) and got.age_known
        assert len(ib.lines) == 1 and ib.cancelled == [] and list(quotes.warm_lines) == [key]

    asyncio.run(run())


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40)
@given(symbols=st.integers(0, 100), positions=st.integers(0, 10))
def test_warm_sets_leave_every_cold_entry_a_line_per_strike(
    make_settings, metrics, symbols, positions
):
    """At a bar's close every symbol without warm lines asks for its strikes at once, a brief
    line each: the warm sets leave that many lines free (up to half of them), so the entries do
    not queue for a few and skip. Few symbols are all warm, as before."""
    from strategies.options import warm_plan

    session = _session(make_settings, metrics)
    quotes = session.quotes
    for i in range(positions):
        quotes.quote_lines[i] = object()
    for i in range(symbols):
        sym = f"S{i:03d}"
        quotes.warm_wanted[sym] = tuple(
            m.OptionContract(sym, "20261123", 100.0 + k, r) for k in range(5) for r in "CP"
        ) + tuple(m.OptionContract(sym, "20261123", 110.0 + k, "C") for k in range(4))
        quotes.warm_core[sym] = 10
    budget = quotes.warm_budget()
    plan = warm_plan(quotes.warm_wanted, budget, quotes.warm_core)
    free = 100 - positions - 4
    cold = symbols - len(plan)
    entries = free - sum(len(v) for v in plan.values())
    assert budget >= 0 and entries >= min(max(5, free // 2), 5 * max(1, cold))
    if symbols * 10 + 5 <= free:
        assert cold == 0


class LineCountingClient:
    """ib_async's Client, as far as quote lines go: the Gateway's own count of open lines."""

    def __init__(self, wrapper=None):
        self.next_id = 1000
        self.open: dict[int, int] = {}  # request id -> conId: lines open at the Gateway
        self.snapshots = 0
        self.wrapper = wrapper  # given: snapshots are answered through ib_async's own wrapper

    def isConnected(self):  # noqa: N802 - ib_async's name
        return True

    def isReady(self):  # noqa: N802
        return True

    def disconnect(self):
        pass

    def getReqId(self):  # noqa: N802
        self.next_id += 1
        return self.next_id

    def reqMktData(self, req_id, contract, ticks, snapshot, regulatory, options):  # noqa: N802
        if snapshot:
            self.snapshots += 1
        else:
            self.open[req_id] = contract.conId
        if self.wrapper is not None:  # answered as the Gateway does: a bid and an ask (then
            w = self.wrapper  # a snapshot's end)
            asyncio.get_running_loop().call_soon(
                lambda: (
                    w.tcpDataArrived(),
                    w.priceSizeTick(req_id, 1, 2.0, 10),
                    w.priceSizeTick(req_id, 2, 2.1, 10),
                    snapshot and w.tickSnapshotEnd(req_id),
                    w.tcpDataProcessed(),
                )
            )

    def cancelMktData(self, req_id):  # noqa: N802
        self.open.pop(req_id, None)


def _real_ib_session(make_settings, metrics, real_snapshots=False, **settings):
    """A session whose IB is ib_async's own (its one-request-id-per-contract bookkeeping is the
    point), with a client that counts the lines the Gateway holds; with `real_snapshots`,
    snapshots go through ib_async's reqTickersAsync and wrapper as well."""
    from ib_async import IB

    class GatewayIB(IB):
        async def qualifyContractsAsync(self, *contracts):  # noqa: N802
            for c in contracts:
                c.conId = int(c.strike * 10) + (1 if c.right == "C" else 2)
            return list(contracts)

        if not real_snapshots:

            async def reqTickersAsync(self, *contracts):  # noqa: N802
                from ib_async import Ticker

                self.client.snapshots += 1
                return [Ticker(contract=c, bid=2.0, ask=2.1) for c in contracts]

    session = Session(make_settings(**settings), metrics, None, actor=FakeRef("actor"))
    session.ib = GatewayIB()
    session.ib.client = LineCountingClient(session.ib.wrapper)
    session.ib.disconnect = lambda: None  # nothing to close at exit
    session.clock = ManualClock(SESSION_TIME)
    return session


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03])
@pytest.mark.parametrize("other", ["warm", "watch", "fetch"])
def test_a_contract_never_has_two_lines_so_none_is_left_open_at_the_gateway(
    make_settings, metrics, other, delay
):
    """An entry's brief recheck line, and meanwhile a warm line, a position's watch or another
    entry's recheck on the same contract: ib_async keeps one request id per contract, so the
    second line took the id over and the first stayed open at the Gateway for good (the 5-day
    soak's 26 refusals for too many lines). Every line the Gateway holds at the end is one the
    service counts."""
    session = _real_ib_session(make_settings, metrics, options={"quote_recheck_s": 0.05})
    quotes, client = session.quotes, session.ib.client
    contract = _contracts([700.0])

    async def run():
        entry = asyncio.ensure_future(
            quotes.fetch(m.FetchQuotes(contracts=contract, reply_to=FakeRef(), tag="SPY"))
        )
        await asyncio.sleep(delay)
        if other == "warm":
            await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=contract))
        elif other == "watch":
            held = replace(contract[0], con_id=7001)
            await quotes.watch(m.WatchQuotes(contract=held, reply_to=FakeRef()))
        else:
            await quotes.fetch(m.FetchQuotes(contracts=contract, reply_to=FakeRef(), tag="SPY"))
        await entry
        await asyncio.sleep(0.1)  # every brief line over

    asyncio.run(run())
    held = len(quotes.warm_lines) + len(quotes.quote_lines)
    # The lines the Gateway holds are exactly those the service can still cancel.
    cancellable = set(session.ib.wrapper.ticker2ReqId["mktData"].values())
    assert set(client.open) == cancellable and len(cancellable) == held
    if other == "watch":
        assert held == 1  # the position's line waited for the brief one, then opened


def test_ib_async_keeps_no_ticker_for_a_contract_no_request_feeds(make_settings, metrics):
    """ib_async keeps every Ticker it made until the connection resets: one per option contract
    ever quoted. A day of entries over moving strikes (snapshots, recheck lines, warm lines
    given up as the spot moves, positions watched then closed) must leave only the tickers of
    the lines still open."""
    session = _real_ib_session(
        make_settings, metrics, real_snapshots=True, options={"quote_recheck_s": 0.01}
    )
    quotes, w = session.quotes, session.ib.wrapper

    async def run():
        for spot in range(600, 640):  # the strikes in play move with the spot
            strikes = [float(spot - 1), float(spot), float(spot + 1)]
            await quotes.warm(m.WarmQuotes(symbol="SPY", contracts=_contracts(strikes)))
            entry = _contracts([float(spot + 5)], "P")
            await quotes.fetch(m.FetchQuotes(contracts=entry, reply_to=FakeRef(), tag="SPY"))
            held = replace(entry[0], con_id=int((spot + 5) * 10) + 2)
            await quotes.watch(m.WatchQuotes(contract=held, reply_to=FakeRef()))
            await quotes.stop_watching(held.con_id)
        await asyncio.sleep(0.05)

    asyncio.run(run())
    assert session.ib.client.snapshots == 0  # an entry's cold quotes come on brief lines
    lines = len(quotes.warm_lines) + len(quotes.quote_lines)
    assert lines == 3
    assert len(w.tickers) == lines, len(w.tickers)
    assert len(w.reqId2Ticker) == lines


class SlowFirstTickIB(WarmIB):
    """A line's first bid and ask come `delay` seconds after the request."""

    def __init__(self, delay):
        super().__init__()
        self.delay = delay

    def reqMktData(self, contract, *args):  # noqa: N802
        from ib_async import Ticker

        t = Ticker(contract=contract)
        t.volume = 500.0
        self.lines.append(t)
        asyncio.get_running_loop().call_later(self.delay, _tick, t, 2.0, 2.1)
        return t


def _backlogged_gate(queued):
    """The session's message gate with `queued` requests waiting: 0.1 s each at 10 a second."""
    from actors.pacing import MessageGate

    gate = MessageGate(rate=10.0, burst=1)
    now = asyncio.get_running_loop().time()
    for _ in range(queued + 1):
        gate.offer("1\0x", now)  # the first goes at once, the rest wait
    return gate


def test_a_brief_lines_first_tick_is_waited_for_from_when_the_request_leaves_the_gate(
    make_settings, metrics
):
    """At a bar's close at 50 symbols (or at half rate after an error 100) a line's request
    waits at our own message gate: its first quote is waited for from when it goes out, not
    taken for "no quote" because our queue was long."""
    session = _session(make_settings, metrics, options={"quote_recheck_s": 0.01})
    session.ib = ib = SlowFirstTickIB(delay=0.38)  # after its 0.3 s wait, within 0.3 + 0.2
    quotes = session.quotes

    async def run():
        session.gate = _backlogged_gate(1)  # about 0.2 s of requests ahead
        reply = FakeRef()
        await quotes.fetch(
            m.FetchQuotes(contracts=_contracts([690.0]), reply_to=reply, wait_s=0.3, tag="SPY")
        )
        got = reply.last(m.QuotesFetched)
        assert [q.contract.strike for q in got.quotes] == [690.0], got.missing
        assert len(ib.lines) == 1

    asyncio.run(run())


def test_no_line_is_asked_for_when_the_message_gate_holds_more_than_the_whole_wait(
    make_settings, metrics
):
    """Every request would leave after its wait is over: none is sent (each and its cancel
    would lengthen the queue for every other entry); the entry hears why at once."""
    session = _session(make_settings, metrics)
    session.ib = ib = SlowFirstTickIB(delay=0.0)
    quotes = session.quotes

    async def run():
        session.gate = _backlogged_gate(10)  # about 1 s of requests ahead
        reply = FakeRef()
        await quotes.fetch(
            m.FetchQuotes(
                contracts=_contracts([689.0, 690.0]), reply_to=reply, wait_s=0.5, tag="SPY"
            )
        )
        got = reply.last(m.QuotesFetched)
        assert got.quotes == () and ib.lines == []
        assert [why.split(":")[0] for _, why in got.missing] == ["no quote", "no quote"]
        assert all("queued at the message gate" in why for _, why in got.missing)
        assert quotes.lines._value == session.settings.broker.max_market_data_lines

    asyncio.run(run())

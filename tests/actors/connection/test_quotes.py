"""Quote lines and snapshots, on an event loop of the test's own, with a fake IB client."""

import asyncio
from types import SimpleNamespace

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
    """Answers the snapshot, then the socket closes before the brief line goes out: ib_async's
    Client.send raises ConnectionError("Not connected") for any request on a closed socket."""

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

    assert asyncio.run(run()) is False  # the line taken for the watch was given back
    answer = reply.last(m.QuotesFetched)
    assert answer.tag == "SPY" and [q.bid for q in answer.quotes] == [2.40]

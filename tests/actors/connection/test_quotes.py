"""Quote lines and snapshots, on an event loop of the test's own, with a fake IB client."""

import asyncio

from support import FakeRef

from actors import messages as m
from actors.connection.session import Session


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

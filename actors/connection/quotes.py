"""Option quotes and chains (loop thread only): streaming lines (warm ones for the strikes in play,
an entry's brief ones for the rest, a position's), the marks that say when a bid or ask last
changed, and chains."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from ib_async import Option, Ticker

from actors import messages as m
from actors.base import tell
from actors.connection.convert import finite, ib_option, option_value, price
from actors.hours import MarketHours
from strategies.options import warm_plan
from strategies.sanity import QuoteMark, observe_quote, quote_age_s

if TYPE_CHECKING:
    from actors.connection.session import Session

log = logging.getLogger("optionsbot.connection")


def quotes_refused(msg: m.FetchQuotes, reason: str) -> None:
    tell(
        msg.reply_to,
        m.QuotesFetched(quotes=(), missing=tuple((c, reason) for c in msg.contracts), tag=msg.tag),
    )


def chain_refused(msg: m.FetchChain, reason: str) -> None:
    tell(msg.reply_to, m.ChainFetched(symbol=msg.symbol, chain=None, spot=math.nan, reason=reason))


def contract_key(c: m.OptionContract) -> tuple:
    return (c.symbol, c.expiry, float(c.strike), c.right, c.trading_class)


# How far, as a fraction of the strike, from the strikes in play an expiry's list is kept: 3%
# covers all but a rare day's move (beyond it a strike is qualified on its own), and 50 symbols'
# lists stay small on a Pi.
LISTED_BAND = 0.03


def expiry_key(c: m.OptionContract) -> tuple[str, str, str]:
    return (c.symbol, c.expiry, c.trading_class)


def forget_ticker(ib: Any, ticker: Ticker) -> None:
    """ib_async keeps every Ticker it made, and every request id's, until the connection resets
    (its endTicker forgets only the id of the tick type): one per option contract ever quoted,
    a few thousand a day at 50 symbols. Forget one that no request feeds any more."""
    w = getattr(ib, "wrapper", None)
    if w is None:  # not ib_async's IB (a unit test's): nothing kept
        return
    if any(ticker in ids for ids in w.ticker2ReqId.values()):
        return  # a line still feeds it
    if w.tickers.get(hash(ticker.contract)) is ticker:
        del w.tickers[hash(ticker.contract)]
    for req_id in [r for r, t in w.reqId2Ticker.items() if t is ticker]:
        del w.reqId2Ticker[req_id]


def listed_contracts(details: Iterable[Any], asked: m.OptionContract) -> dict[tuple, Any]:
    """The contracts of `asked`'s expiry among IB's contract details, by `contract_key` of the
    OptionContract an entry would name for each. Anything else IB sent (another symbol, class
    or expiry, not an option, no conId) is left out rather than trusted."""
    found: dict[tuple, Any] = {}
    for d in details:
        q = getattr(d, "contract", None)
        if (
            q is None
            or not q.conId
            or q.secType != "OPT"
            or q.symbol != asked.symbol
            or str(q.lastTradeDateOrContractMonth)[:8] != asked.expiry
            or (asked.trading_class and q.tradingClass != asked.trading_class)
            or q.right not in ("C", "P")
            or not (math.isfinite(q.strike) and q.strike > 0)
        ):
            continue
        key = contract_key(replace(asked, strike=float(q.strike), right=q.right, con_id=0))
        found.setdefault(key, q)
    return found


class LineStart:
    """Whether a new line has brought its first bid and ask: until it has, its values are what
    IB held when the line opened (frozen or not), not a change seen as it happened."""

    BID, ASK = frozenset({1, 66}), frozenset({2, 67})  # live and delayed tick types

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def settled(self, t: Ticker) -> bool:
        """True when the line had settled before this update (so a change in it is fresh)."""
        was = len(self.seen) == 2
        for tick in t.ticks:
            if tick.tickType in self.BID:
                self.seen.add("bid")
            elif tick.tickType in self.ASK:
                self.seen.add("ask")
        return was


class Quotes:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.lines = asyncio.Semaphore(session.settings.broker.max_market_data_lines)
        self.quote_lines: dict[int, Any] = {}  # conId -> streaming Ticker
        # conId -> what has been seen of its bid/ask, across snapshots and lines: a quote's
        # age is the age of its last change, never of its arrival.
        self.quote_marks: dict[int, QuoteMark] = {}
        # conId -> the latest watch or unwatch asked: a watch still waiting for a line when a
        # newer one, or an unwatch, comes is dropped when its line frees.
        self.watch_seq: dict[int, int] = {}
        # (symbol, expiry, strike, right, trading class) -> the qualified contract, for the
        # trading day it was qualified on: an option's definition does not change within a day,
        # so an entry never waits for contract details it has had before.
        self.qualified: dict[tuple, Any] = {}
        self.qualified_day: date | None = None
        self.qualifying: dict[tuple, asyncio.Future] = {}
        # (symbol, expiry, trading class) -> the one request that qualifies every contract of
        # that expiry, for the day of `qualified_day`; once done, its answer is the list of what
        # the expiry has, so a strike it lacks is known missing without asking again.
        self.expiry_loads: dict[tuple[str, str, str], asyncio.Task] = {}
        # (symbol, expiry, trading class) -> the strikes, lowest and highest, its list covers.
        self.expiries_listed: dict[tuple[str, str, str], tuple[float, float]] = {}
        # Warm lines: per symbol the contracts in play (m.WarmQuotes), and per contract key
        # its open line and whether the line has settled (its opening values are not news).
        self.warm_wanted: dict[str, tuple[m.OptionContract, ...]] = {}
        self.warm_core: dict[str, int] = {}  # per symbol, how many of its set are its core
        self.warm_lines: dict[tuple, tuple[Ticker, LineStart, Callable[[Ticker], None]]] = {}
        self.warm_keep: set[tuple] = set()  # the keys of the last warm plan
        # conId -> contract key of the brief lines open now (an entry's cold quotes): ib_async
        # keeps one request id per contract, so no other line opens on one; a brief line whose
        # contract the warm plan wants is kept open as its warm line when it is done.
        self.brief: dict[int, tuple] = {}
        # conId -> set when its brief line closes: a position's watch waits for it (opened
        # meanwhile, it took the brief line's request id over; that line stayed open for good).
        self.brief_done: dict[int, asyncio.Event] = {}

    def drop(self) -> None:
        """The socket closed: the Gateway forgot every quote line: all free again."""
        for _ in range(len(self.quote_lines) + len(self.warm_lines)):
            self.lines.release()
        self.quote_lines.clear()
        self.warm_lines.clear()  # warmed again from warm_wanted at the next connect
        self.session.metrics.market_data_lines.set(0)

    # -- chains ---------------------------------------------------------------------------------
    async def chain(self, msg: m.FetchChain) -> None:
        s = self.session
        try:
            stock = await s.stock(msg.symbol)
            rows = await s.timed(
                "sec_def",
                s.ib.reqSecDefOptParamsAsync(msg.symbol, "", "STK", stock.conId),
            )
        except Exception as exc:  # noqa: BLE001
            chain_refused(msg, str(exc))
            return
        smart = [r for r in rows if r.exchange == "SMART"] or list(rows)
        # The weekly class carries the symbol's own name (SPY, not SPYW); prefer it, then the richest row.
        smart.sort(key=lambda r: (r.tradingClass != msg.symbol, -len(r.expirations)))
        if not smart or not smart[0].expirations or not smart[0].strikes:
            chain_refused(msg, "empty option chain")
            return
        row = smart[0]
        chain = m.Chain(
            symbol=msg.symbol,
            con_id=stock.conId,
            trading_class=row.tradingClass,
            multiplier=int(float(row.multiplier or 100)),
            expirations=tuple(sorted(row.expirations)),
            strikes=tuple(sorted(row.strikes)),
        )
        tell(msg.reply_to, m.ChainFetched(symbol=msg.symbol, chain=chain, spot=math.nan))

    # -- qualified contracts, cached for the day -------------------------------------------
    async def qualify(self, contracts: tuple[m.OptionContract, ...] | list) -> list[Any]:
        """The qualified contract for each (None when IB has no such contract); asks IB only
        for those not qualified earlier today."""
        s = self.session
        self._new_day()
        # An expiry being qualified whole answers for its contracts: wait for it, not ask again.
        loads = {
            id(t): t
            for c in contracts
            if contract_key(c) not in self.qualified
            and (t := self.expiry_loads.get(expiry_key(c))) is not None
            and not t.done()
        }
        if loads:
            await asyncio.wait(loads.values())
        # Asked already and not answered yet (by another entry, or the warming): wait for that
        # answer rather than ask again; at 100 symbols a bar closes for all at once. A strike
        # its expiry's whole list lacks does not exist (the chain's strikes are a union over
        # expiries): asking for it again would be a round trip for an error 200.
        todo = list(
            {
                contract_key(c): c
                for c in contracts
                if contract_key(c) not in self.qualified
                and contract_key(c) not in self.qualifying
                and not self._listed(c)
            }.values()
        )
        if todo:
            done = asyncio.get_running_loop().create_future()
            for c in todo:
                self.qualifying[contract_key(c)] = done
            try:
                found = await s.timed(
                    "contract_details", s.ib.qualifyContractsAsync(*[ib_option(c) for c in todo])
                )
                for c, q in zip(todo, found, strict=False):
                    if q is not None and q.conId:
                        self.qualified[contract_key(c)] = q
            finally:
                for c in todo:
                    self.qualifying.pop(contract_key(c), None)
                done.set_result(None)
        waits = {
            id(f): f for c in contracts if (f := self.qualifying.get(contract_key(c))) is not None
        }
        for f in waits.values():
            await f
        return [self.qualified.get(contract_key(c)) for c in contracts]

    def _listed(self, c: m.OptionContract) -> bool:
        band = self.expiries_listed.get(expiry_key(c))
        return band is not None and band[0] <= c.strike <= band[1]

    def _new_day(self) -> None:
        today = MarketHours.trading_date(self.session.clock.now())
        if today != self.qualified_day:
            self.qualified.clear()
            self.expiry_loads.clear()
            self.expiries_listed.clear()
            self.qualified_day = today

    async def qualify_expiries(self, contracts: tuple[m.OptionContract, ...] | list) -> None:
        """Qualify every contract of the expiries `contracts` are in, one contract-details
        request per expiry and trading day. Whatever strike an entry then asks for (the spot
        moved since the warm set was made, or its symbol has no warm line) is qualified before
        its bar closes, so the entry waits for its quotes alone.

        IB answers a partly specified contract with every contract that matches: an option
        with no strike and no right is every strike, calls and puts, of its expiry (TWS API
        reqContractDetails; IBrokers' reqContractDetails examples ask twsOption(right="") for
        all of a symbol's options; the simulator's _resolve_options does the same). Contract
        details for derivatives are paced by IB (IBKR.md): one request per expiry instead of
        one per strike keeps well within it.
        """
        self._new_day()
        groups: dict[tuple[str, str, str], list[m.OptionContract]] = {}
        for c in contracts:
            groups.setdefault(expiry_key(c), []).append(c)
        tasks = []
        for key, group in groups.items():
            task = self.expiry_loads.get(key)
            if task is None:
                # The strikes within LISTED_BAND of those in play now: a day's moves stay within
                # it, and a symbol keeps a few hundred contracts at most, not its whole expiry
                # (memory on a Pi). A strike beyond it is qualified on its own, as before.
                strikes = [c.strike for c in group]
                margin = LISTED_BAND * max(strikes)
                band = (min(strikes) - margin, max(strikes) + margin)
                task = self.expiry_loads[key] = asyncio.ensure_future(
                    self._load_expiry(group[0], band)
                )
            tasks.append(task)
        if tasks:
            await asyncio.wait(tasks)

    async def _load_expiry(self, c: m.OptionContract, band: tuple[float, float]) -> None:
        s, key, day = self.session, expiry_key(c), self.qualified_day
        whole = Option(
            c.symbol,
            c.expiry,
            exchange="SMART",
            currency="USD",
            tradingClass=c.trading_class,
            multiplier=str(c.multiplier),
        )
        try:
            details = await s.timed("contract_details", s.ib.reqContractDetailsAsync(whole))
        except Exception as exc:  # noqa: BLE001 - an optimisation: contracts are still qualified one by one
            log.info("%s %s: qualifying the expiry failed: %s", c.symbol, c.expiry, exc)
            if self.expiry_loads.get(key) is asyncio.current_task():
                self.expiry_loads.pop(key)  # asked again with the next warm set
            return
        if day != self.qualified_day:
            return  # answered for a trading day that has ended
        found = listed_contracts(details or (), c)
        if not found:
            # Only a list that has something is the expiry's list: an empty answer (an error
            # 200 for the partial contract) says nothing of its strikes.
            return
        for k, q in found.items():
            if band[0] <= k[2] <= band[1]:
                q.exchange = "SMART"  # as qualifyContractsAsync leaves a contract asked on SMART
                self.qualified.setdefault(k, q)
        self.expiries_listed[key] = band

    # -- warm lines: the strikes in play, streaming before an entry needs them --------------
    def warm_budget(self) -> int:
        """Lines warm quotes may hold: IB's limit less what else needs lines (real-time bars,
        the lines that watch open positions, the brief lines of the entries left cold).

        The entries of the symbols without warm lines all ask at their bar's close, a brief line
        per strike: with the few lines warm sets leave they queue, and skip when none frees
        within their wait (bench.latency at 50 symbols: 77 of them with 9 symbols warm). So a
        line per strike of each cold symbol is kept, up to half of what is free: at 10 symbols
        (9 warm, 1 cold) that is one entry's strikes, as before; at 50, 4 symbols stay warm.
        Not more: a warm line proves its quote fresh all along, a brief one has only
        `quote_recheck_s` to see it change (with none warm at 50 symbols, 108 entries skipped
        as stale against 29-41 with 4 warm, and 75 placed against 99-119)."""
        st = self.session.settings
        free = max(
            0,
            st.broker.max_market_data_lines
            - self.session.history.realtime_lines()
            - len(self.quote_lines)  # open positions' lines
            - 4,  # the next positions' lines (each also takes a warm line back if it must)
        )
        strikes, wanted = st.options.strike_count, len(self.warm_wanted)
        cores = [n for n in self.warm_core.values() if n > 0]
        per = round(sum(cores) / len(cores)) if cores else 2 * strikes  # calls and puts
        # The most symbols that can be warm with the lines their cold ones need still free.
        for warm in range(min(wanted, free // per), -1, -1):
            reserve = min(max(strikes, free // 2), strikes * max(1, wanted - warm))
            if per * warm + reserve <= free:
                return free - reserve
        return 0

    async def warm(self, msg: m.WarmQuotes) -> None:
        s = self.session
        if msg.contracts:
            self.warm_wanted[msg.symbol] = msg.contracts
            self.warm_core[msg.symbol] = msg.core or len(msg.contracts)
        else:
            self.warm_wanted.pop(msg.symbol, None)
            self.warm_core.pop(msg.symbol, None)
        if not s.ib.isConnected():
            return
        # Every symbol's, on a line or not: an entry whose quotes are not on warm lines then
        # waits for its quote lines only, never for contract details first.
        await self.qualify_expiries(msg.contracts)
        plan = warm_plan(self.warm_wanted, self.warm_budget(), self.warm_core)
        keep = self.warm_keep = {contract_key(c) for cs in plan.values() for c in cs}
        for key in [k for k in self.warm_lines if k not in keep]:
            self._close_warm(key)
        new = [c for cs in plan.values() for c in cs if contract_key(c) not in self.warm_lines]
        if not new:
            return
        try:
            qualified = await self.qualify(new)
        except Exception as exc:  # noqa: BLE001 - warming is an optimisation: entries still work
            log.info("warming quotes failed: %s", exc)
            return
        for c, q in zip(new, qualified, strict=True):
            key = contract_key(c)
            if q is None or key in self.warm_lines or not s.ib.isConnected():
                continue
            if q.conId in self.quote_lines or q.conId in self.brief:
                continue  # a position's line streams it already; ib_async keeps one per contract
            if self.lines.locked():
                break  # never take a line a position's watch is waiting for
            await self.lines.acquire()
            self._open_warm(key, q)
        s.metrics.market_data_lines.set(len(self.quote_lines) + len(self.warm_lines))

    def _open_warm(self, key: tuple, q: Any) -> None:
        ticker = self.session.ib.reqMktData(q, "", False, False)
        self._adopt_warm(key, q, ticker, LineStart())

    def _adopt_warm(self, key: tuple, q: Any, ticker: Ticker, start: LineStart) -> None:
        """`ticker`'s line (holding one of `lines`) is warm line `key` from now on."""
        clock = self.session.clock

        def on_tick(t: Ticker, con_id: int = q.conId) -> None:
            watched = start.settled(t)
            bid, ask = price(t.bid), price(t.ask)
            if not (math.isnan(bid) or math.isnan(ask)):
                self._mark(con_id, bid, ask, clock.now(), watched)

        ticker.updateEvent += on_tick
        self.warm_lines[key] = (ticker, start, on_tick)

    def give_back_warm_line(self) -> None:
        """The last warmed line is closed, for a line that matters more (bars, a position)."""
        self._close_warm(next(reversed(self.warm_lines)))

    def _close_warm(self, key: tuple) -> None:
        ticker, _, on_tick = self.warm_lines.pop(key)
        ticker.updateEvent -= on_tick
        if self.session.ib.isConnected():
            self.session.ib.cancelMktData(ticker.contract)
            forget_ticker(self.session.ib, ticker)
        self.lines.release()

    def _position_line(self, c: m.OptionContract) -> Ticker | None:
        """The line a position's watch keeps on `c`, once it has brought a bid and ask (its mark):
        an entry on the contract of an open position reads it, as it would a warm line."""
        for con_id, t in self.quote_lines.items():
            q = t.contract
            if (
                q.symbol == c.symbol
                and str(q.lastTradeDateOrContractMonth)[:8] == c.expiry
                and float(q.strike) == float(c.strike)
                and q.right == c.right
                and (not c.trading_class or q.tradingClass == c.trading_class)
            ):
                settled = con_id in self.quote_marks and not (
                    math.isnan(price(t.bid)) or math.isnan(price(t.ask))
                )
                return t if settled else None
        return None

    def _from_warm_lines(self, msg: m.FetchQuotes) -> m.QuotesFetched | None:
        """The answer from lines alone when every contract asked has a settled warm line or a
        position's line: no request at all (not even contract details: the line's contract is
        qualified). A quote not seen to change for long stays stale here too: the line is
        live and would have said so, so there is nothing to recheck."""
        found = []
        for c in msg.contracts:
            line = self.warm_lines.get(contract_key(c))
            if line is not None and len(line[1].seen) == 2:
                found.append((c, line[0]))
            elif (ticker := self._position_line(c)) is not None:
                found.append((c, ticker))
            else:
                return None
        now = self.session.clock.now()
        quotes, missing = [], []
        for c, t in found:
            value = option_value(t.contract, c)
            bid, ask = price(t.bid), price(t.ask)
            mark = self.quote_marks.get(t.contract.conId)
            if math.isnan(bid) or math.isnan(ask) or mark is None:
                missing.append(
                    (value, "no quote (NaN): no entitlement, market closed, or no market")
                )
                continue
            quotes.append(
                m.OptionQuote(
                    contract=value,
                    bid=bid,
                    ask=ask,
                    last=finite(t.last),
                    volume=finite(t.volume),
                    time=mark.since or mark.seen or now,
                    age_known=mark.since is not None,
                )
            )
        return m.QuotesFetched(quotes=tuple(quotes), missing=tuple(missing), tag=msg.tag)

    # -- an entry's quotes ------------------------------------------------------------------------
    async def fetch(self, msg: m.FetchQuotes) -> None:
        s = self.session
        warm = self._from_warm_lines(msg)
        if warm is not None:
            s.metrics.quotes_from_lines.inc()
            tell(msg.reply_to, warm)
            return
        missing: list[tuple[m.OptionContract, str]] = []
        quotes: list[m.OptionQuote] = []
        options = s.settings.options
        try:
            qualified = await self.qualify(msg.contracts)
            pairs = [
                (c, q) for c, q in zip(msg.contracts, qualified, strict=False) if q is not None
            ]
            missing += [
                (c, "no such contract (200)")
                for c, q in zip(msg.contracts, qualified, strict=False)
                if q is None
            ]
            # A contract on a warm line (or a position's) is read from it, never asked again:
            # ib_async keeps one ticker and one request id per contract, and a second request
            # would make it forget the line's id, so the line could never be cancelled.
            # A warm line that has brought no bid and ask yet is not read: it is closed and the
            # contract asked like a cold one (its own brief line), then warmed again.
            on_lines = {}
            reopen: list[tuple[tuple, Any]] = []
            for c, q in pairs:
                line = self.warm_lines.get(contract_key(c))
                if q.conId in self.quote_lines:
                    # A position's line streams it (and marks every change it brings).
                    on_lines[q.conId] = self.quote_lines[q.conId]
                elif line is not None and len(line[1].seen) == 2:
                    on_lines[q.conId] = line[0]
                elif line is not None:
                    self._close_warm(contract_key(c))
                    reopen.append((contract_key(c), q))  # warm again once the quote is in
            # The rest open a brief line each rather than a snapshot: a line's first bid and ask
            # come one round trip after the request, while IB ends a snapshot only once it has
            # gathered every field, up to 11 s later (IBKR.md; TWS API reqMktData; sim/latency.py
            # first_tick vs snapshot). The same line then proves the quote fresh (a snapshot's
            # look needed a line for that anyway), so the first look and the recheck are one
            # request.
            keys = {q.conId: contract_key(c) for c, q in pairs}
            brief = [q for _, q in pairs if q.conId not in on_lines]
            queued = self._queued()
            if brief and queued >= msg.wait_s:
                # Our own message gate holds more than the whole wait (after an error 100 it
                # sends at half rate): no line could bring a quote in time, and each request
                # and its cancel would only lengthen the queue for every other entry.
                jammed = f"no quote: {queued:.1f}s of requests queued at the message gate"
                results: list[Any] = [TimeoutError(jammed)] * len(brief)
            else:
                results = await asyncio.gather(
                    *[
                        self._brief_line(keys[q.conId], q, msg.wait_s, options.quote_recheck_s)
                        for q in brief
                    ],
                    return_exceptions=True,
                )
        except Exception as exc:  # noqa: BLE001
            quotes_refused(
                msg, "quote request timed out" if isinstance(exc, TimeoutError) else str(exc)
            )
            return
        by_con: dict[int, Ticker] = dict(on_lines)
        no_line: set[int] = set()
        not_sent: dict[int, str] = {}
        for q, got in zip(brief, results, strict=True):
            if isinstance(got, Ticker):
                by_con[q.conId] = got
            elif got is None:
                no_line.add(q.conId)
            elif isinstance(got, TimeoutError) and str(got).startswith("no quote: "):
                not_sent[q.conId] = str(got)
            else:
                log.info("%s: a brief quote line failed: %s", q.localSymbol or q.symbol, got)
        for key, q in reopen:
            if (
                key in self.warm_keep
                and key not in self.warm_lines
                and not self.lines.locked()
                and s.ib.isConnected()
            ):
                await self.lines.acquire()
                self._open_warm(key, q)
        now = s.clock.now()
        for c, q in pairs:
            t: Ticker | None = by_con.get(q.conId)
            value = option_value(q, c)
            if q.conId in no_line:
                missing.append((value, f"no market data line free within {msg.wait_s:g}s"))
                continue
            if q.conId in not_sent:
                missing.append((value, not_sent[q.conId]))
                continue
            bid, ask = (price(t.bid), price(t.ask)) if t else (math.nan, math.nan)
            if t is None or math.isnan(bid) or math.isnan(ask):
                missing.append(
                    (value, "no quote (NaN): no entitlement, market closed, or no market")
                )
                continue
            mark = self.quote_marks.get(q.conId)
            quotes.append(
                m.OptionQuote(
                    contract=value,
                    bid=bid,
                    ask=ask,
                    last=finite(t.last),
                    volume=finite(t.volume),
                    time=(mark.since or mark.seen) if mark else now,
                    age_known=mark is not None and mark.since is not None,
                )
            )
        tell(
            msg.reply_to, m.QuotesFetched(quotes=tuple(quotes), missing=tuple(missing), tag=msg.tag)
        )

    async def _brief_line(
        self, key: tuple, q: Any, wait_s: float, recheck_s: float
    ) -> Ticker | None:
        """One cold contract's quote from a line of its own, open only as long as it takes: until
        its first bid and ask (at most `wait_s` after it opened), then, when those do not prove
        the quote fresh (seen for the first time, or unchanged since long ago), until a change on
        the line does (at most `recheck_s` more). Every bid/ask it brings is marked. None when no
        line freed within `wait_s` (IB's 100: the service never asks for a 101st); the ticker
        otherwise, whatever it got (NaN: nothing came).

        Each contract takes and gives back its own line, so entries waiting for lines never
        hold some while waiting for others. A line the warm plan wants by then stays open as
        that warm line rather than close and open again."""
        ib, clock = self.session.ib, self.session.clock
        options = self.session.settings.options
        scale = getattr(clock, "scale", 1.0)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self.lines.acquire(), timeout=wait_s)
        except TimeoutError:
            return None
        first_by = loop.time() + wait_s  # a line that waited its turn still gets its wait
        kept = own = False
        try:
            if not ib.isConnected():
                raise ConnectionError("not connected")
            changed = asyncio.Event()
            warm = self.warm_lines.get(key)
            if warm is not None or q.conId in self.quote_lines or q.conId in self.brief:
                # A line opened on it while this waited (the warm plan moved, a position): it
                # is read, not asked again (ib_async would share its request id), and marks
                # the quote itself.
                self.lines.release()
                kept = True
                ticker = warm[0] if warm is not None else self.quote_lines.get(q.conId)
                if ticker is None:
                    return None
                start = warm[1] if warm is not None else None

                def on_tick(t: Ticker) -> None:
                    changed.set()

            else:
                own = True
                start = LineStart()

                def on_tick(t: Ticker) -> None:
                    watched = start.settled(t)
                    bid, ask = price(t.bid), price(t.ask)
                    if not (math.isnan(bid) or math.isnan(ask)):
                        self._mark(q.conId, bid, ask, clock.now(), watched)
                    changed.set()

                # The first tick's wait starts when the request leaves our message gate: a line
                # queued behind others (a bar's close at 50 symbols, the half rate after an error
                # 100) is not "no quote" for that (as Session.timed does for requests).
                first_by += min(self._queued(), wait_s)  # never more than one wait more
                ticker = ib.reqMktData(q, "", False, False)
                self.brief[q.conId] = key
                self.brief_done[q.conId] = asyncio.Event()
            ticker.updateEvent += on_tick
            try:

                def proven() -> bool:
                    mark = self.quote_marks.get(q.conId)
                    return (
                        mark is not None
                        and quote_age_s(mark, clock.now(), scale) <= options.max_quote_age_s
                    )

                def first() -> bool:
                    if start is not None:
                        return len(start.seen) == 2
                    return not (math.isnan(price(ticker.bid)) or math.isnan(price(ticker.ask)))

                async def until(done: Callable[[], bool], by: float) -> bool:
                    while not done():
                        left = by - loop.time()
                        if left <= 0:
                            return False
                        changed.clear()
                        try:
                            await asyncio.wait_for(changed.wait(), left)
                        except TimeoutError:
                            return done()
                    return True

                if await until(first, first_by) and not proven():
                    await until(proven, loop.time() + recheck_s)
            finally:
                ticker.updateEvent -= on_tick
                if own:
                    self.brief.pop(q.conId, None)
                    done = self.brief_done.pop(q.conId, None)
                    if done is not None:
                        done.set()
                    if ib.isConnected() and key in self.warm_keep and key not in self.warm_lines:
                        self._adopt_warm(key, q, ticker, start)
                        kept = True
                    elif ib.isConnected() and q.conId not in self.quote_lines:
                        ib.cancelMktData(q)
                        forget_ticker(ib, ticker)
            return ticker
        finally:
            if not kept:
                self.lines.release()

    def _queued(self) -> float:
        """Seconds a request made now waits at the session's message gate (IB's message rate)."""
        gate = getattr(self.session, "gate", None)
        if gate is None:  # not connected yet, or a unit test's session
            return 0.0
        return gate.backlog_s(asyncio.get_running_loop().time())

    def _mark(self, con_id: int, bid: float, ask: float, now: datetime, watched: bool) -> QuoteMark:
        mark = self.quote_marks[con_id] = observe_quote(
            self.quote_marks.get(con_id), bid, ask, now, watched
        )
        if len(self.quote_marks) > 5000:
            # Marks of contracts not looked at for long are worth nothing: the next look is a
            # first sight anyway. Oldest first.
            for key in sorted(self.quote_marks, key=lambda k: self.quote_marks[k].seen)[:1000]:
                self.quote_marks.pop(key, None)
        return mark

    # -- streaming lines ------------------------------------------------------------------------
    async def watch(self, msg: m.WatchQuotes) -> None:
        s = self.session
        c = msg.contract
        contract = ib_option(c)
        if not c.con_id:
            q = await s.ib.qualifyContractsAsync(contract)
            if not q or q[0] is None:
                log.warning("%s: cannot watch quotes, no such contract (200)", c.symbol)
                return
            contract = q[0]
        seq = self._next_watch(contract.conId)
        while (brief := self.brief_done.get(contract.conId)) is not None:
            await brief.wait()  # an entry's brief line on it closes within its quote wait
        if contract_key(c) in self.warm_lines:
            # ib_async keeps one ticker, and one request id, per contract: the warm line gives
            # way to this one rather than share it.
            self._close_warm(contract_key(c))
        # A watch asked again (after a resync) replaces the old line instead of taking another.
        await self._unwatch(contract.conId)
        if self.lines.locked() and self.warm_lines:
            self.give_back_warm_line()  # a position's line comes before warmth
        if self.lines.locked():
            log.warning(
                "%s waits for a market data line (all %d in use)",
                c.symbol,
                s.settings.broker.max_market_data_lines,
            )
        await self.lines.acquire()
        if not s.ib.isConnected() or self.watch_seq.get(contract.conId) != seq:
            self.lines.release()  # lost while waiting (resubscribed on resync), or superseded
            return
        ticker = s.ib.reqMktData(contract, "", False, False)
        self.quote_lines[contract.conId] = ticker
        s.metrics.market_data_lines.set(len(self.quote_lines))
        reply_to = msg.reply_to
        last: list[tuple[float, float]] = [(math.nan, math.nan)]
        con_id = contract.conId

        start = LineStart()

        def on_tick(t: Ticker) -> None:
            # A line's first values are whatever IB holds, frozen or not; after that every
            # change comes as a tick, so a change is known to be fresh.
            watched = start.settled(t)
            bid, ask = price(t.bid), price(t.ask)
            if (bid, ask) == last[0] or math.isnan(bid) or math.isnan(ask):
                return
            last[0] = (bid, ask)
            mark = self._mark(con_id, bid, ask, s.clock.now(), watched)
            tell(
                reply_to,
                m.QuoteUpdated(
                    quote=m.OptionQuote(
                        contract=c,
                        bid=bid,
                        ask=ask,
                        last=finite(t.last),
                        volume=finite(t.volume),
                        time=mark.since or mark.seen,
                        age_known=mark.since is not None,
                    )
                ),
            )

        ticker.updateEvent += on_tick

    def _next_watch(self, con_id: int) -> int:
        seq = self.watch_seq[con_id] = self.watch_seq.get(con_id, 0) + 1
        return seq

    async def stop_watching(self, con_id: int) -> None:
        self._next_watch(con_id)  # a watch still waiting for a line gives it back unused
        await self._unwatch(con_id)

    async def _unwatch(self, con_id: int) -> None:
        ticker = self.quote_lines.pop(con_id, None)
        if ticker is None:
            return
        if self.session.ib.isConnected():
            self.session.ib.cancelMktData(ticker.contract)
            forget_ticker(self.session.ib, ticker)
        self.lines.release()
        self.session.metrics.market_data_lines.set(len(self.quote_lines))

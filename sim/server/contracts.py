"""Contracts: lookup (reqContractDetails), option chains (reqSecDefOptParams), market rules,
and the contract details IB would send for each."""

from __future__ import annotations

import dataclasses
import logging
import zlib
from datetime import date, datetime, time, timedelta

from sim import protocol as P
from sim.listed import LISTED
from sim.market import OptionChain
from sim.orders import SimContract
from sim.pricing import normalize_right, option_tick
from sim.server.core import ServerCore
from sim.server.sessions import ClientSession

log = logging.getLogger(__name__)

ERR_NO_SECURITY = "No security definition has been found for the request"

# Market rule ids as IB numbers them: stocks, penny options everywhere, and the two tiered option rules.
RULE_STOCK = 26

RULE_OPT_PENNY = 110

RULE_OPT_PENNY_NICKEL = 32

RULE_OPT_NICKEL_DIME = 33

MARKET_RULES: dict[int, tuple[tuple[float, float], ...]] = {
    RULE_STOCK: ((0.0, 0.01),),
    RULE_OPT_PENNY: ((0.0, 0.01),),
    RULE_OPT_PENNY_NICKEL: ((0.0, 0.01), (3.0, 0.05)),
    RULE_OPT_NICKEL_DIME: ((0.0, 0.05), (3.0, 0.10)),
}

# Option trading classes whose OCC root is not their underlying's symbol.
CLASS_UNDERLYING = {"SPXW": "SPX"}

STOCK_EXCHANGES = (
    "SMART",
    "AMEX",
    "NYSE",
    "CBOE",
    "PHLX",
    "ISE",
    "CHX",
    "ARCA",
    "NASDAQ",
    "BATS",
    "IEX",
)

OPTION_EXCHANGES = (
    "SMART",
    "AMEX",
    "CBOE",
    "PHLX",
    "PSE",
    "ISE",
    "BOX",
    "BATS",
    "NASDAQOM",
    "CBOE2",
    "MIAX",
)

EXTRA_STOCK_EXCHANGES = frozenset({"ISLAND", "NYSEARCA", "EDGX", "BYX", "MEMX", "IBKRATS"})

# Only what the simulator executes, so a client that reads orderTypes is not misled.
STOCK_ORDER_TYPES = "DAY,GTC,IOC,LMT,MKT,OCA,STP,STPLMT,WHATIF"

OPTION_ORDER_TYPES = STOCK_ORDER_TYPES

LONG_NAMES = {
    "SPY": ("SPDR S&P 500 ETF TRUST", "ETF"),
    "QQQ": ("INVESCO QQQ TRUST SERIES 1", "ETF"),
    "IWM": ("ISHARES RUSSELL 2000 ETF", "ETF"),
    "DIA": ("SPDR DJ INDUSTRIAL AVERAGE", "ETF"),
}

# Real ISINs (ISO 6166: "US" + CUSIP + check digit; each check digit verified) for the underlyings
# a configuration is likely to name. A real Gateway sends a stock's ISIN in secIdList
# (AAPL: [TagValue('ISIN', 'US0378331005')]); NautilusTrader refuses an equity without one.
ISINS = {
    "SPY": "US78462F1030",
    "QQQ": "US46090E1038",
    "IWM": "US4642876555",
    "DIA": "US78467X1090",
    "AAPL": "US0378331005",
    "MSFT": "US5949181045",
    "NVDA": "US67066G1040",
    "AMZN": "US0231351067",
    "TSLA": "US88160R1014",
    "META": "US30303M1027",
    "GOOGL": "US02079K3059",
    "GOOG": "US02079K1079",
    "AMD": "US0079031078",
    "NFLX": "US64110L1061",
    "JPM": "US46625H1005",
    "XLF": "US81369Y6059",
    "GLD": "US78463V1070",
    "TLT": "US4642874329",
    "EEM": "US4642872349",
}

_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def isin_check_digit(body: str) -> str:
    """ISO 6166 check digit of an 11-character ISIN body: letters become 10..35, then Luhn."""
    digits = "".join(str(_BASE36.index(c)) for c in body.upper())
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d // 10 + d % 10
    return str(-total % 10)


def cusip_check_digit(body: str) -> str:
    """The CUSIP check digit of an 8-character CUSIP body (modulus 10, double-add-double)."""
    total = 0
    for i, c in enumerate(body.upper()):
        v = _BASE36.index(c) * (2 if i % 2 else 1)
        total += v // 10 + v % 10
    return str(-total % 10)


def isin_for(symbol: str) -> str:
    """The stock's real ISIN, or for a symbol the simulator invents a stable synthetic one: a
    valid CUSIP (issuer number from a hash of the symbol, issue "10") inside a valid US ISIN."""
    known = ISINS.get(symbol)
    if known:
        return known
    h = zlib.crc32(symbol.encode("utf-8"))
    issuer = ""
    for _ in range(6):
        h, r = divmod(h, 36)
        issuer += _BASE36[r]
    cusip = issuer + "10"
    cusip += cusip_check_digit(cusip)
    return "US" + cusip + isin_check_digit("US" + cusip)


class ContractsMixin(ServerCore):
    """Resolves a request's contract fields to simulated contracts and describes them."""

    # conId -> the contract as first handed out (on SMART), so conId lookups find it again.
    _contracts: dict[int, SimContract]
    # tradingHours/liquidHours for the week ahead, for the one New York date computed last.
    _hours_cache: dict[date, tuple[str, str, str]]
    # (symbol, trading class) -> (the chain it was built from, conId -> (expiry, strike, right)).
    _option_id_index: dict[tuple[str, str], tuple[OptionChain, dict[int, tuple[str, float, str]]]]

    def _init_contracts(self) -> None:
        self._contracts = {}
        self._hours_cache = {}
        self._option_id_index = {}

    def stock_contract(self, symbol: str, exchange: str = "SMART") -> SimContract:
        spec = self.market.spec(symbol)
        if spec.sec_type == "IND":
            return self._index_contract(symbol)
        c = SimContract(
            con_id=spec.con_id,
            symbol=spec.symbol,
            sec_type="STK",
            exchange=exchange or "SMART",
            primary_exchange=spec.primary_exchange,
            currency="USD",
            local_symbol=spec.symbol,
            # IB files every Nasdaq-listed stock under trading class NMS.
            trading_class="NMS" if spec.primary_exchange == "NASDAQ" else spec.symbol,
        )
        self._contracts.setdefault(c.con_id, with_exchange(c, "SMART"))
        return c

    def option_contract(
        self,
        symbol: str,
        expiry: str,
        strike: float,
        right: str,
        trading_class: str,
        multiplier: str,
        exchange: str = "SMART",
    ) -> SimContract:
        con_id = self._option_con_id(symbol, expiry, strike, right, trading_class)
        c = SimContract(
            con_id=con_id,
            symbol=symbol,
            sec_type="OPT",
            expiry=expiry,
            strike=float(strike),
            right=right,
            multiplier=multiplier,
            exchange=exchange or "SMART",
            primary_exchange="",
            currency="USD",
            # The OCC root is the trading class: SPXW options are "SPXW  261120C06800000".
            local_symbol=P.occ_local_symbol(trading_class or symbol, expiry, float(strike), right),
            trading_class=trading_class,
        )
        known = self._contracts.setdefault(con_id, with_exchange(c, "SMART"))
        if known.local_symbol != c.local_symbol:
            # conIds are a 30-bit hash; a clash would make conId lookups ambiguous, so make it loud.
            log.error("conId %d clash: %s and %s", con_id, known.local_symbol, c.local_symbol)
        return c

    def _index_contract(self, symbol: str) -> SimContract:
        """An index as IB describes it: secType IND on its listing exchange (CBOE for SPX, VIX)."""
        spec = self.market.spec(symbol)
        c = SimContract(
            con_id=spec.con_id,
            symbol=spec.symbol,
            sec_type="IND",
            exchange=spec.primary_exchange,
            primary_exchange="",
            currency="USD",
            local_symbol=spec.symbol,
            trading_class=spec.symbol,
        )
        self._contracts.setdefault(c.con_id, c)
        return c

    def _option_con_id(
        self, symbol: str, expiry: str, strike: float, right: str, trading_class: str = ""
    ) -> int:
        return self.market.option_con_id(symbol, expiry, strike, right, trading_class)

    def _chains(self, symbol: str, now: datetime) -> tuple[OptionChain, ...]:
        try:
            return self.market.option_chains(symbol, now)
        except ValueError:
            return ()

    def _known_symbol(self, symbol: str) -> bool:
        # The configured symbols plus the listed universe (sim/listed.py): a real Gateway resolves
        # any listed name, not only the ones a client was configured to trade.
        return symbol in self.symbols or symbol in LISTED

    def contract_by_con_id(self, con_id: int, now: datetime) -> SimContract | None:
        c = self._contracts.get(con_id)
        if c is not None:
            return c
        for sym in (*self.symbols, *LISTED):
            spec = self.market.spec(sym)
            if spec.con_id == con_id:
                return self.stock_contract(sym)
        # Not seen yet: search today's chains of the configured symbols, which is where a client
        # could have found it (a listed name's options are found once handed out).
        for sym in self.symbols:
            for chain in self._chains(sym, now):
                found = self._option_ids(sym, chain).get(con_id)
                if found is not None:
                    expiry, strike, right = found
                    return self.option_contract(
                        sym, expiry, strike, right, chain.trading_class, chain.multiplier
                    )
        return None

    def _option_ids(self, sym: str, chain: OptionChain) -> dict[int, tuple[str, float, str]]:
        """conId -> (expiry, strike, right) over a chain; built once per chain (a SPY chain is
        some 18,000 contracts, too many to hash on every lookup of an unknown conId)."""
        key = (sym, chain.trading_class)
        cached = self._option_id_index.get(key)
        if cached is not None and cached[0] is chain:
            return cached[1]
        cls = chain.trading_class
        index = {
            self._option_con_id(sym, expiry, strike, right, cls): (expiry, strike, right)
            for expiry in chain.expirations
            for strike in chain.strikes_for(expiry)
            for right in ("C", "P")
        }
        self._option_id_index[key] = (chain, index)
        return index

    def resolve(self, req: P.ContractRequest, now: datetime) -> list[SimContract]:
        """All contracts matching a request's contract fields, as IB's contract lookup would."""
        sec_type = req.sec_type
        if req.con_id and req.con_id > 0:
            c = self.contract_by_con_id(req.con_id, now)
            if c is None or (sec_type and c.sec_type != sec_type):
                return []
            return [with_exchange(c, req.exchange or "SMART")]
        if req.currency and req.currency != "USD":
            return []
        if sec_type == "OPT" or (not sec_type and (req.right or req.strike)):
            return self._resolve_options(req, now)
        if sec_type not in ("", "STK", "IND"):
            return []
        symbol = req.symbol or req.local_symbol.strip().upper()
        if not self._known_symbol(symbol):
            return []
        # An index asked for as a stock, or a stock as an index: IB answers 200 for both.
        if self.market.spec(symbol).sec_type == "IND":
            return self._resolve_index(req, symbol) if sec_type in ("", "IND") else []
        if sec_type == "IND":
            return []
        if req.local_symbol and req.local_symbol.strip().upper() != symbol:
            return []
        spec = self.market.spec(symbol)
        exch = req.exchange
        if (
            exch
            and exch not in STOCK_EXCHANGES
            and exch not in EXTRA_STOCK_EXCHANGES
            and exch != spec.primary_exchange
        ):
            return []
        if (
            req.primary_exchange
            and req.primary_exchange not in (spec.primary_exchange, "SMART")
            and req.primary_exchange not in EXTRA_STOCK_EXCHANGES | set(STOCK_EXCHANGES)
        ):
            return []
        return [self.stock_contract(symbol, exch or "SMART")]

    def _resolve_index(self, req: P.ContractRequest, symbol: str) -> list[SimContract]:
        spec = self.market.spec(symbol)
        if req.local_symbol and req.local_symbol.strip().upper() != symbol:
            return []
        if req.exchange and req.exchange not in (spec.primary_exchange, "SMART"):
            return []
        return [self._index_contract(symbol)]

    def _resolve_one(
        self, s: ClientSession, req_id: int, req: P.ContractRequest, now: datetime
    ) -> SimContract | None:
        """The one contract a data request names; None, after error 200, when none or several match."""
        found = self.resolve(req, now)
        if len(found) != 1:
            s.send_error(req_id, 200, ERR_NO_SECURITY)
            return None
        return found[0]

    def _resolve_options(self, req: P.ContractRequest, now: datetime) -> list[SimContract]:
        symbol, expiry, strike, right = req.symbol, req.expiry, req.strike, req.right
        trading_class = req.trading_class
        if req.local_symbol:
            occ = P.parse_occ_local_symbol(req.local_symbol)
            if occ is None:
                return []
            o_sym, o_exp, o_strike, o_right = occ
            # The OCC root is the trading class: SPXW's underlying is SPX.
            o_under = CLASS_UNDERLYING.get(o_sym, o_sym)
            if (symbol and symbol != o_under) or (trading_class and trading_class != o_sym):
                return []
            symbol, expiry, strike, right = (
                o_under,
                expiry or o_exp,
                strike or o_strike,
                right or o_right,
            )
            trading_class = o_sym
        if not self._known_symbol(symbol):
            return []
        if req.exchange and req.exchange not in OPTION_EXCHANGES:
            return []
        if right:
            try:
                rights = [normalize_right(right)]
            except ValueError:
                return []
        else:
            rights = ["C", "P"]
        if expiry and len(expiry) not in (6, 8):
            return []
        found: list[SimContract] = []
        for chain in self._chains(symbol, now):
            if trading_class and trading_class != chain.trading_class:
                continue
            if req.multiplier:
                try:
                    if float(req.multiplier) != float(chain.multiplier):
                        continue
                except ValueError:
                    return []
            expiries = [e for e in chain.expirations if not expiry or e.startswith(expiry)]
            # Only listed (expiry, strike) pairs: a strike from the union that this expiry does
            # not list is "No security definition", as IB answers it.
            found += [
                self.option_contract(
                    symbol, e, s, r, chain.trading_class, chain.multiplier, req.exchange or "SMART"
                )
                for e in expiries
                for s in chain.strikes_for(e)
                if not (strike and strike > 0) or abs(s - strike) < 1e-6
                for r in rights
            ]
        return found

    def _trading_hours(self, now: datetime) -> tuple[str, str, str]:
        """(tradingHours, liquidHours, optionHours) for the coming week in IB's format."""
        today = now.astimezone(P.EASTERN).date()
        cached = self._hours_cache.get(today)
        if cached:
            return cached
        trading, liquid = [], []
        for i in range(7):
            d = today + timedelta(days=i)
            noon = datetime.combine(d, time(12, 0), P.EASTERN)
            bounds = self.market.session_open_close(noon)
            ds = d.strftime("%Y%m%d")
            if bounds is None:
                trading.append(f"{ds}:CLOSED")
                liquid.append(f"{ds}:CLOSED")
                continue
            o, c = (b.astimezone(P.EASTERN) for b in bounds)
            liquid.append(f"{ds}:{o:%H%M}-{ds}:{c:%H%M}")
            late = min(c + timedelta(hours=4), datetime.combine(d, time(20, 0), P.EASTERN))
            trading.append(f"{ds}:0400-{ds}:{late:%H%M}")
        result = (";".join(trading), ";".join(liquid), ";".join(liquid))
        self._hours_cache = {today: result}
        return result

    def _option_rule(self, symbol: str) -> int:
        ticks = (option_tick(symbol, 1.0), option_tick(symbol, 5.0))
        return {
            (0.01, 0.01): RULE_OPT_PENNY,
            (0.01, 0.05): RULE_OPT_PENNY_NICKEL,
            (0.05, 0.1): RULE_OPT_NICKEL_DIME,
        }.get(ticks, RULE_OPT_PENNY)

    def _details(self, c: SimContract, now: datetime) -> P.ContractDetailsData:
        trading, liquid, option_hours = self._trading_hours(now)
        spec = self.market.spec(c.symbol)
        long_name, stock_type = LONG_NAMES.get(
            c.symbol, (spec.long_name or f"{c.symbol} SIMULATED INC", spec.kind)
        )
        if c.sec_type == "IND":
            return P.ContractDetailsData(
                market_name=c.symbol,
                min_tick=0.01,
                order_types="",
                valid_exchanges=c.exchange,
                under_con_id=0,
                long_name=long_name,
                contract_month="",
                industry="Indices",
                category="Broad Range Equity Index",
                subcategory="*",
                time_zone_id="US/Central",
                trading_hours=trading,
                liquid_hours=liquid,
                agg_group=2147483647,
                under_symbol="",
                under_sec_type="",
                market_rule_ids=str(RULE_STOCK),
                real_expiration_date="",
                stock_type="",
            )
        if c.is_option:
            rule = self._option_rule(c.symbol)
            return P.ContractDetailsData(
                market_name=c.trading_class,
                min_tick=option_tick(c.symbol, 1.0),
                order_types=OPTION_ORDER_TYPES,
                valid_exchanges=",".join(OPTION_EXCHANGES),
                under_con_id=self.market.spec(c.symbol).con_id,
                long_name=long_name,
                contract_month=c.expiry[:6],
                industry="",
                category="",
                subcategory="",
                time_zone_id="US/Eastern",
                trading_hours=option_hours,
                liquid_hours=liquid,
                agg_group=2,
                under_symbol=c.symbol,
                under_sec_type=spec.sec_type,
                market_rule_ids=",".join([str(rule)] * len(OPTION_EXCHANGES)),
                real_expiration_date=c.expiry,
                stock_type="",
            )
        industry, category, sub = (
            ("Funds", "Equity Fund", "Growth&Income")
            if stock_type == "ETF"
            else ("Technology", "Software", "Simulated")
        )
        return P.ContractDetailsData(
            market_name=c.trading_class,
            min_tick=0.01,
            order_types=STOCK_ORDER_TYPES,
            valid_exchanges=",".join(STOCK_EXCHANGES),
            under_con_id=0,
            long_name=long_name,
            contract_month="",
            industry=industry,
            category=category,
            subcategory=sub,
            time_zone_id="US/Eastern",
            trading_hours=trading,
            liquid_hours=liquid,
            agg_group=1,
            under_symbol="",
            under_sec_type="",
            market_rule_ids=",".join([str(RULE_STOCK)] * len(STOCK_EXCHANGES)),
            real_expiration_date="",
            stock_type=stock_type,
            suggested_size_increment=100.0,
            # Stocks carry their ISIN; options none, as a real Gateway's OPT details show an
            # empty secIdList (US options have no ISIN of their own).
            sec_id_list=(("ISIN", isin_for(c.symbol)),) if c.sec_type == "STK" else (),
        )

    def _h_req_contract_details(self, s: ClientSession, fields: list[str]) -> None:
        req = P.decode_req_contract_details(fields)
        now = self.clock.now()
        found = [] if req.sec_id_type else self.resolve(req.contract, now)
        if not found:
            s.send_error(req.req_id, 200, ERR_NO_SECURITY)
            return
        msgs = [P.msg_contract_data(s.version, req.req_id, c, self._details(c, now)) for c in found]
        msgs.append(P.msg_contract_data_end(req.req_id))
        s.send_many(msgs)

    def _h_req_sec_def_opt_params(self, s: ClientSession, fields: list[str]) -> None:
        r = P.Reader(fields, 1)
        req_id = r.int()
        symbol = r.str().strip().upper()
        exchange = r.str().strip().upper()
        sec_type = r.str().strip().upper()
        con_id = r.int()
        now = self.clock.now()
        under = self.contract_by_con_id(con_id, now) if con_id else None
        if under is not None and under.sec_type in ("STK", "IND"):
            symbol = under.symbol
        known = self._known_symbol(symbol)
        spec_type = self.market.spec(symbol).sec_type if known else ""
        chains = self._chains(symbol, now) if known and sec_type in ("", spec_type) else ()
        if not chains:
            # Unknown, asked for as the wrong secType, or without listed options (VIX, NDX, RUT
            # here): 200, as for their contract details.
            s.send_error(req_id, 200, ERR_NO_SECURITY)
            return
        under_con_id = self.market.spec(symbol).con_id
        msgs = []
        # One row per exchange and trading class, each with the union of its expiries' strikes.
        for chain in chains:
            for exch in ("SMART", "CBOE"):
                if exchange and exchange != exch:
                    continue
                msgs.append(
                    P.msg_sec_def_opt_params(
                        req_id,
                        exch,
                        under_con_id,
                        chain.trading_class,
                        chain.multiplier,
                        chain.expirations,
                        chain.strikes,
                    )
                )
        msgs.append(P.msg_sec_def_opt_params_end(req_id))
        s.send_many(msgs)

    def _h_req_market_rule(self, s: ClientSession, fields: list[str]) -> None:
        rule_id = P.Reader(fields, 1).int()
        increments = MARKET_RULES.get(rule_id)
        if increments is None:
            log.info("%r: unknown market rule %d", s, rule_id)
            return
        s.send(P.msg_market_rule(rule_id, increments))


def with_exchange(c: SimContract, exchange: str) -> SimContract:
    return c if c.exchange == exchange else dataclasses.replace(c, exchange=exchange)

"""A test client on IB's official Python API (ibapi, EClient/EWrapper) for the wire tests.

ibapi is built around a reader thread: EClient.connect starts one that frames messages off the
socket, and EClient.run (here on a thread of its own) decodes them and calls the EWrapper
methods. Each callback records what it saw under one condition variable, and the tests wait on
that with a timeout, never with bare sleeps.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ibapi.client import EClient
from ibapi.commission_and_fees_report import CommissionAndFeesReport
from ibapi.common import BarData, TickAttrib
from ibapi.contract import Contract, ContractDetails
from ibapi.execution import Execution
from ibapi.order import Order
from ibapi.order_state import OrderState
from ibapi.wrapper import EWrapper

# ibapi's own codes for what it could not decode (ibapi/errors.py): a test fails on any of them.
DECODE_FAILURES = frozenset({505, 507, 508})


@dataclass
class OrderSeen:
    """Everything the client was told about one order id."""

    statuses: list[str] = field(default_factory=list)
    filled: float = 0.0
    avg_fill_price: float = 0.0
    perm_id: int = 0
    parent_id: int = 0
    open_order: Order | None = None


class IbApiClient(EWrapper, EClient):
    """An EClient that records every callback the wire tests look at."""

    def __init__(self) -> None:
        EWrapper.__init__(self)
        EClient.__init__(self, wrapper=self)
        self.cond = threading.Condition()
        self.failures: list[str] = []
        self.closed = False
        self.next_id: int | None = None
        self.accounts: list[str] = []
        self.errors: list[tuple[int, int, str]] = []
        self.ended: set[tuple[str, int]] = set()
        self.details: dict[int, list[ContractDetails]] = defaultdict(list)
        self.chains: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.bars: dict[int, list[BarData]] = defaultdict(list)
        self.bar_updates: dict[int, list[BarData]] = defaultdict(list)
        self.ticks: dict[int, dict[int, float]] = defaultdict(dict)
        self.greeks: dict[int, dict[int, tuple[float, ...]]] = defaultdict(dict)
        # reqId -> every accountSummary row in arrival order, and the batches an End closed.
        self.summary: dict[int, list[tuple[str, str, str, str]]] = defaultdict(list)
        self.summary_batches: dict[int, list[list[tuple[str, str, str, str]]]] = defaultdict(list)
        self._summary_batch: dict[int, list[tuple[str, str, str, str]]] = defaultdict(list)
        self.positions: dict[int, tuple[str, Decimal, float]] = {}
        self.position_ends = 0
        self.orders: dict[int, OrderSeen] = defaultdict(OrderSeen)
        self.open_order_ends = 0
        self.executions: dict[int, list[tuple[Contract, Execution]]] = defaultdict(list)
        self.commissions: list[CommissionAndFeesReport] = []
        self.completed: list[tuple[Contract, Order, OrderState]] = []
        self.completed_ends = 0
        self._thread: threading.Thread | None = None
        self._req_id = 1000

    # -- running ---------------------------------------------------------------------------
    def start(self, port: int, client_id: int, timeout: float = 10.0) -> IbApiClient:
        """Connect, start the decoding thread and wait for nextValidId (the end of the
        handshake and startApi)."""
        self.connect("127.0.0.1", port, client_id)
        self._thread = threading.Thread(target=self._run, name=f"ibapi-{client_id}", daemon=True)
        self._thread.start()
        self.wait_for(lambda: self.next_id is not None or self.closed, timeout, "nextValidId")
        return self

    def _run(self) -> None:
        try:
            self.run()
        except Exception as e:  # a decode error kills ibapi's loop: the test must see it
            with self.cond:
                self.failures.append(f"{type(e).__name__}: {e}")
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def stop(self) -> None:
        self.disconnect()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def req_id(self) -> int:
        self._req_id += 1
        return self._req_id

    def wait_for(self, cond: Callable[[], bool], timeout: float = 5.0, what: str = "it") -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not cond():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"ibapi client: timed out after {timeout}s waiting for {what}"
                    )
                self.cond.wait(remaining)

    def settle(self, seconds: float = 0.3) -> None:
        """Wait a bounded real time, to show that something does not happen."""
        deadline = time.monotonic() + seconds
        with self.cond:
            while (remaining := deadline - time.monotonic()) > 0:
                self.cond.wait(remaining)

    def _note(self, update: Callable[[], None]) -> None:
        with self.cond:
            update()
            self.cond.notify_all()

    def errors_of(self, code: int) -> list[tuple[int, int, str]]:
        with self.cond:
            return [e for e in self.errors if e[1] == code]

    # -- EWrapper ----------------------------------------------------------------------------
    def error(
        self,
        reqId: int,
        errorTime: int,
        errorCode: int,
        errorString: str,
        advancedOrderRejectJson: str = "",
    ) -> None:
        def note() -> None:
            self.errors.append((reqId, errorCode, errorString))
            if errorCode in DECODE_FAILURES:
                self.failures.append(f"ibapi error {errorCode}: {errorString[:300]}")

        self._note(note)

    def connectionClosed(self) -> None:
        self._note(lambda: setattr(self, "closed", True))

    def nextValidId(self, orderId: int) -> None:
        self._note(lambda: setattr(self, "next_id", orderId))

    def managedAccounts(self, accountsList: str) -> None:
        self._note(lambda: setattr(self, "accounts", [a for a in accountsList.split(",") if a]))

    def contractDetails(self, reqId: int, contractDetails: ContractDetails) -> None:
        self._note(lambda: self.details[reqId].append(contractDetails))

    def contractDetailsEnd(self, reqId: int) -> None:
        self._note(lambda: self.ended.add(("contractDetails", reqId)))

    def securityDefinitionOptionParameter(
        self,
        reqId: int,
        exchange: str,
        underlyingConId: int,
        tradingClass: str,
        multiplier: str,
        expirations: Any,
        strikes: Any,
    ) -> None:
        row = {
            "exchange": exchange,
            "underlyingConId": underlyingConId,
            "tradingClass": tradingClass,
            "multiplier": multiplier,
            "expirations": sorted(expirations),
            "strikes": sorted(strikes),
        }
        self._note(lambda: self.chains[reqId].append(row))

    def securityDefinitionOptionParameterEnd(self, reqId: int) -> None:
        self._note(lambda: self.ended.add(("secDefOptParams", reqId)))

    def historicalData(self, reqId: int, bar: BarData) -> None:
        self._note(lambda: self.bars[reqId].append(bar))

    def historicalDataEnd(self, reqId: int, start: str, end: str) -> None:
        self._note(lambda: self.ended.add(("historicalData", reqId)))

    def historicalDataUpdate(self, reqId: int, bar: BarData) -> None:
        self._note(lambda: self.bar_updates[reqId].append(bar))

    def tickPrice(self, reqId: int, tickType: int, price: float, attrib: TickAttrib) -> None:
        self._note(lambda: self.ticks[reqId].__setitem__(tickType, price))

    def tickSize(self, reqId: int, tickType: int, size: Decimal) -> None:
        self._note(lambda: self.ticks[reqId].__setitem__(tickType, float(size)))

    def tickOptionComputation(
        self,
        reqId: int,
        tickType: int,
        tickAttrib: int,
        impliedVol: float,
        delta: float,
        optPrice: float,
        pvDividend: float,
        gamma: float,
        vega: float,
        theta: float,
        undPrice: float,
    ) -> None:
        figures = (impliedVol, delta, optPrice, gamma, vega, theta, undPrice)
        self._note(lambda: self.greeks[reqId].__setitem__(tickType, figures))

    def accountSummary(self, reqId: int, account: str, tag: str, value: str, currency: str) -> None:
        row = (account, tag, value, currency)

        def note() -> None:
            self.summary[reqId].append(row)
            self._summary_batch[reqId].append(row)

        self._note(note)

    def accountSummaryEnd(self, reqId: int) -> None:
        def note() -> None:
            self.summary_batches[reqId].append(self._summary_batch.pop(reqId, []))
            self.ended.add(("accountSummary", reqId))

        self._note(note)

    def position(self, account: str, contract: Contract, position: Decimal, avgCost: float) -> None:
        self._note(lambda: self.positions.__setitem__(contract.conId, (account, position, avgCost)))

    def positionEnd(self) -> None:
        def note() -> None:
            self.position_ends += 1

        self._note(note)

    def orderStatus(
        self,
        orderId: int,
        status: str,
        filled: Decimal,
        remaining: Decimal,
        avgFillPrice: float,
        permId: int,
        parentId: int,
        lastFillPrice: float,
        clientId: int,
        whyHeld: str,
        mktCapPrice: float,
    ) -> None:
        def note() -> None:
            seen = self.orders[orderId]
            seen.statuses.append(status)
            seen.filled = float(filled)
            seen.avg_fill_price = avgFillPrice
            seen.perm_id = permId
            seen.parent_id = parentId

        self._note(note)

    def openOrder(
        self, orderId: int, contract: Contract, order: Order, orderState: OrderState
    ) -> None:
        self._note(lambda: setattr(self.orders[orderId], "open_order", order))

    def openOrderEnd(self) -> None:
        def note() -> None:
            self.open_order_ends += 1

        self._note(note)

    def execDetails(self, reqId: int, contract: Contract, execution: Execution) -> None:
        self._note(lambda: self.executions[reqId].append((contract, execution)))

    def execDetailsEnd(self, reqId: int) -> None:
        self._note(lambda: self.ended.add(("execDetails", reqId)))

    def commissionAndFeesReport(self, commissionAndFeesReport: CommissionAndFeesReport) -> None:
        self._note(lambda: self.commissions.append(commissionAndFeesReport))

    def completedOrder(self, contract: Contract, order: Order, orderState: OrderState) -> None:
        self._note(lambda: self.completed.append((contract, order, orderState)))

    def completedOrdersEnd(self) -> None:
        def note() -> None:
            self.completed_ends += 1

        self._note(note)


def stock(symbol: str) -> Contract:
    c = Contract()
    c.symbol = symbol
    c.secType = "STK"
    c.exchange = "SMART"
    c.currency = "USD"
    return c


def option(symbol: str, expiry: str, strike: float, right: str, trading_class: str) -> Contract:
    c = Contract()
    c.symbol = symbol
    c.secType = "OPT"
    c.exchange = "SMART"
    c.currency = "USD"
    c.lastTradeDateOrContractMonth = expiry
    c.strike = strike
    c.right = right
    c.multiplier = "100"
    c.tradingClass = trading_class
    return c


def limit_order(action: str, quantity: float, price: float, **kw: Any) -> Order:
    o = Order()
    o.action = action
    o.orderType = "LMT"
    o.totalQuantity = Decimal(str(quantity))
    o.lmtPrice = price
    # ibapi 10.x sends these by default as True; IB rejects them for API orders (error 10268).
    o.eTradeOnly = False
    o.firmQuoteOnly = False
    for k, v in kw.items():
        setattr(o, k, v)
    return o


def stop_order(action: str, quantity: float, price: float, **kw: Any) -> Order:
    o = limit_order(action, quantity, 0.0, **kw)
    o.orderType = "STP"
    o.auxPrice = price
    o.lmtPrice = 0.0
    return o

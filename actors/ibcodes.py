"""IB's error codes, once: what each means to the service and the class its metric label uses.

Checked against /work/shared/IBKR.md (its error code table, from IB's TWS API message codes
page) and ib_async's wrapper.error (2100-2199 and a few others are warnings there too).
The connection, the metrics, the order book and the doctor all read them from here.
"""

from __future__ import annotations

# -- the connection ------------------------------------------------------------------------
NOT_CONNECTED = 504
CANNOT_CONNECT = 502
CLIENT_ID_IN_USE = 326
CONNECTIVITY_LOST = 1100
RESTORED_DATA_LOST = 1101  # everything must be requested again
RESTORED_DATA_KEPT = 1102
SOCKET_PORT_RESET = 1300
COMPETING_SESSION = 10197  # "No market data during competing live session"

# Farm outages degrade the connection until the matching "OK" arrives.
FARM_BROKEN = {2103: "farm:market_data", 2105: "farm:historical", 2157: "farm:secdef"}
FARM_OK = {2104: "farm:market_data", 2106: "farm:historical", 2158: "farm:secdef"}
FARM_INACTIVE = frozenset({2107, 2108})  # inactive but available: nothing to do

# -- market data -------------------------------------------------------------------------------
# Entitlement errors, what each means (IB error code list); none is a connection fault.
ENTITLEMENT_TEXT = {
    354: "not subscribed to this market data",
    10089: "the market data needs an additional subscription for API use",
    10091: "part of the market data needs an additional subscription for API use",
    10168: "not subscribed, and delayed market data is not enabled",
    10186: "not subscribed, and delayed market data is not enabled",
}
ENTITLEMENT = frozenset(ENTITLEMENT_TEXT)
# Entitlement errors that delayed data cannot help: it is not enabled, or is already in use.
NO_DELAYED = frozenset({10168, 10186})
PARTLY_SUBSCRIBED = 10090  # part of the data (greeks) not subscribed
DELAYED_INSTEAD = 10167  # not subscribed, delayed data shown instead: informational
HISTORICAL_ERROR = 162  # the historical data service's errors, pacing violations included
HISTORICAL_QUERY_ENDED = 165
HISTORICAL_CANCEL_DONE = 366  # cancel of a finished historical query
MESSAGE_RATE = 100
TOO_MANY_LINES = 101
FROZEN_TICKER_ID = 300  # "Can't find EId with ticker Id": the request is gone
NO_SECURITY_DEFINITION = 200
# Logged at debug only: they come with every connect or every finished request.
QUIET = frozenset({*FARM_INACTIVE, 2119, HISTORICAL_CANCEL_DONE, DELAYED_INSTEAD})

# -- orders ------------------------------------------------------------------------------------
DUPLICATE_ORDER_ID = 103
OFF_TICK = 110
ORDER_REJECTED = 201
ORDER_CANCELLED = 202
READ_ONLY = 321  # validation error, "API is in Read-Only mode" among them
ORDER_WARNING = 399
CANCEL_NOT_FOUND = 10147
CANCEL_NOT_ALLOWED = 10148  # already filled, or otherwise past cancelling
# IB errors that refuse a cancel: the order is filled or otherwise not cancellable, and stays so.
CANCEL_REFUSED = frozenset({161, CANCEL_NOT_ALLOWED})

# Error codes worth their own metric label value; everything else is "other". Keeps cardinality
# fixed.
ERROR_CLASSES = {
    "connectivity": {
        CANNOT_CONNECT,
        NOT_CONNECTED,
        CLIENT_ID_IN_USE,
        CONNECTIVITY_LOST,
        RESTORED_DATA_LOST,
        RESTORED_DATA_KEPT,
        SOCKET_PORT_RESET,
        COMPETING_SESSION,
    },
    "farm": {*FARM_BROKEN, *FARM_OK, *FARM_INACTIVE},
    "entitlement": {*ENTITLEMENT, PARTLY_SUBSCRIBED, DELAYED_INSTEAD},
    "historical": {HISTORICAL_ERROR, HISTORICAL_QUERY_ENDED, HISTORICAL_CANCEL_DONE},
    "pacing": {MESSAGE_RATE, TOO_MANY_LINES},
    "contract": {NO_SECURITY_DEFINITION},
    "order": {
        DUPLICATE_ORDER_ID,
        OFF_TICK,
        ORDER_REJECTED,
        ORDER_CANCELLED,
        READ_ONLY,
        ORDER_WARNING,
        CANCEL_NOT_FOUND,
        CANCEL_NOT_ALLOWED,
    },
}


def answers_a_cancel(code: int, text: str = "") -> bool:
    """IB's answer to our own cancel of a historical request: 162 "API historical data query
    cancelled: N" for a live one, 366 for one already finished. Routine, never a fault (IB's
    message codes page; ib_insync #268 shows the 162 after a cancel)."""
    return code == HISTORICAL_CANCEL_DONE or (
        code == HISTORICAL_ERROR and "query cancelled" in (text or "").lower()
    )


def error_class(code: int, text: str = "") -> str:
    """The metric label of an IB error. A cancel's answer is "info": the pacing/historical
    alert must not fire for every stream the service closes."""
    if answers_a_cancel(code, text):
        return "info"
    for name, codes in ERROR_CLASSES.items():
        if code in codes:
            return name
    return "info" if 2100 <= code <= 2199 else "other"


def error_code(reason: str) -> int | None:
    """IB's error code at the head of a status reason ("201 Order rejected - ..."), or None."""
    head = (reason or "").split(" ", 1)[0]
    return int(head) if head.isdigit() else None

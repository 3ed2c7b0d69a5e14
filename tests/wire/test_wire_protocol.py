"""Wire format without sockets: requests as ib_async encodes them, replies as ib_async decodes them."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from ib_async import LimitOrder, Option, Order, Stock, TagValue
from ib_async.client import Client
from ib_async.decoder import Decoder
from ib_async.util import UNSET_DOUBLE

from sim import protocol as P
from sim.orders import SimContract, SimExecution, SimOrder

VERSIONS = [157, 158, 159, 160, 162, 163, 164, 165, 166, 169, 170, 176, 177, 178]


class Recorder:
    """Stands in for ib_async's Wrapper and records every callback."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.defaultTimezone = UTC
        self.ib = SimpleNamespace(TimezoneTWS=None)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def record(*args: Any) -> None:
            self.calls.append((name, args))

        return record


def client_request(version: int, call: str, *args: Any) -> list[str]:
    """The fields ib_async's Client sends for one request at `version`."""
    sent: list[str] = []
    c = Client(Recorder())
    c.connState = Client.CONNECTED
    c._serverVersion = version
    c.sendMsg = sent.append  # type: ignore[method-assign]
    getattr(c, call)(*args)
    [msg] = sent
    return msg.split("\0")[:-1]


def decode(version: int, fields: list[Any], method: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Run ib_async's decoder method directly so that field misalignment raises instead of being logged."""
    rec = Recorder()
    text = P.decode_payload(P.encode_payload(fields))
    getattr(Decoder(rec, version), method)(text)
    return rec.calls


def assert_exact(version: int, fields: list[Any], method: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Decodes, and dropping the last field breaks decoding: the decoder reads exactly what we sent."""
    calls = decode(version, fields, method)
    with pytest.raises((ValueError, IndexError, StopIteration)):
        decode(version, fields[:-1], method)
    return calls


OPT = SimContract(
    con_id=1234567890,
    symbol="SPY",
    sec_type="OPT",
    expiry="20261127",
    strike=680.0,
    right="C",
    multiplier="100",
    exchange="SMART",
    currency="USD",
    local_symbol="SPY   261127C00680000",
    trading_class="SPY",
)
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def sim_order(**kw: Any) -> SimOrder:
    base: dict[str, Any] = dict(
        client_id=3,
        order_id=17,
        perm_id=1_000_000_123,
        contract=OPT,
        action="BUY",
        total_quantity=2.0,
        order_type="LMT",
        lmt_price=3.45,
        aux_price=None,
        tif="DAY",
        oca_group="",
        oca_type=0,
        account="DU123456",
        open_close="",
        origin=0,
        order_ref="ref-17",
        transmit=True,
        parent_id=16,
        outside_rth=False,
        hidden=False,
        good_after_time="",
        good_till_date="",
        all_or_none=False,
        min_qty=None,
        trail_stop_price=None,
        trailing_percent=None,
        what_if=False,
        algo_strategy="",
        created=NOW,
        status="Submitted",
    )
    base.update(kw)
    return SimOrder(**base)


# ---------------------------------------------------------------------- fields and frames


def test_encode_field_rules() -> None:
    assert P.encode_field(None) == ""
    assert P.encode_field(True) == "1" and P.encode_field(False) == "0"
    assert P.encode_field(P.UNSET_INTEGER) == "" and P.encode_field(P.UNSET_DOUBLE) == ""
    assert P.encode_field(0.1 + 0.2) == "0.3"
    assert P.encode_field(680.0) == "680"
    assert P.encode_field(float("nan")) == ""
    assert P.encode_field(float("inf")) == "Infinite"
    assert P.encode_field(-2) == "-2"
    assert float(P.UNSET_DOUBLE_TEXT) == UNSET_DOUBLE


def test_frame_buffer_handles_split_and_batched_frames() -> None:
    frames = P.encode_frame([49, 1]) + P.encode_frame(["a", "", 3.5])
    buf = P.FrameBuffer()
    out = []
    for i in range(len(frames)):
        out += buf.feed(frames[i : i + 1])
    assert out == [["49", "1"], ["a", "", "3.5"]]
    assert P.FrameBuffer().feed(frames) == out


@pytest.mark.parametrize(
    "data",
    [struct.pack(">I", 0), struct.pack(">I", P.MAX_FRAME_BYTES + 1), struct.pack(">I", 3) + b"abc"],
)
def test_frame_buffer_rejects_malformed_frames(data: bytes) -> None:
    with pytest.raises(P.ProtocolError):
        P.FrameBuffer().feed(data)


def test_handshake_parsing() -> None:
    hello = b"API\0" + struct.pack(">I", 9) + b"v157..178"
    for cut in range(len(hello)):
        if hello[:cut] and not b"API\0".startswith(hello[:4][:cut]):
            break
        assert P.parse_handshake(hello[:cut]) is None
    hs = P.parse_handshake(hello + b"extra")
    assert (hs.min_version, hs.max_version, hs.options, hs.consumed) == (157, 178, "", len(hello))
    paced = P.parse_handshake(b"API\0" + struct.pack(">I", 18) + b"v157..176 +PACEAPI")
    assert (paced.min_version, paced.max_version, paced.options) == (157, 176, "+PACEAPI")
    single = P.parse_handshake(b"API\0" + struct.pack(">I", 4) + b"v176")
    assert (single.min_version, single.max_version) == (176, 176)
    with pytest.raises(P.ProtocolError):
        P.parse_handshake(b"GET / HTTP/1.1\r\n")
    with pytest.raises(P.ProtocolError):
        P.parse_handshake(b"API\0" + struct.pack(">I", 5) + b"hello")


@pytest.mark.parametrize(
    ("lo", "hi", "server", "expected"),
    [
        (157, 178, 176, 176),
        (157, 176, 176, 176),
        (157, 178, 178, 178),
        (157, 170, 176, 170),
        (157, 200, 190, 178),
        (100, 150, 176, None),
        (177, 178, 176, None),
    ],
)
def test_choose_version(lo: int, hi: int, server: int, expected: int | None) -> None:
    assert P.choose_version(lo, hi, server) == expected


def test_connection_time_and_timestamps() -> None:
    assert P.format_connection_time(NOW) == "20261120 10:00:00 EST"
    assert P.format_ib_time(NOW) == "20261120 10:00:00 US/Eastern"
    assert P.format_bar_time(NOW, 2, False) == str(int(NOW.timestamp()))
    assert P.format_bar_time(NOW, 1, True) == "20261120"


@pytest.mark.parametrize(
    "text",
    [
        "20261120 15:00:00 UTC",
        "20261120-15:00:00",
        "20261120 10:00:00 US/Eastern",
        "20261120 10:00:00",
        "20261120  10:00:00",
    ],
)
def test_parse_end_datetime(text: str) -> None:
    assert P.parse_ib_datetime(text) == NOW


def test_parse_end_datetime_edge_cases() -> None:
    assert P.parse_ib_datetime("") is None
    assert P.parse_ib_datetime("20261120") == datetime(2026, 11, 21, 4, 59, 59, tzinfo=UTC)
    with pytest.raises(ValueError):
        P.parse_ib_datetime("yesterday")


def test_occ_symbols() -> None:
    assert P.occ_local_symbol("SPY", "20261127", 680.0, "C") == "SPY   261127C00680000"
    assert P.occ_local_symbol("IWM", "20261218", 242.5, "P") == "IWM   261218P00242500"
    assert P.parse_occ_local_symbol("SPY   261127C00680000") == ("SPY", "20261127", 680.0, "C")
    assert P.parse_occ_local_symbol("SPY") is None


# ---------------------------------------------------------------------- requests as ib_async sends them


@pytest.mark.parametrize("version", VERSIONS)
def test_place_order_decodes_for_every_version(version: int) -> None:
    contract = Option(
        "SPY", "20261127", 680.0, "C", "SMART", conId=OPT.con_id, multiplier="100", currency="USD"
    )
    order = LimitOrder(
        "SELL",
        3,
        4.25,
        orderRef="tp-1",
        transmit=False,
        parentId=41,
        tif="GTC",
        ocaGroup="g1",
        ocaType=1,
    )
    order.goodTillDate = "20261130 16:00:00 US/Eastern"
    fields = client_request(version, "placeOrder", 42, contract, order)
    req = P.decode_place_order(fields, version)
    assert req.order_id == 42
    assert (req.contract.con_id, req.contract.symbol, req.contract.sec_type) == (
        OPT.con_id,
        "SPY",
        "OPT",
    )
    assert (req.contract.expiry, req.contract.strike, req.contract.right) == (
        "20261127",
        680.0,
        "C",
    )
    assert (req.action, req.total_quantity, req.order_type, req.lmt_price, req.aux_price) == (
        "SELL",
        3.0,
        "LMT",
        4.25,
        None,
    )
    assert (req.tif, req.oca_group, req.oca_type, req.order_ref) == ("GTC", "g1", 1, "tp-1")
    assert (req.transmit, req.parent_id, req.what_if) == (False, 41, False)
    assert req.good_till_date == "20261130 16:00:00 US/Eastern"


@pytest.mark.parametrize("version", [157, 176, 178])
def test_place_order_skips_optional_blocks(version: int) -> None:
    order = Order(action="BUY", totalQuantity=5, orderType="STP", auxPrice=1.5, whatIf=True)
    order.hedgeType, order.hedgeParam = "D", "0.5"
    order.deltaNeutralOrderType = "LMT"
    order.scalePriceIncrement = 0.05
    order.algoStrategy = "Adaptive"
    order.algoParams = [TagValue("adaptivePriority", "Normal"), TagValue("x", "y")]
    order.minQty = 2
    fields = client_request(version, "placeOrder", 7, Stock("SPY", "SMART", "USD"), order)
    req = P.decode_place_order(fields, version)
    assert (req.order_type, req.aux_price, req.lmt_price, req.total_quantity) == (
        "STP",
        1.5,
        None,
        5.0,
    )
    assert (req.what_if, req.algo_strategy, req.min_qty) == (True, "Adaptive", 2)
    assert req.transmit is True


def test_other_requests_decode() -> None:
    opt = Option("SPY", "20261127", 680.0, "C", "SMART")
    md = P.decode_req_mkt_data(
        client_request(176, "reqMktData", 9, opt, "100,101,106", True, False, [])
    )
    assert (md.req_id, md.contract.symbol, md.generic_ticks, md.snapshot) == (
        9,
        "SPY",
        "100,101,106",
        True,
    )
    cd = P.decode_req_contract_details(client_request(176, "reqContractDetails", 4, opt))
    assert (cd.req_id, cd.contract.right, cd.contract.strike) == (4, "C", 680.0)
    hd = P.decode_req_historical_data(
        client_request(
            176,
            "reqHistoricalData",
            5,
            Stock("SPY", "SMART", "USD"),
            "",
            "2 D",
            "5 mins",
            "MIDPOINT",
            True,
            2,
            True,
            [],
        )
    )
    assert (
        hd.req_id,
        hd.duration,
        hd.bar_size,
        hd.what_to_show,
        hd.format_date,
        hd.keep_up_to_date,
        hd.use_rth,
    ) == (
        5,
        "2 D",
        "5 mins",
        "MIDPOINT",
        2,
        True,
        True,
    )
    from ib_async import ExecutionFilter

    ex = P.decode_req_executions(
        client_request(
            176, "reqExecutions", 8, ExecutionFilter(clientId=3, symbol="SPY", side="BUY")
        )
    )
    assert (ex.req_id, ex.client_id, ex.symbol, ex.side) == (8, 3, "SPY", "BUY")


# ---------------------------------------------------------------------- replies as ib_async reads them


@pytest.mark.parametrize("version", VERSIONS)
def test_open_order_is_read_exactly(version: int) -> None:
    order = sim_order()
    state = P.OrderStateData("Submitted", commission=1.3, warning_text="careful")
    [(name, (order_id, contract, o, st))] = assert_exact(
        version, P.msg_open_order(version, order, state), "openOrder"
    )
    assert name == "openOrder" and order_id == 17
    assert (contract.conId, contract.localSymbol, contract.multiplier) == (
        OPT.con_id,
        OPT.local_symbol,
        "100",
    )
    assert (o.action, o.totalQuantity, o.orderType, o.lmtPrice, o.auxPrice) == (
        "BUY",
        2.0,
        "LMT",
        3.45,
        UNSET_DOUBLE,
    )
    assert (o.orderRef, o.clientId, o.permId, o.parentId, o.tif) == (
        "ref-17",
        3,
        1_000_000_123,
        16,
        "DAY",
    )
    assert (st.status, st.commission, st.warningText) == ("Submitted", 1.3, "careful")


@pytest.mark.parametrize("version", VERSIONS)
def test_open_order_with_algo_is_read_exactly(version: int) -> None:
    order = sim_order(algo_strategy="Adaptive", what_if=True)
    state = P.OrderStateData("PreSubmitted", init_margin_change="345.00")
    [(_, (_, _, o, st))] = assert_exact(
        version, P.msg_open_order(version, order, state), "openOrder"
    )
    assert (o.algoStrategy, o.whatIf, st.status, st.initMarginChange) == (
        "Adaptive",
        True,
        "PreSubmitted",
        "345.00",
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_completed_order_is_read_exactly(version: int) -> None:
    order = sim_order(status="Filled", filled=2.0, parent_perm_id=1_000_000_122)
    fields = P.msg_completed_order(
        version, order, "Filled", "20261120 10:01:00 US/Eastern", "Filled Size: 2"
    )
    [(name, (contract, o, st))] = assert_exact(version, fields, "completedOrder")
    assert name == "completedOrder"
    assert (contract.conId, o.permId, o.orderRef, o.filledQuantity, o.parentPermId) == (
        OPT.con_id,
        1_000_000_123,
        "ref-17",
        2.0,
        1_000_000_122,
    )
    assert (st.status, st.completedTime, st.completedStatus) == (
        "Filled",
        "20261120 10:01:00 US/Eastern",
        "Filled Size: 2",
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_execution_is_read_exactly(version: int) -> None:
    e = SimExecution(
        exec_id="0000e0d5.6543a1b2.01.01",
        time=NOW,
        account="DU123456",
        exchange="CBOE",
        side="BOT",
        shares=2.0,
        price=3.45,
        perm_id=1_000_000_123,
        client_id=3,
        order_id=17,
        cum_qty=2.0,
        avg_price=3.45,
        order_ref="ref-17",
        contract=OPT,
        commission=1.3,
        realized_pnl=None,
    )
    [(name, (req_id, contract, ex))] = assert_exact(
        version, P.msg_execution(version, -1, e), "execDetails"
    )
    assert (name, req_id, contract.conId) == ("execDetails", -1, OPT.con_id)
    assert (ex.execId, ex.orderId, ex.permId, ex.clientId, ex.shares, ex.price, ex.orderRef) == (
        "0000e0d5.6543a1b2.01.01",
        17,
        1_000_000_123,
        3,
        2.0,
        3.45,
        "ref-17",
    )
    assert ex.time == NOW and ex.side == "BOT" and ex.lastLiquidity == 2
    [(_, (report,))] = assert_exact(
        version, P.msg_commission_report(e.exec_id, 1.3, "USD", None), "commissionReport"
    )
    assert (report.execId, report.commission, report.realizedPNL) == (e.exec_id, 1.3, UNSET_DOUBLE)


@pytest.mark.parametrize("version", VERSIONS)
def test_contract_data_is_read_exactly(version: int) -> None:
    details = P.ContractDetailsData(
        market_name="SPY",
        min_tick=0.01,
        order_types="LMT,MKT",
        valid_exchanges="SMART,CBOE",
        under_con_id=756733,
        long_name="SPDR S&P 500 ETF TRUST",
        contract_month="202611",
        industry="",
        category="",
        subcategory="",
        time_zone_id="US/Eastern",
        trading_hours="20261120:0930-20261120:1600",
        liquid_hours="20261120:0930-20261120:1600",
        agg_group=2,
        under_symbol="SPY",
        under_sec_type="STK",
        market_rule_ids="110,110",
        real_expiration_date="20261127",
        stock_type="",
        suggested_size_increment=1.0,
    )
    [(name, (req_id, cd))] = assert_exact(
        version, P.msg_contract_data(version, 4, OPT, details), "contractDetails"
    )
    c = cd.contract
    assert (name, req_id, c.conId, c.symbol, c.secType) == (
        "contractDetails",
        4,
        OPT.con_id,
        "SPY",
        "OPT",
    )
    assert (c.lastTradeDateOrContractMonth, c.strike, c.right, c.multiplier, c.localSymbol) == (
        "20261127",
        680.0,
        "C",
        "100",
        OPT.local_symbol,
    )
    assert (cd.minTick, cd.underConId, cd.longName, cd.timeZoneId, cd.marketRuleIds) == (
        0.01,
        756733,
        "SPDR S&P 500 ETF TRUST",
        "US/Eastern",
        "110,110",
    )
    assert (cd.underSymbol, cd.realExpirationDate, cd.liquidHours) == (
        "SPY",
        "20261127",
        "20261120:0930-20261120:1600",
    )


@pytest.mark.parametrize("version", [157, 165, 166, 176, 178])
def test_error_is_read_exactly(version: int) -> None:
    [(name, args)] = assert_exact(
        version, P.msg_error(version, 12, 202, "Order Canceled - reason:"), "errorMsg"
    )
    assert name == "error" and args == (12, 202, "Order Canceled - reason:", "")


def test_other_messages_are_read_exactly() -> None:
    order = sim_order(status="Filled", filled=2.0, avg_fill_price=3.45, last_fill_price=3.45)
    rec = Recorder()
    dec = Decoder(rec, 176)
    dec.interpret(P.decode_payload(P.encode_payload(P.msg_order_status(order))))
    assert rec.calls == [
        ("orderStatus", (17, "Filled", 2.0, 0.0, 3.45, 1_000_000_123, 16, 3.45, 3, "", 0.0))
    ]
    assert_exact(
        176,
        P.msg_portfolio_value(OPT, 2.0, 3.5, 700.0, 345.65, 9.0, 0.0, "DU123456"),
        "updatePortfolio",
    )
    [(_, (account, c, pos, cost))] = assert_exact(
        176, P.msg_position("DU123456", OPT, 2.0, 345.65), "position"
    )
    assert (account, c.conId, pos, cost) == ("DU123456", OPT.con_id, 2.0, 345.65)
    [(_, comp)] = assert_exact(
        176,
        P.msg_tick_option_computation(5, 13, 0.16, 0.4, 3.4, 0.0, 0.03, 0.3, -0.5, 680.0),
        "tickOptionComputation",
    )
    assert comp == (5, 13, 0, 0.16, 0.4, 3.4, 0.0, 0.03, 0.3, -0.5, 680.0)
    [(_, tick)] = assert_exact(176, P.msg_tick_price(5, 1, 3.4, 12, 1), "priceSizeTick")
    assert tick == (5, 1, 3.4, 12.0)
    rows = [
        P.BarRow("1795186800", 1.0, 2.0, 0.5, 1.5, 100, 1.2, 7),
        P.BarRow("1795186860", 1.5, 1.6, 1.4, 1.5, 0, 1.5, 0),
    ]
    calls = assert_exact(176, P.msg_historical_data(3, "a", "b", rows), "historicalData")
    assert [c[0] for c in calls] == ["historicalData", "historicalData", "historicalDataEnd"]
    bar = calls[0][1][1]
    assert (
        bar.date,
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        bar.volume,
        bar.average,
        bar.barCount,
    ) == ("1795186800", 1.0, 2.0, 0.5, 1.5, 100.0, 1.2, 7)
    [(_, (req_id, upd))] = assert_exact(
        176, P.msg_historical_data_update(3, rows[0]), "historicalDataUpdate"
    )
    assert (req_id, upd.open, upd.high, upd.low, upd.close, upd.volume, upd.barCount) == (
        3,
        1.0,
        2.0,
        0.5,
        1.5,
        100.0,
        7,
    )
    # The decoder takes every trailing field as a strike, so equality of the lists is the exactness check.
    [(_, params)] = decode(
        176,
        P.msg_sec_def_opt_params(
            2, "SMART", 756733, "SPY", "100", ["20261120", "20261127"], [679.0, 680.0]
        ),
        "securityDefinitionOptionParameter",
    )
    assert params == (2, "SMART", "756733", "SPY", "100", ["20261120", "20261127"], [679.0, 680.0])
    [(_, (rule, incs))] = assert_exact(
        176, P.msg_market_rule(32, [(0, 0.01), (3, 0.05)]), "marketRule"
    )
    assert rule == 32 and [(i.lowEdge, i.increment) for i in incs] == [(0.0, 0.01), (3.0, 0.05)]

"""Every metric the service exports, in one place, with one prefix and base units."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from actors.ibcodes import ERROR_CLASSES
from machines.connection import ConnState
from machines.order import OrderState

PREFIX = "optionsbot"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class Metrics:
    """The metric objects, bound to one registry (a fresh one per test)."""

    registry: CollectorRegistry

    def __post_init__(self) -> None:
        r, p = self.registry, PREFIX
        self.build_info = Info(f"{p}_build", "Build and run mode of the service", registry=r)
        self.cycles = Counter(
            f"{p}_cycles_total", "Closed bars processed end to end", ["symbol"], registry=r
        )
        self.bar_to_decision = Histogram(
            f"{p}_bar_to_decision_seconds",
            "From a closed bar's arrival to the strategy's decision",
            ["strategy"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bars = Counter(
            f"{p}_bars_total", "Closed bars received", ["symbol", "bar_size"], registry=r
        )
        self.bars_skipped = Counter(
            f"{p}_bars_skipped_total",
            "Bars dropped as bad, with the reason",
            ["symbol", "reason"],
            registry=r,
        )
        self.quotes_rejected = Counter(
            f"{p}_quotes_rejected_total",
            "Streamed quotes neither filled on nor priced from, with the reason",
            ["symbol", "reason"],
            registry=r,
        )
        self.last_bar_age = Gauge(
            f"{p}_last_bar_age_seconds",
            "Simulated/market seconds since the last 1-minute bar",
            ["symbol"],
            registry=r,
        )
        self.data_stale = Gauge(
            f"{p}_data_stale",
            "1 while a symbol's data is stale in market hours",
            ["symbol"],
            registry=r,
        )
        self.signals = Counter(
            f"{p}_signals_total",
            "Strategy outputs by direction",
            ["symbol", "strategy", "direction"],
            registry=r,
        )
        self.decisions = Counter(
            f"{p}_decisions_total",
            "Trade decisions by stage, outcome and reason",
            ["stage", "outcome", "reason"],
            registry=r,
        )
        self.connection_state = Enum(
            f"{p}_connection_state",
            "Connection machine state",
            states=[s.value for s in ConnState],
            registry=r,
        )
        self.connection_transitions = Counter(
            f"{p}_connection_transitions_total",
            "Connection machine transitions",
            ["trigger", "dest"],
            registry=r,
        )
        self.breaker_trips = Counter(
            f"{p}_breaker_trips_total", "Times the circuit breaker opened", registry=r
        )
        self.reconnects = Counter(
            f"{p}_reconnects_total", "Connection attempts after the first", registry=r
        )
        self.realtime_resubscribed = Counter(
            f"{p}_realtime_resubscribed_total",
            "Real-time bar subscriptions asked again: silent after error 100 (dropped with it)",
            registry=r,
        )
        self.client_id = Gauge(f"{p}_client_id", "The API client id in use", registry=r)
        self.gateway_routine = Gauge(
            f"{p}_gateway_routine",
            "1 while a Gateway routine window is under way (broker.routines: the nightly reset, "
            "the daily restart, the weekly re-login): outages are expected, the breaker holds",
            ["routine"],
            registry=r,
        )
        self.requests = Counter(
            f"{p}_requests_total", "Requests sent to the Gateway", ["kind"], registry=r
        )
        self.request_timeouts = Counter(
            f"{p}_request_timeouts_total", "Requests that timed out", ["kind"], registry=r
        )
        self.request_seconds = Histogram(
            f"{p}_request_seconds",
            "Request round trip",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ib_errors = Counter(
            f"{p}_ib_errors_total",
            "Error messages from the Gateway by class",
            ["class"],
            registry=r,
        )
        self.pacing_queue_depth = Gauge(
            f"{p}_pacing_queue_depth", "Requests waiting for their pacing slot", registry=r
        )
        self.pacing_wait = Histogram(
            f"{p}_pacing_wait_seconds",
            "Time a request waited for pacing",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.messages_sent = Counter(
            f"{p}_messages_sent",
            "Messages sent to the Gateway, by class (orders go before data)",
            ["class"],
            registry=r,
        )
        self.send_queue_depth = Gauge(
            f"{p}_send_queue_depth",
            "Messages waiting for the message-rate limit, by class",
            ["class"],
            registry=r,
        )
        self.market_data_type = Gauge(
            f"{p}_market_data_type",
            "Market data type in use: 1 live, 2 frozen, 3 delayed, 4 delayed frozen",
            registry=r,
        )
        self.market_data_lines = Gauge(
            f"{p}_market_data_lines", "Streaming quote lines in use", registry=r
        )
        self.quotes_from_lines = Counter(
            f"{p}_quotes_from_lines_total",
            "Entries whose option quotes were all on warm lines already: no request sent",
            registry=r,
        )
        self.orders = Gauge(f"{p}_orders", "Orders by state", ["state"], registry=r)
        for s in OrderState:
            self.orders.labels(s.value).set(0)
        self.order_transitions = Counter(
            f"{p}_order_transitions_total",
            "Order machine transitions by destination",
            ["state"],
            registry=r,
        )
        self.fills = Counter(
            f"{p}_fills_total", "Executions recorded", ["symbol", "side"], registry=r
        )
        self.order_ack = Histogram(
            f"{p}_order_ack_seconds",
            "From submit to acknowledgement",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.open_positions = Gauge(f"{p}_open_positions", "Open option positions", registry=r)
        self.position_contracts = Gauge(
            f"{p}_position_contracts", "Contracts held per underlying", ["symbol"], registry=r
        )
        self.realized_pnl = Gauge(f"{p}_realized_pnl_usd", "Realized P&L today", registry=r)
        self.unrealized_pnl = Gauge(
            f"{p}_unrealized_pnl_usd", "Unrealized P&L of open positions", registry=r
        )
        self.equity = Gauge(f"{p}_equity_usd", "Account equity (net liquidation)", registry=r)
        self.start_equity = Gauge(
            f"{p}_start_of_day_equity_usd", "Equity at the start of the NY trading day", registry=r
        )
        self.loss_guard = Gauge(
            f"{p}_daily_loss_guard", "1 when the daily loss guard blocks entries", registry=r
        )
        self.kill_switch = Gauge(
            f"{p}_kill_switch", "1 when the kill switch blocks entries", registry=r
        )
        self.market_open = Gauge(
            f"{p}_market_open", "1 while the exchange is in regular hours", registry=r
        )
        self.sim_time = Gauge(
            f"{p}_clock_timestamp_seconds",
            "The service clock (simulated when embedded)",
            registry=r,
        )
        self.reconciliation_mismatches = Counter(
            f"{p}_reconciliation_mismatches_total",
            "Orders at the broker the service did not place, or executions for unknown orders",
            registry=r,
        )
        self.unvouched = Gauge(
            f"{p}_unvouched_broker_state",
            "Positions and working orders at the broker that the database does not know (1 for "
            "a rolled-back or another account's database); entries are refused while above 0 "
            "(`optionsbot adopt`)",
            registry=r,
        )
        self.unprotected_positions = Gauge(
            f"{p}_unprotected_positions",
            "Contracts held without a working stop or exit for their full quantity, at the last check",
            registry=r,
        )
        self.overprotected_positions = Gauge(
            f"{p}_overprotected_positions",
            "Contracts whose working exits are for more than is held (a stop would sell short)",
            registry=r,
        )
        self.protection_placed = Counter(
            f"{p}_protection_placed_total",
            "Exits placed by the protection invariant for a position found uncovered",
            ["reason", "action"],
            registry=r,
        )
        self.actor_restarts = Counter(
            f"{p}_actor_failures_total", "Actors that failed", ["actor"], registry=r
        )


def prime(metrics: Metrics, symbols: tuple[str, ...]) -> None:
    """Create the labelled series that must exist at 0 before their first event.

    `increase()` cannot see a counter's first step from absent to 1, so alert rules on
    errors and rejects need the series to start at 0; panels need the per-symbol gauges.
    """
    for cls in (*ERROR_CLASSES, "info", "other"):
        metrics.ib_errors.labels(cls)
    for state in OrderState:
        metrics.order_transitions.labels(state.value)
    metrics.unvouched.set(0)
    for cls in ("orders", "data"):
        metrics.messages_sent.labels(cls)
        metrics.send_queue_depth.labels(cls).set(0)
    for symbol in symbols:
        metrics.data_stale.labels(symbol).set(0)
        metrics.position_contracts.labels(symbol).set(0)
        metrics.cycles.labels(symbol)
        metrics.bars.labels(symbol, "1 min")
        metrics.bars.labels(symbol, "1 hour")


def new_registry(process: bool = True) -> CollectorRegistry:
    registry = CollectorRegistry()
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry


def serve(registry: CollectorRegistry, host: str, port: int):
    """Start the exporter; binds `host` only (prometheus-client binds every interface unless told)."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return server, thread

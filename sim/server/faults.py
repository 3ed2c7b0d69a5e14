"""What the fault injector's faults do to what clients see.

sim/faults.py decides which fault is active when (scenarios, triggers, draws); this module applies
them: disconnects, Gateway restarts, clock jumps, exchange cancels, connectivity and farm messages,
distorted quotes and bars, slippage and partial fills. Faults that refuse or hold a request
before its handler runs are gates (sim/server/gates.py)."""

from __future__ import annotations

import dataclasses
import logging
import math
from datetime import datetime
from typing import Any

from sim.faults import FARM_NAMES, FARM_RECOVERY, FARM_TEXTS, QUOTE_FAULTS, Fault
from sim.market import SimBar
from sim.orders import Quote, SimContract, SimOrder
from sim.server.core import ServerCore
from sim.server.sessions import ClientSession

log = logging.getLogger(__name__)

# What the Gateway tells each client at startApi while every farm is up.
FARM_MESSAGES = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)

MSG_CONNECTIVITY_LOST = "Connectivity between IB and Trader Workstation has been lost."

MSG_RESTORED_DATA_LOST = (
    "Connectivity between IB and Trader Workstation has been restored - data lost."
)

MSG_RESTORED_DATA_KEPT = (
    "Connectivity between IB and Trader Workstation has been restored - data maintained."
)


class FaultsMixin(ServerCore):
    """Starts and ends faults, and distorts quotes, bars and fills while they are active."""

    # connectivity_lost faults in progress: no data flows, historical requests wait.
    _outages: list[Fault]
    # broken farm code (2103/2105/2157) -> the farm fault that broke it.
    _broken_farms: dict[int, Fault]
    # A restarting Gateway refuses connections until this monotonic time.
    _refuse_until: float
    # client id -> monotonic time its session closed (client_id_in_use quick_reconnect);
    # a restart forgets it, as a fresh Gateway would.
    _last_closed: dict[int, float]
    # The reauth_required window in progress: connections are closed on accept until it ends.
    _login_wall: Fault | None
    # server_reset faults in progress -> the phase each is in (even: down, odd: up again).
    _reset_phase: dict[Fault, int]
    # A gateway_restart with lost_seconds: (monotonic time of the drop, down_seconds, its outage).
    _pending_restart: tuple[float, float, Fault] | None

    def _init_faults(self) -> None:
        self._outages = []
        self._broken_farms = {}
        self._refuse_until = -math.inf
        self._last_closed = {}
        self._login_wall = None
        self._reset_phase = {}
        self._pending_restart = None

    def _refusing(self) -> bool:
        """Whether a new connection is closed on accept (restarting, or waiting for a login)."""
        return self.monotonic() < self._refuse_until or self._login_wall is not None

    def _remember_close(self, client_id: int) -> None:
        """A client closed its session: a quick_reconnect client_id_in_use fault counts from now."""
        self._last_closed[client_id] = self.monotonic()

    def _send_farm_status(self, s: ClientSession) -> None:
        """The farm and connectivity state a client is told when its API starts."""
        for code, text in FARM_MESSAGES:
            broken = next((b for b, ok in FARM_RECOVERY.items() if ok == code), None)
            fault = self._broken_farms.get(broken) if broken else None
            if fault is not None:
                s.send_error(-1, broken, FARM_TEXTS[broken].format(farm=fault["farm"]))
            else:
                s.send_error(-1, code, text)
        if self._outages:
            s.send_error(-1, 1100, MSG_CONNECTIVITY_LOST)

    def _fault_origin(self) -> datetime:
        """Where "+15m" in a scenario counts from: the first simulated instant the simulator serves."""
        now = self.clock.now()
        if self.options.skip_closed and not self.market.is_open(now):
            return self.market.next_open(now)
        return now

    def _poll_faults(self, now: datetime) -> None:
        if self._pending_restart is not None and self.monotonic() >= self._pending_restart[0]:
            _, down, outage = self._pending_restart
            self._pending_restart = None
            if outage in self._outages:
                self._outages.remove(outage)
            self._restart(down)
        started, ended = self.faults.poll(now)
        for f in started:
            try:
                self._start_fault(f, now)
            except Exception:
                log.exception("fault %s failed to start", f.label)
        for f in ended:
            try:
                self._end_fault(f, now)
            except Exception:
                log.exception("fault %s failed to end", f.label)
        for f in list(self._reset_phase):
            try:
                self._flap(f, now)
            except Exception:
                log.exception("fault %s failed to flap", f.label)

    def _targets(self, f: Fault) -> list[ClientSession]:
        return [
            s
            for s in list(self.sessions)
            if s.api_started
            and not s.closed
            and (f.client_ids is None or s.client_id in f.client_ids)
        ]

    def _start_fault(self, f: Fault, now: datetime) -> None:
        log.info("fault %s starts at %s", f.label, now.isoformat())
        kind = f.kind
        if kind == "disconnect":
            for s in self._targets(f):
                self.stats["dropped_connections"] += 1
                s.close()
        elif kind == "gateway_restart":
            if f["lost_seconds"] > 0:
                # The Gateway logs out of IB's servers first: 1100 and no data, then the drop.
                self._outages.append(f)
                for s in self._targets(f):
                    s.send_error(-1, 1100, MSG_CONNECTIVITY_LOST)
                due = self.monotonic() + f["lost_seconds"]
                self._pending_restart = (due, f["down_seconds"], f)
            else:
                self._restart(f["down_seconds"])
        elif kind == "reauth_required":
            self.faults.hit(f)
            log.warning("Gateway waits for its weekly login: dropping every client")
            self._login_wall = f
            self._restart(0.0)
        elif kind == "server_reset":
            self.faults.hit(f)
            self._reset_phase[f] = 0
            self._reset_down(f)
        elif kind == "clock_jump":
            self.clock.jump(f["by"])
            self.stats["clock_jumps"] += 1
            self._forget_quotes()
        elif kind == "exchange_cancel":
            reason = f["reason"]
            for order in self.book.live_orders():
                if f.matches(order.contract.symbol if f.symbols else None, order.client_id):
                    self.book.cancel_by_system(order, now, reason=reason)
        elif kind == "connectivity_lost":
            self.faults.hit(f)
            self._outages.append(f)
            for s in self._targets(f):
                s.send_error(-1, 1100, MSG_CONNECTIVITY_LOST)
        elif kind == "farm":
            self.faults.hit(f)
            self._farm_message(f, f["code"])

    def _end_fault(self, f: Fault, now: datetime) -> None:
        log.info("fault %s ends at %s", f.label, now.isoformat())
        if f.kind == "reauth_required":
            if self._login_wall is f:
                self._login_wall = None
            return
        if f.kind == "server_reset":
            phase = self._reset_phase.pop(f, None)
            if phase is not None and phase % 2 == 0:
                self._reset_up(f)
            return
        if f.kind == "connectivity_lost":
            if f in self._outages:
                self._outages.remove(f)
            lost = f["restore"] == "data_lost"
            for s in self._targets(f):
                if lost:
                    s.mkt_subs.clear()
                    s.hist_subs.clear()
                    s.rt_subs.clear()
                    s.send_error(-1, 1101, MSG_RESTORED_DATA_LOST)
                else:
                    s.send_error(-1, 1102, MSG_RESTORED_DATA_KEPT)
            if not self._outages:
                self._release_where(lambda h: h.reason == "outage")
        elif f.kind == "farm" and f["code"] in FARM_RECOVERY:
            self._farm_message(f, FARM_RECOVERY[f["code"]])

    def _farm_message(self, f: Fault, code: int) -> None:
        text = FARM_TEXTS[code].format(farm=f["farm"])
        for s in self._targets(f):
            s.send_error(-1, code, text)
        if code in FARM_RECOVERY:
            self._broken_farms[code] = f
            return
        for broken, ok in FARM_RECOVERY.items():
            if ok == code and self._broken_farms.pop(broken, None) is not None:
                self._release_where(lambda h, why=f"farm:{broken}": h.reason == why)

    def _flap(self, f: Fault, now: datetime) -> None:
        """Move an active server_reset to the phase `now` is in: 2*flaps-1 equal slices of its
        window, down in the even ones and up in the odd ones (the end brings it up for good)."""
        started, ends = self.faults.started_at(f), self.faults.ends_at(f)
        phases = 2 * f["flaps"] - 1
        if started is None or ends is None or ends <= started:
            return  # open-ended: down until it ends
        end = (ends - started).total_seconds()
        phase = min(phases - 1, int((now - started).total_seconds() / (end / phases)))
        while self._reset_phase.get(f, phase) < phase:
            self._reset_phase[f] += 1
            if self._reset_phase[f] % 2 == 0:
                self._reset_down(f)
            else:
                self._reset_up(f)

    def _reset_down(self, f: Fault) -> None:
        if f["style"] == "connectivity":
            if f not in self._outages:
                self._outages.append(f)
            for s in self._targets(f):
                s.send_error(-1, 1100, MSG_CONNECTIVITY_LOST)
            return
        for code in (2103, 2105):
            self._broken_farms[code] = f
            text = FARM_TEXTS[code].format(farm=FARM_NAMES[code])
            for s in self._targets(f):
                s.send_error(-1, code, text)

    def _reset_up(self, f: Fault) -> None:
        if f["style"] == "connectivity":
            if f in self._outages:
                self._outages.remove(f)
            for s in self._targets(f):
                s.send_error(-1, 1102, MSG_RESTORED_DATA_KEPT)
            if not self._outages:
                self._release_where(lambda h: h.reason == "outage")
            return
        for code in (2103, 2105):
            if self._broken_farms.get(code) is f:
                del self._broken_farms[code]
                ok = FARM_RECOVERY[code]
                text = FARM_TEXTS[ok].format(farm=FARM_NAMES[ok])
                for s in self._targets(f):
                    s.send_error(-1, ok, text)
                self._release_where(lambda h, why=f"farm:{code}": h.reason == why)

    def _restart(self, down_seconds: float) -> None:
        log.warning("Gateway restart: dropping every client, down for %.1fs", down_seconds)
        for s in list(self.sessions):
            s.restart_dropped = True
            self.stats["dropped_connections"] += 1
            s.close()
        self._drop_held()
        # A fresh Gateway remembers no client ids and no farm or connectivity trouble.
        self._last_closed.clear()
        self._outages.clear()
        self._broken_farms.clear()
        self._reset_phase.clear()
        self._refuse_until = self.monotonic() + down_seconds

    def _racing_fill_price(self, order: SimOrder, quote: Quote | None) -> float | None:
        if order.order_type in ("LMT", "STP LMT") and order.lmt_price:
            return order.lmt_price
        if order.order_type == "STP" and order.aux_price:
            return order.aux_price
        if quote is None:
            return None
        price = quote.ask if order.action == "BUY" else quote.bid
        return price if price and price > 0 and math.isfinite(price) else None

    def _fill_policy(self, order: SimOrder, price: float, now: datetime) -> tuple[float, float]:
        """Quantity and price of the next fill, as partial_fill and slippage faults change them."""
        qty = order.remaining
        symbol = order.contract.symbol
        slip = self.faults.active("slippage", symbol, order.client_id)
        if slip is not None:
            ticks = self.faults.draw_int(slip, slip["ticks"])
            tick = self._price_tick(order.contract, price)
            worse = price + order.side * ticks * tick
            if order.order_type in ("LMT", "STP LMT") and order.lmt_price:
                worse = (
                    min(worse, order.lmt_price) if order.side > 0 else max(worse, order.lmt_price)
                )
            worse = round(round(worse / tick) * tick, 6)
            if worse > 0 and worse != price:
                self.faults.hit(slip)
                price = worse
        partial = self.faults.active("partial_fill", symbol, order.client_id)
        if partial is not None:
            fraction = self.faults.draw(partial, partial["fraction"])
            part = fill_quantity(qty, fraction, allow_all=False)
            if part < qty:
                self.faults.hit(partial)
                qty = part
        return qty, price

    def _faulty_quote(self, c: SimContract, q: Any, client_id: int | None) -> tuple[Any, bool]:
        """The quote as the client is sent it under the active quote faults; raw: send prices as
        they are (0 and -1 on purpose), not IB's -1 for an empty side."""
        raw = False
        for kind in QUOTE_FAULTS:
            f = self.faults.active(kind, c.symbol, client_id)
            if f is None or f["what"] not in ("both", "option" if c.is_option else "stock"):
                continue
            self.faults.hit(f)
            if kind == "quote_frozen":
                started = self.faults.started_at(f)
                if started is not None:
                    try:
                        q = self._quote(c, started)
                    except (ValueError, KeyError):
                        pass  # not listed yet at the start: nothing was frozen
            elif kind == "quote_crossed":
                q = dataclasses.replace(q, bid=round(q.ask + f["by"], 2))
            else:
                value = 0.0 if kind == "quote_zero" else -1.0
                side = f["side"]
                q = dataclasses.replace(
                    q,
                    bid=value if side in ("bid", "both") else q.bid,
                    ask=value if side in ("ask", "both") else q.ask,
                    # A size of 0 would make ib_async read the side as empty (NaN).
                    bid_size=max(1, q.bid_size),
                    ask_size=max(1, q.ask_size),
                )
                raw = True
        return q, raw

    def _faulty_bars(
        self,
        symbol: str,
        bars: list[SimBar],
        bar_size: int | str,
        client_id: int | None,
        stream: bool,
    ) -> list[SimBar]:
        """1-minute bars as the client is sent them under the active bar faults."""
        if bar_size != 60 or not bars:
            return bars
        out = list(bars)
        if (f := self.faults.active("bar_spike", symbol, client_id)) is not None:
            started = self.faults.started_at(f)
            k, every = f["factor"], f["every"]
            for i, b in enumerate(out):
                if started and b.time >= started and int(b.time.timestamp() // 60) % every == 0:
                    self.faults.hit(f)
                    out[i] = dataclasses.replace(
                        b,
                        open=round(b.open * k, 2),
                        high=round(b.high * k, 2),
                        low=round(b.low * k, 2),
                        close=round(b.close * k, 2),
                        wap=round(b.wap * k, 2),
                    )
        if (f := self.faults.active("bar_duplicate", symbol, client_id)) is not None:
            self.faults.hit(f)
            if stream:
                out = out[:1] + out  # the closed bar again (ib_async drops an unchanged repeat)
            else:
                out = [
                    x for i, b in enumerate(out) for x in ((b, b) if i % f["every"] == 0 else (b,))
                ]
        if (f := self.faults.active("bar_out_of_order", symbol, client_id)) is not None:
            self.faults.hit(f)
            if stream:
                if len(out) >= 2:
                    out = out + [out[-2]]  # an older bar after the newest
            else:
                for i in range(0, len(out) - 1, f["every"]):
                    out[i], out[i + 1] = out[i + 1], out[i]
        return out


def fill_quantity(remaining: float, fraction: float, allow_all: bool) -> float:
    """Whole units of `remaining` for a fill of `fraction`; at least one, and less than all unless allowed."""
    if not float(remaining).is_integer():
        part = remaining * fraction
        return remaining if allow_all and fraction >= 1 else part
    part = math.floor(remaining * fraction + 1e-9)
    if not allow_all and part >= remaining:
        part = remaining - 1
    return float(max(1, min(part, remaining)))

"""`optionsbot doctor`: every thing that can stop the service trading, diagnosed in one command.

Each check is a small function returning a `Check`; the ones that need the Gateway share one
short-lived ib_async `IB()` on its own asyncio loop (never the actors), with its own client id
from the pool. Every request has its own timeout and the whole connected part has a budget, so
the doctor ends in under a minute even when everything times out; a check that could not run
says so ("skipped: ...") instead of hiding, and one failure never stops the others.

Read-only mode (error 321) cannot be queried: IB only says so when an order is placed. The doctor
places one *what-if* order: IB's TWS API documentation (interactivebrokers.github.io/tws-api/
margin.html) says an order with `whatIf` set is not sent to a destination but only undergoes the
margin credit check, and returns the estimated margin in its OrderState; a Gateway in Read-Only
mode refuses it with 321 like any order (the only source found for what-if in particular is a
third-party IB tool's documentation saying the Read-Only API setting blocks what-if orders too;
the simulator's read_only fault refuses every placeOrder, what-if included). ib_async's wrapper
counts 321 as a warning, so it is watched for on errorEvent rather than awaited. Belt and braces: the what-if is a DAY limit order
to buy one share at $0.01, far from any market, so even a Gateway that ignored `whatIf` would
not fill it. Nothing is ever cancelled: there is nothing to cancel.

The client id: the doctor connects first with broker.client_id, since the only way to learn
that an id is in use is to be refused it (326); on 326 it moves through the pool as the
service would and reports the first free id. It disconnects cleanly at the end.

The IB account id never appears in the output: accounts are counted and classed (paper "D..."
or live), not printed.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import socket
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from actors.ibcodes import (
    CLIENT_ID_IN_USE,
    COMPETING_SESSION,
    DELAYED_INSTEAD,
    ENTITLEMENT_TEXT,
    FARM_BROKEN,
    FARM_OK,
    FROZEN_TICKER_ID,
    NO_SECURITY_DEFINITION,
    READ_ONLY,
)
from configs.settings import Settings
from storage.db import integrity_check

OK, WARN, FAIL = "ok", "warn", "fail"
GATEWAY_PORTS = {
    4001: "IB Gateway live",
    4002: "IB Gateway paper",
    7496: "TWS live",
    7497: "TWS paper",
}
API_SETTINGS = (
    "in IB Gateway/TWS: Configure > Settings > API > Settings: 'Enable ActiveX and Socket Clients'"
    " on, the socket port, 'Allow connections from localhost only' (off for another machine) and"
    " this machine's address in 'Trusted IPs'"
)
NO_CONNECTION = "skipped: no connection to the Gateway"
COMPETING_FIX = (
    "the same IB username is logged in elsewhere (TWS, mobile, web) and holds the market data:"
    " log that session out, or give the Gateway a second username of the account"
)
DELAYED_MEANING = (
    "broker.market_data_type: 3 gives delayed quotes, 15-20 minutes old: fine for dry-run, never"
    " for real orders"
)
STOCK_SUBSCRIPTION = (
    "subscribe in Client Portal > Settings > Market Data Subscriptions to US equity streaming"
    " quotes (e.g. 'US Securities Snapshot and Futures Value Bundle' with 'US Equity and Options"
    " Add-On Streaming Bundle') and sign the API market data acknowledgement"
)
OPTION_SUBSCRIPTION = (
    "subscribe in Client Portal > Settings > Market Data Subscriptions to 'OPRA (US Options"
    " Exchanges)' (or the US Equity and Options Add-On Streaming Bundle) for API use"
)
FREE_DISK_WARN = 500 * 1024 * 1024
FREE_DISK_FAIL = 50 * 1024 * 1024
DRIFT_WARN_S = 2.0
DRIFT_FAIL_S = 60.0


@dataclass(frozen=True, slots=True)
class Check:
    check: str
    status: str  # ok, warn or fail
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.check:<20}  {self.detail}"
        return text + (f"  -> {self.fix}" if self.fix else "")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Real seconds. Capped so that the worst case (everything timing out) stays under a minute."""

    socket: float = 2.0
    connect: float = 8.0
    request: float = 6.0
    quote: float = 6.0
    history: float = 8.0
    budget: float = 40.0  # the whole connected part

    @classmethod
    def from_settings(cls, s: Settings) -> Timeouts:
        b = s.broker
        return cls(
            socket=min(2.0, b.connect_timeout_s),
            connect=min(8.0, b.connect_timeout_s),
            request=min(6.0, b.timeouts_s.get("contract_details", b.request_timeout_s)),
            quote=min(6.0, b.timeouts_s.get("snapshot", b.request_timeout_s)),
            history=min(8.0, b.timeouts_s.get("historical", b.request_timeout_s)),
            budget=min(40.0, 4 * b.connect_timeout_s + 3 * b.request_timeout_s),
        )


def order_names(symbols: Iterable[str]) -> list[str]:
    """Every check's name, in the order the doctor reports them (stable: scripts key on them)."""
    names = ["socket", "handshake", "client_id", "account", "read_only", "clock", "farms"]
    for kind in ("market_data", "history", "options"):
        names += [f"{kind}:{s}" for s in symbols]
    return names + ["limits", "storage", "config"]


# ---------------------------------------------------------------------- checks without a Gateway


def check_config(s: Settings) -> Check:
    problems: list[tuple[str, str, str]] = []  # (status, what, fix)
    live = not s.dry_run
    opt_in = getattr(s, "live", None)
    opted = bool(getattr(opt_in, "enabled", False)) if opt_in is not None else False
    if live and not opted:
        problems.append(
            (
                FAIL,
                "dry_run is false (real orders) without the live opt-in",
                "set dry_run: true, or opt in to live trading explicitly (live.enabled)",
            )
        )
    if live and (s.broker.market_data_type in (3, 4) or s.broker.delayed_data_fallback):
        problems.append(
            (
                FAIL,
                "live orders on delayed quotes (market_data_type 3/4 or delayed_data_fallback)",
                "buy the real-time subscription and set broker.market_data_type: 1,"
                " delayed_data_fallback: false",
            )
        )
    if live and s.broker.mode == "embedded":
        problems.append(
            (WARN, "dry_run is false against the embedded simulator", "broker.mode: gateway")
        )
    if s.risk.risk_per_trade > 0.02:
        problems.append(
            (
                WARN,
                f"risk.risk_per_trade {s.risk.risk_per_trade:g} risks over 2% of equity a trade",
                "lower risk.risk_per_trade (default 0.01)",
            )
        )
    if s.risk.max_daily_loss_pct > 0.05:
        problems.append(
            (
                WARN,
                f"risk.max_daily_loss_pct {s.risk.max_daily_loss_pct:g} allows over 5% a day",
                "lower risk.max_daily_loss_pct (default 0.02)",
            )
        )
    mode = "LIVE" if live else "dry-run"
    where = "embedded simulator" if s.broker.mode == "embedded" else "gateway"
    if not problems:
        n = len(s.symbols)
        return Check("config", OK, f"{mode}, {where}, {n} symbol{'s' if n != 1 else ''}")
    status = FAIL if any(p[0] == FAIL for p in problems) else WARN
    return Check(
        "config",
        status,
        f"{mode}: " + "; ".join(p[1] for p in problems),
        "; ".join(p[2] for p in problems),
    )


def check_storage(
    path: Path,
    disk_usage: Callable[[str], Any] = shutil.disk_usage,
    check_seconds: float = 10.0,
) -> Check:
    """Opens the database read-only (never creates it) and checks its integrity, modes and disk."""
    notes: list[str] = []
    fixes: list[str] = []
    status = OK
    where = path.parent if str(path.parent) else Path(".")
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = disk_usage(str(probe)).free
    except OSError as exc:
        free = None
        notes.append(f"free space unknown ({exc.strerror})")
    if free is not None:
        notes.append(f"{free / 2**30:.1f} GB free")
        if free < FREE_DISK_FAIL:
            status = FAIL
            fixes.append(f"free disk space on {probe} (under 50 MB: writes will fail)")
        elif free < FREE_DISK_WARN:
            status = WARN
            fixes.append(f"free disk space on {probe} (under 500 MB)")
    if not path.exists():
        return Check(
            "storage",
            status,
            f"no database yet at {path} (created on the first run); " + ", ".join(notes),
            "; ".join(fixes),
        )
    try:
        verdict = "; ".join(integrity_check(path, check_seconds)[:3])
    except sqlite3.OperationalError as exc:
        if "interrupted" not in str(exc):
            verdict = str(exc)
        else:
            size = path.stat().st_size / 2**20
            return Check(
                "storage",
                WARN,
                f"database {path} opens; its integrity check did not finish in {check_seconds:g} s"
                f" ({size:.0f} MB); " + ", ".join(notes),
                f"run sqlite3 {path} 'PRAGMA integrity_check' with the service stopped",
            )
    except sqlite3.Error as exc:
        verdict = str(exc)
    if verdict != "ok":
        return Check(
            "storage",
            FAIL,
            f"database {path} is damaged: {verdict}",
            f"stop the service, move it aside (mv {path} {path}.damaged) and restore a backup;"
            " the broker's positions and orders remain the truth",
        )
    notes.insert(0, f"database {path} opens, integrity ok")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        status = FAIL if mode & 0o002 else (WARN if status == OK else status)
        fixes.append(f"chmod 600 {path} (it is {mode:04o}: others can read the trading record)")
    else:
        notes.append(f"mode {mode:04o}")
    return Check("storage", status, ", ".join(notes), "; ".join(fixes))


def check_limits(s: Settings, symbols: tuple[str, ...]) -> Check:
    from actors.pacing import MAX_REALTIME_STREAMS, stream_kinds

    b = s.broker
    n = len(symbols)
    # A keepUpToDate symbol holds one open historical request for good, a real-time one a
    # market data line (data.stream); at start-up each has two backfills (1-minute and 1-hour).
    realtime = sum(stream_kinds(symbols, s.data.stream, b.max_open_historical).values())
    streams = n - realtime
    peak = streams + 2 * n
    # A stock quote and the strikes quoted per idea, and a line per real-time stream.
    lines = n * (1 + s.options.strike_count) + realtime
    rt_note = f", {realtime} real-time bar stream{'s' if realtime != 1 else ''}" if realtime else ""
    notes = [
        f"{n} symbol{'s' if n != 1 else ''}: {streams} open historical stream{'s' if streams != 1 else ''}"
        f" ({peak} at start-up) of"
        f" {b.max_open_historical}{rt_note}; up to {lines} market data lines of"
        f" {b.max_market_data_lines}"
    ]
    status, fixes = OK, []
    if streams > min(b.max_open_historical, 50):
        status = FAIL
        fixes.append(
            "list fewer symbols, or data.stream: auto: IB allows about 50 open historical requests"
        )
    elif peak > min(b.max_open_historical, 50):
        status = WARN
        fixes.append("start-up backfills will queue behind the 50 open historical requests")
    if realtime > MAX_REALTIME_STREAMS:
        status = FAIL
        fixes.append("list fewer symbols: IB allows 60 new real-time bar requests in 10 minutes")
    if b.max_open_historical > 50:
        status = FAIL if status == FAIL else WARN
        fixes.append("broker.max_open_historical above IB's 50 invites error 162: set 50")
    if lines > b.max_market_data_lines:
        status = FAIL if status == FAIL else WARN
        fixes.append(
            "quotes will wait for a free line: fewer symbols or options.strike_count, or more"
            " lines (quote booster packs) and broker.max_market_data_lines"
        )
    return Check("limits", status, notes[0], "; ".join(fixes))


def check_socket(
    host: str, port: int, timeout: float, ports: dict[int, str] = GATEWAY_PORTS
) -> Check:
    if _answers(host, port, timeout):
        return Check("socket", OK, f"{host}:{port} answers")
    others = [
        f"{p} ({name})"
        for p, name in ports.items()
        if p != port and _answers(host, p, min(timeout, 0.5))
    ]
    seen = f"; {', '.join(others)} answer{'s' if len(others) == 1 else ''}" if others else ""
    fix = (
        f"set broker.port to the one you mean ({others[0].split()[0]}?), or {API_SETTINGS}"
        if others
        else f"start IB Gateway/TWS and log in; {API_SETTINGS}"
    )
    return Check("socket", FAIL, f"nothing answers on {host}:{port}{seen}", fix)


def _answers(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------- checks over the Gateway


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


class _Session:
    """One doctor connection: the errors IB sent, and the checks, filled in as they finish."""

    def __init__(
        self, s: Settings, symbols: tuple[str, ...], t: Timeouts, wall: Callable[[], datetime]
    ):
        self.s, self.symbols, self.t, self.wall = s, symbols, t, wall
        self.errors: list[tuple[int, int, str, Any]] = []
        self.out: dict[str, Check] = {}
        self.conn_time = ""
        self.ib: Any = None
        self.gateway_now: datetime | None = None
        self.stocks: dict[str, Any] = {}
        self.spots: dict[str, float] = {}
        # A simulated Gateway's clock runs time_scale times faster, so one real second of
        # latency between its answer and our reading is time_scale simulated seconds.
        self.drift_scale = 1.0

    def put(self, c: Check) -> None:
        self.out[c.check] = c

    def _on_error(self, req_id: int, code: int, text: str, contract: Any = None) -> None:
        self.errors.append((req_id, code, text, contract))

    def errors_for(self, con_id: int, since: int = 0) -> list[tuple[int, str]]:
        """IB's errors about one contract, from the `since`-th error on."""
        return [
            (c, t)
            for _, c, t, k in self.errors[since:]
            if k is not None and getattr(k, "conId", 0) == con_id
        ]

    async def connect(self, host: str, port: int) -> bool:
        from ib_async import IB

        b = self.s.broker
        in_use: list[int] = []
        first = b.client_id
        for cid in range(first, first + b.client_id_pool):
            ib = IB()
            self.errors.clear()
            ib.errorEvent += self._on_error
            ib.client.conn.hasData += self._peek_handshake
            started = time.monotonic()
            try:
                await self._connect_one(ib, host, port, cid)
            except Exception as exc:  # noqa: BLE001 - every connect failure is reported
                ib.disconnect()
                if any(code == CLIENT_ID_IN_USE for _, code, _, _ in self.errors):
                    in_use.append(cid)
                    continue
                text = str(exc)
                if "version" in text.lower():
                    self.put(
                        Check(
                            "handshake",
                            FAIL,
                            f"Gateway too old for ib_async: {text}",
                            "update IB Gateway/TWS to a current stable release",
                        )
                    )
                else:
                    self.put(
                        Check(
                            "handshake",
                            FAIL,
                            f"the socket answers but the API handshake failed as client {cid}:"
                            f" {type(exc).__name__} {text}".rstrip(),
                            f"{API_SETTINGS}; a dialog waiting in the Gateway (login, 2FA,"
                            " 'accept incoming connection') blocks the API too; a Gateway older"
                            " than API server version 157 (what ib_async needs) closes the"
                            " handshake: update it",
                        )
                    )
                self._client_id_check(in_use, None)
                return False
            self.ib = ib
            took = time.monotonic() - started
            version = ib.client.serverVersion()
            self.put(
                Check(
                    "handshake",
                    OK,
                    f"server version {version} (ib_async needs {ib.client.MinClientVersion}"
                    f"-{ib.client.MaxClientVersion}), connected in {took * 1000:.0f} ms"
                    + (f" at Gateway time {self.conn_time}" if self.conn_time else ""),
                )
            )
            self._client_id_check(in_use, cid)
            return True
        self.put(
            Check(
                "handshake",
                FAIL,
                f"every client id {first}-{first + b.client_id_pool - 1} is in use (326)",
                "see client_id",
            )
        )
        self._client_id_check(in_use, None)
        return False

    async def _connect_one(self, ib: Any, host: str, port: int, cid: int) -> None:
        """ib_async's connect, cut short by a 326: ib_async itself waits out its whole timeout,
        which over a pool of ids would eat the doctor's budget."""
        from ib_async import StartupFetchNONE

        refused = asyncio.Event()

        def watch(req_id: int, code: int, *_: Any) -> None:
            if code == CLIENT_ID_IN_USE:
                refused.set()

        ib.errorEvent += watch
        attempt = asyncio.ensure_future(
            ib.connectAsync(
                host,
                port,
                clientId=cid,
                timeout=self.t.connect,
                readonly=True,
                fetchFields=StartupFetchNONE,
            )
        )
        gate = asyncio.ensure_future(refused.wait())
        try:
            await asyncio.wait({attempt, gate}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ib.errorEvent -= watch
            gate.cancel()
        if refused.is_set():
            attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)
            raise ConnectionError(f"client id {cid} is in use (326)")
        attempt.result()

    def _peek_handshake(self, data: bytes) -> None:
        # ib_async drops the connection time of the handshake reply ("20261120 10:30:00 EST"),
        # which is the only place IB names the Gateway's time zone: read it from the first frame.
        if self.conn_time:
            return
        try:
            fields = data[4:].split(b"\0")
            if len(fields) >= 2 and fields[0].isdigit():
                self.conn_time = fields[1].decode(errors="replace")
        except Exception:  # noqa: BLE001 - the zone is a nicety; never fail the doctor on it
            self.conn_time = "?"

    def _client_id_check(self, in_use: list[int], used: int | None) -> None:
        first = self.s.broker.client_id
        if first not in in_use:
            if used is None:
                self.put(Check("client_id", FAIL, NO_CONNECTION, "see socket and handshake"))
            else:
                self.put(Check("client_id", OK, f"client id {first} is free"))
            return
        if used is None:
            self.put(
                Check(
                    "client_id",
                    FAIL,
                    f"client id {first} is in use (326) and so is every id of the pool"
                    f" {first}-{first + self.s.broker.client_id_pool - 1}",
                    "stop the other clients (another optionsbot?), restart the Gateway, or set"
                    " broker.client_id to an unused range",
                )
            )
            return
        self.put(
            Check(
                "client_id",
                FAIL,
                f"client id {first} is in use (326); {used} is the next free id of the pool",
                f"another client holds {first} (a running optionsbot, or one that just stopped:"
                f" the Gateway frees it within a minute or two); stop it, or set broker.client_id:"
                f" {used}",
            )
        )

    def check_account(self) -> None:
        accounts = [a for a in self.ib.managedAccounts() if a]
        configured = self.s.broker.account.get_secret_value()
        if not accounts:
            self.put(
                Check(
                    "account",
                    FAIL,
                    "the Gateway reported no managed account",
                    "log in to IB Gateway fully (finish 2FA) and run again",
                )
            )
            return
        paper = [a for a in accounts if a.upper().startswith("D")]
        kind = (
            "paper" if len(paper) == len(accounts) else ("live" if not paper else "paper and live")
        )
        detail = f"{len(accounts)} managed account{'s' if len(accounts) > 1 else ''}, {kind}"
        if configured and configured not in accounts:
            self.put(
                Check(
                    "account",
                    FAIL,
                    detail + "; the configured account is not among them",
                    "set OPTIONSBOT_BROKER__ACCOUNT to one of the Gateway's accounts, or log in"
                    " with the right user",
                )
            )
            return
        if not configured and len(accounts) > 1:
            self.put(
                Check(
                    "account",
                    WARN,
                    detail + "; no account configured",
                    "set OPTIONSBOT_BROKER__ACCOUNT to the one to trade",
                )
            )
            return
        if not self.s.dry_run and kind != "paper":
            detail += " (real money)"
        self.put(
            Check("account", OK, detail + ("; configured account found" if configured else ""))
        )

    async def check_clock(self) -> None:
        try:
            gw = await asyncio.wait_for(self.ib.reqCurrentTimeAsync(), self.t.request)
        except Exception as exc:  # noqa: BLE001
            self.put(Check("clock", FAIL, f"no answer to reqCurrentTime: {type(exc).__name__}", ""))
            return
        local = self.wall()
        gw = gw.astimezone(UTC) if gw.tzinfo else gw.replace(tzinfo=UTC)
        self.gateway_now = gw
        drift = (gw - local).total_seconds()
        zone = self.conn_time.split(" ", 2)[2] if self.conn_time.count(" ") >= 2 else "unknown"
        detail = (
            f"Gateway {gw.isoformat(timespec='seconds')}, drift {drift:+.1f} s, Gateway zone {zone}"
        )
        if abs(drift) > DRIFT_FAIL_S * self.drift_scale:
            self.put(
                Check(
                    "clock",
                    FAIL,
                    detail,
                    "sync this machine's clock (timedatectl set-ntp true / chrony) and the"
                    " Gateway host's; bars, expiries and market hours all follow the clock",
                )
            )
        elif abs(drift) > DRIFT_WARN_S * self.drift_scale:
            self.put(Check("clock", WARN, detail, "enable NTP on this machine and the Gateway's"))
        else:
            self.put(Check("clock", OK, detail))

    async def qualify(self) -> None:
        from ib_async import Stock

        contracts = [Stock(sym, "SMART", "USD") for sym in self.symbols]
        try:
            done = await asyncio.wait_for(self.ib.qualifyContractsAsync(*contracts), self.t.request)
        except Exception:  # noqa: BLE001 - each symbol's checks report the miss
            done = []
        for c in done or []:
            if c is not None and getattr(c, "conId", 0):
                self.stocks[c.symbol] = c

    async def check_read_only(self) -> None:
        from ib_async import LimitOrder

        if not self.stocks:
            self.put(
                Check(
                    "read_only",
                    WARN,
                    "skipped: no contract to place a what-if order for",
                    "see market_data and farms",
                )
            )
            return
        stock = next(iter(self.stocks.values()))
        refused = asyncio.Event()

        other: list[tuple[int, str]] = []

        def watch(req_id: int, code: int, text: str, *_: Any) -> None:
            if code == READ_ONLY:
                refused.set()
            elif req_id > 0:
                other.append((code, text))

        self.ib.errorEvent += watch
        order = LimitOrder("BUY", 1, 0.01, tif="DAY", outsideRth=False)
        answer = asyncio.ensure_future(self.ib.whatIfOrderAsync(stock, order))
        gate = asyncio.ensure_future(refused.wait())
        try:
            await asyncio.wait(
                {answer, gate}, timeout=self.t.request, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self.ib.errorEvent -= watch
            gate.cancel()
        if refused.is_set():
            answer.cancel()
            live = not self.s.dry_run
            self.put(
                Check(
                    "read_only",
                    FAIL if live else WARN,
                    "the Gateway refuses orders (321: the API is in Read-Only mode)"
                    + ("" if live else "; dry-run places none, live trading would be refused"),
                    "in IB Gateway/TWS: Configure > Settings > API > Settings: untick"
                    " 'Read-Only API'",
                )
            )
        elif answer.done() and answer.result() is not None:
            self.put(
                Check("read_only", OK, "orders accepted (a what-if margin check was answered)")
            )
        elif other:
            # Refused for another reason (price, permissions): the API itself is not read-only.
            code, text = other[0]
            self.put(
                Check(
                    "read_only",
                    OK,
                    f"not read-only: the what-if was answered with IB {code} ({text[:80]})",
                )
            )
        else:
            answer.cancel()
            self.put(
                Check(
                    "read_only",
                    WARN,
                    f"no answer to a what-if order within {self.t.request:g} s: read-only mode unknown",
                    "check 'Read-Only API' in Configure > Settings > API > Settings",
                )
            )

    def check_farms(self) -> None:
        names = {
            "farm:market_data": "market data",
            "farm:historical": "HMDS",
            "farm:secdef": "sec-def",
        }
        state: dict[str, tuple[str, int]] = {}
        for _, code, _, _ in self.errors:
            if code in FARM_BROKEN:
                state[FARM_BROKEN[code]] = ("broken", code)
            elif code in FARM_OK:
                state[FARM_OK[code]] = ("ok", code)
        broken = [f"{names[k]} ({c})" for k, (st, c) in state.items() if st == "broken"]
        seen = (
            ", ".join(f"{names[k]} {st}" for k, (st, _) in sorted(state.items()))
            or "no farm status"
        )
        if broken:
            self.put(
                Check(
                    "farms",
                    FAIL,
                    f"broken: {', '.join(broken)}; {seen}",
                    "IB's side or the network to it: wait for the OK (2104/2106/2158), check"
                    " https://www.interactivebrokers.com/en/software/systemStatus.php, restart the"
                    " Gateway if it persists",
                )
            )
        else:
            self.put(Check("farms", OK, seen))

    async def _quote(self, contract: Any) -> tuple[Any, list[tuple[int, str]]]:
        """A streaming quote until bid and ask are finite, an error arrives, or the timeout."""
        ticker = self.ib.reqMktData(contract, "", False, False)
        hard = set(ENTITLEMENT_TEXT) | {NO_SECURITY_DEFINITION, FROZEN_TICKER_ID, COMPETING_SESSION}
        deadline = time.monotonic() + self.t.quote
        try:
            while time.monotonic() < deadline:
                errs = self.errors_for(contract.conId)
                if _finite(ticker.bid) and _finite(ticker.ask):
                    return ticker, errs
                if any(c in hard for c, _ in errs):
                    return ticker, errs
                await asyncio.sleep(0.05)
            return ticker, self.errors_for(contract.conId)
        finally:
            self.ib.cancelMktData(contract)

    def _market_open(self) -> bool | None:
        try:
            from actors.hours import MarketHours

            if self.gateway_now is None:
                return None
            cache = self.s.storage.path.parent / "market-hours.json"
            hours = MarketHours(cache=cache if cache.parent.exists() else None)
            return hours.is_open(self.gateway_now)
        except Exception:  # noqa: BLE001 - hours only soften a verdict
            return None

    async def check_symbol(self, sym: str, market_open: bool | None) -> None:
        stock = self.stocks.get(sym)
        if stock is None:
            text = (
                f"no contract details for {sym} as a US stock on SMART within {self.t.request:g} s"
            )
            fix = (
                "check the symbol in settings.symbols; if every symbol misses, see farms (sec-def)"
            )
            for kind in ("market_data", "history", "options"):
                self.put(Check(f"{kind}:{sym}", FAIL, text, fix))
            return
        await self._market_data(sym, stock, market_open)
        await self._history(sym, stock, market_open)
        await self._options(sym, stock, market_open)

    async def _market_data(self, sym: str, stock: Any, market_open: bool | None) -> None:
        name = f"market_data:{sym}"
        ticker, errs = await self._quote(stock)
        delayed = any(c == DELAYED_INSTEAD for c, _ in errs) or self.s.broker.market_data_type in (
            3,
            4,
        )
        if _finite(ticker.bid) and _finite(ticker.ask):
            self.spots[sym] = (ticker.bid + ticker.ask) / 2
            detail = f"bid {ticker.bid:g} ask {ticker.ask:g}"
            if delayed:
                self.put(
                    Check(
                        name,
                        WARN,
                        detail + " (DELAYED quotes, 15-20 minutes old)",
                        STOCK_SUBSCRIPTION + "; " + DELAYED_MEANING,
                    )
                )
            else:
                self.put(Check(name, OK, detail + " (live)"))
            return
        ent = [(c, t) for c, t in errs if c in ENTITLEMENT_TEXT]
        if ent:
            code, text = ent[0]
            self.put(
                Check(
                    name,
                    FAIL,
                    f"no quote: IB {code}: {ENTITLEMENT_TEXT[code]} ({text.split('.')[0]})",
                    STOCK_SUBSCRIPTION + "; or " + DELAYED_MEANING,
                )
            )
            return
        if any(c == COMPETING_SESSION for c, _ in errs):
            self.put(
                Check(name, FAIL, "no quote: IB 10197: a competing live session", COMPETING_FIX)
            )
            return
        seen = f"bid {ticker.bid} ask {ticker.ask}"
        other = f"; IB {errs[0][0]}: {errs[0][1]}" if errs else ""
        if market_open is False:
            self.put(
                Check(
                    name,
                    WARN,
                    f"no finite quote within {self.t.quote:g} s ({seen}); the market is closed",
                    "run the doctor again during market hours",
                )
            )
            return
        self.put(
            Check(
                name,
                FAIL,
                f"no finite bid and ask within {self.t.quote:g} s ({seen}){other}",
                "NaN quotes without an error: check the farms, the market data subscription"
                " (Client Portal) and that no other session (TWS, mobile) holds the market data",
            )
        )

    async def _history(self, sym: str, stock: Any, market_open: bool | None) -> None:
        name = f"history:{sym}"
        what = self.s.data.what_to_show

        silent: list[str] = []
        mark = len(self.errors)  # the quote's errors are the market_data check's, not these

        async def bars(duration: str, size: str) -> list[Any]:
            started = time.monotonic()
            try:
                got = await asyncio.wait_for(
                    self.ib.reqHistoricalDataAsync(
                        stock, "", duration, size, what, False, timeout=self.t.history
                    ),
                    self.t.history + 1,
                )
            except Exception:  # noqa: BLE001 - no bars is the finding
                got = None
            if not got and time.monotonic() - started >= self.t.history * 0.9:
                silent.append(size)  # ib_async gives up with an empty list: no answer at all
            return list(got or [])

        # What the service asks for at start-up: its 1-minute backfill, and 1-hour bars.
        minute, hour = await asyncio.gather(
            bars(self.s.data.backfill_1min, "1 min"), bars("5 D", "1 hour")
        )
        if minute and hour:
            if not self.spots.get(sym):
                self.spots[sym] = float(minute[-1].close)
            self.put(Check(name, OK, f"{len(minute)} 1-minute and {len(hour)} 1-hour bars"))
            return
        missing = " and ".join(k for k, v in (("1-minute", minute), ("1-hour", hour)) if not v)
        errs = [(c, t) for c, t in self.errors_for(stock.conId, mark) if c != DELAYED_INSTEAD]
        if silent:
            said = f"; the Gateway did not answer ({', '.join(silent)})"
        elif errs:
            said = f"; IB {errs[-1][0]}: {errs[-1][1]}"
        else:
            said = "; the Gateway answered with none"
        if not silent and market_open is False:
            self.put(
                Check(
                    name,
                    WARN,
                    f"no {missing} bars{said}; the market is closed",
                    "run the doctor again during market hours",
                )
            )
            return
        self.put(
            Check(
                name,
                FAIL,
                f"no {missing} bars within {self.t.history:g} s{said}",
                "HMDS (historical farm) stalled or broken: see farms; restart the Gateway if it"
                " persists; error 162 means pacing (wait 10 minutes), 354/10089 a subscription",
            )
        )

    async def _options(self, sym: str, stock: Any, market_open: bool | None) -> None:
        from ib_async import Option

        from strategies.options import OptionParams, choose_expiry, target_strike
        from strategies.signals import Direction

        name = f"options:{sym}"
        try:
            rows = await asyncio.wait_for(
                self.ib.reqSecDefOptParamsAsync(sym, "", "STK", stock.conId), self.t.request
            )
        except Exception:  # noqa: BLE001
            rows = None
        rows = [r for r in rows or [] if r.expirations and r.strikes]
        if not rows:
            self.put(
                Check(
                    name,
                    FAIL,
                    "empty option chain (reqSecDefOptParams returned no expiry or strike)",
                    "check the sec-def farm (see farms) and that the symbol has listed options;"
                    " restart the Gateway if other symbols' chains are empty too",
                )
            )
            return
        smart = [r for r in rows if r.exchange == "SMART"] or rows
        smart.sort(key=lambda r: (r.tradingClass != sym, -len(r.expirations)))
        row = smart[0]
        o = self.s.options
        params = OptionParams(
            moneyness=o.moneyness, min_dte=o.min_dte, allow_expiry_day=o.allow_expiry_day
        )
        today = (self.gateway_now or self.wall()).astimezone(_eastern()).date()
        expiry = choose_expiry(row.expirations, today, params)
        if expiry is None:
            self.put(
                Check(
                    name,
                    FAIL,
                    f"{len(row.expirations)} expiries, none the strategy would use (min_dte {o.min_dte})",
                    "lower options.min_dte, or check the chain's expiries",
                )
            )
            return
        spot = self.spots.get(sym)
        strike = target_strike(row.strikes, spot or math.nan, Direction.CALL, o.moneyness)
        if strike is None:
            self.put(
                Check(
                    name,
                    FAIL,
                    f"expiry {expiry}, but no strike to choose (no price for {sym})",
                    "see market_data and history for this symbol",
                )
            )
            return
        opt = Option(
            sym, expiry, strike, "C", "SMART", currency="USD", tradingClass=row.tradingClass
        )
        try:
            q = await asyncio.wait_for(self.ib.qualifyContractsAsync(opt), self.t.request)
        except Exception:  # noqa: BLE001
            q = []
        if not q or q[0] is None or not getattr(q[0], "conId", 0):
            self.put(
                Check(
                    name,
                    FAIL,
                    f"{expiry} {strike:g} C: IB does not know the contract",
                    "check the sec-def farm (see farms)",
                )
            )
            return
        ticker, errs = await self._quote(q[0])
        chain = (
            f"{len(row.expirations)} expiries, {len(row.strikes)} strikes; {expiry} {strike:g} C"
        )
        if _finite(ticker.bid) and _finite(ticker.ask):
            self.put(Check(name, OK, f"{chain} bid {ticker.bid:g} ask {ticker.ask:g}"))
            return
        ent = [(c, t) for c, t in errs if c in ENTITLEMENT_TEXT]
        if ent:
            self.put(
                Check(
                    name,
                    FAIL,
                    f"{chain}: no quote: IB {ent[0][0]}: {ENTITLEMENT_TEXT[ent[0][0]]}",
                    OPTION_SUBSCRIPTION + "; or " + DELAYED_MEANING,
                )
            )
            return
        status = WARN if market_open is False else FAIL
        self.put(
            Check(
                name,
                status,
                f"{chain}: no finite bid and ask within {self.t.quote:g} s"
                + ("; the market is closed" if market_open is False else ""),
                "run again in market hours" if market_open is False else OPTION_SUBSCRIPTION,
            )
        )

    async def run(self, host: str, port: int) -> None:
        if not await self.connect(host, port):
            return
        try:
            self.check_account()
            if self.s.broker.market_data_type != 1:
                self.ib.reqMarketDataType(self.s.broker.market_data_type)
            await self.check_clock()
            await self.qualify()
            await self.check_read_only()
            market_open = self._market_open()
            # A few symbols at a time: each has two historical requests open, and IB allows
            # about 50 open at once (the service's own streams may be holding some).
            lanes = asyncio.Semaphore(6)

            async def one(sym: str) -> None:
                async with lanes:
                    await self.check_symbol(sym, market_open)

            await asyncio.gather(*(one(sym) for sym in self.symbols), return_exceptions=True)
            self.check_farms()
        finally:
            self.ib.disconnect()


def _eastern() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("America/New_York")


# ---------------------------------------------------------------------- the whole run


@dataclass
class Report:
    checks: list[Check]
    seconds: float

    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks)

    def by_name(self) -> dict[str, Check]:
        return {c.check: c for c in self.checks}

    def json(self) -> str:
        return json.dumps([asdict(c) for c in self.checks], indent=2)

    def text(self) -> str:
        counts = {k: sum(c.status == k for c in self.checks) for k in (OK, WARN, FAIL)}
        tail = (
            f"{counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} fail in {self.seconds:.1f} s"
            f" ({'fix the fails first' if counts[FAIL] else 'nothing stops it trading'})"
        )
        return "\n".join([c.line() for c in self.checks] + [tail])


def diagnose(
    s: Settings,
    symbols: Iterable[str] | None = None,
    timeouts: Timeouts | None = None,
    wall: Callable[[], datetime] | None = None,
    port: int | None = None,
) -> Report:
    """Every check, in `order_names` order. Starts the embedded simulator when the settings say so.

    `wall`: this machine's clock (the clock check's reference); `port`: overrides broker.port.
    """
    started = time.monotonic()
    syms = tuple(dict.fromkeys(x.upper() for x in (symbols or s.symbols)))
    t = timeouts or Timeouts.from_settings(s)
    sim = None
    host, port = s.broker.host, port or s.broker.port
    failed_start = ""
    if s.broker.mode == "embedded":
        try:
            sim = _start_embedded(s, syms)
            host, port = "127.0.0.1", sim.port
            wall = wall or sim.clock.now  # in embedded mode the service runs on the sim's clock
        except Exception as exc:  # noqa: BLE001 - reported as the socket check
            failed_start = f"the embedded simulator did not start: {type(exc).__name__}: {exc}"
    wall = wall or (lambda: datetime.now(UTC))
    session = _Session(s, syms, t, wall)
    if sim is not None:
        session.drift_scale = max(1.0, s.sim.time_scale)
    try:
        if failed_start:
            sock = Check("socket", FAIL, failed_start, "see sim settings (sim.scenario, sim.start)")
        else:
            sock = check_socket(host, port, t.socket)
        session.put(sock)
        if sock.status == OK:
            _run_loop(session, host, port, t.budget)
    finally:
        if sim is not None:
            sim.stop()
    session.put(check_limits(s, syms))
    session.put(check_storage(s.storage.path))
    session.put(check_config(s))
    connected = session.ib is not None
    checks = []
    for name in order_names(syms):
        c = session.out.get(name)
        if c is None:
            why = (
                NO_CONNECTION
                if not connected
                else f"skipped: no answer within the {t.budget:g} s budget"
            )
            fix = "see socket and handshake" if not connected else "see the checks above"
            c = Check(name, FAIL, why, fix)
        checks.append(c)
    return Report(checks, time.monotonic() - started)


def _run_loop(session: _Session, host: str, port: int, budget: float) -> None:
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(session.run(host, port), budget))
    except TimeoutError:
        pass  # the checks not finished report themselves as skipped
    except Exception as exc:  # noqa: BLE001 - the doctor reports, never crashes
        session.put(Check("handshake", FAIL, f"doctor error: {type(exc).__name__}: {exc}"))
    finally:
        if session.ib is not None:
            session.ib.disconnect()
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(_drain(pending))
        loop.close()


async def _drain(tasks: list[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


def _start_embedded(s: Settings, syms: tuple[str, ...]) -> Any:
    from dataclasses import replace

    from sim.config import PacingOptions, SimOptions
    from sim.runner import EmbeddedSim

    options = SimOptions(
        seed=s.sim.seed,
        time_scale=s.sim.time_scale,
        start=s.sim.start,
        skip_closed=s.sim.skip_closed,
        symbols=syms,
        bar_update_interval=s.sim.bar_update_s,
    )
    if not s.sim.pacing:
        options = replace(options, pacing=PacingOptions.off())
    if s.sim.latency != "instant":
        from sim.latency import LatencyOptions

        options = replace(options, latency=LatencyOptions(profile=s.sim.latency))
    if s.sim.scenario is not None:
        from sim.faults import Scenario

        options = Scenario.load(s.sim.scenario).apply(options, symbols=syms)
    sim = EmbeddedSim(options)
    sim.start(host="127.0.0.1", port=0)
    return sim


def main(settings: Settings, symbols: list[str] | None, as_json: bool) -> int:
    """Prints the report; 1 when a check fails, else 0 (a bad configuration exits 2 before)."""
    import logging

    # The report carries every error that matters, with its fix; ib_async's own log lines would
    # repeat them (and the simulator's too, in embedded mode) on stderr.
    for name in ("ib_async", "sim"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    report = diagnose(settings, symbols)
    print(report.json() if as_json else report.text(), flush=True)
    return 1 if report.failed else 0

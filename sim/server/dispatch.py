"""Dispatch: the handler tables (message id -> gate, message id -> handler) and the one path every
request takes: message rate, faults, gate, handler."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sim import protocol as P
from sim.faults import REQUEST_KINDS
from sim.protocol import In, ProtocolError
from sim.server.core import ServerCore
from sim.server.sessions import ClientSession, Handler

log = logging.getLogger(__name__)


class DispatchMixin(ServerCore):
    """Routes each decoded request through its gate to its handler."""

    _gates: dict[int, Callable[[ClientSession, list[str], datetime], bool]]
    _handlers: dict[int, Handler]

    def _init_dispatch(self) -> None:
        # A gate runs first and may answer, hold or drop the request (gates.py).
        self._gates = {
            In.START_API: self._gate_start_api,
            In.REQ_CONTRACT_DATA: self._gate_contract_details,
            In.REQ_SEC_DEF_OPT_PARAMS: self._gate_sec_def,
            In.REQ_MKT_DATA: self._gate_mkt_data,
            In.REQ_HISTORICAL_DATA: self._gate_historical,
            In.CANCEL_HISTORICAL_DATA: self._gate_cancel_historical,
            In.REQ_REAL_TIME_BARS: self._gate_real_time_bars,
            In.PLACE_ORDER: self._gate_place_order,
            In.CANCEL_ORDER: self._gate_cancel_order,
        }
        # Grouped by the module each handler lives in.
        self._handlers = {
            # gateway.py
            In.START_API: self._h_start_api,
            In.REQ_CURRENT_TIME: self._h_req_current_time,
            # contracts.py
            In.REQ_CONTRACT_DATA: self._h_req_contract_details,
            In.REQ_SEC_DEF_OPT_PARAMS: self._h_req_sec_def_opt_params,
            In.REQ_MARKET_RULE: self._h_req_market_rule,
            # market_data.py
            In.REQ_MARKET_DATA_TYPE: self._h_req_market_data_type,
            In.REQ_MKT_DATA: self._h_req_mkt_data,
            In.CANCEL_MKT_DATA: self._h_cancel_mkt_data,
            # history.py
            In.REQ_HISTORICAL_DATA: self._h_req_historical_data,
            In.CANCEL_HISTORICAL_DATA: self._h_cancel_historical_data,
            In.REQ_REAL_TIME_BARS: self._h_req_real_time_bars,
            In.CANCEL_REAL_TIME_BARS: self._h_cancel_real_time_bars,
            # orders.py
            In.REQ_IDS: self._h_req_ids,
            In.PLACE_ORDER: self._h_place_order,
            In.CANCEL_ORDER: self._h_cancel_order,
            In.REQ_GLOBAL_CANCEL: self._h_req_global_cancel,
            In.REQ_OPEN_ORDERS: self._h_req_open_orders,
            In.REQ_ALL_OPEN_ORDERS: self._h_req_all_open_orders,
            In.REQ_AUTO_OPEN_ORDERS: self._h_req_auto_open_orders,
            In.REQ_COMPLETED_ORDERS: self._h_req_completed_orders,
            In.REQ_EXECUTIONS: self._h_req_executions,
            # account.py
            In.REQ_MANAGED_ACCTS: self._h_req_managed_accounts,
            In.REQ_ACCT_DATA: self._h_req_account_updates,
            In.REQ_ACCOUNT_UPDATES_MULTI: self._h_req_account_updates_multi,
            In.CANCEL_ACCOUNT_UPDATES_MULTI: self._h_cancel_account_updates_multi,
            In.REQ_ACCOUNT_SUMMARY: self._h_req_account_summary,
            In.CANCEL_ACCOUNT_SUMMARY: self._h_cancel_account_summary,
            In.REQ_POSITIONS: self._h_req_positions,
            In.CANCEL_POSITIONS: self._h_cancel_positions,
            In.REQ_POSITIONS_MULTI: self._h_req_positions_multi,
            In.CANCEL_POSITIONS_MULTI: self._h_cancel_positions_multi,
            In.REQ_PNL: self._h_req_pnl,
            In.CANCEL_PNL: self._h_cancel_pnl,
        }

    def before_request(self, session: ClientSession, msg_id: int, fields: list[str]) -> bool:
        """The one choke point for pacing and faults: False drops the request (its answer, if any, is sent here)."""
        if not self._rate_ok(session):
            return False
        now = self.clock.now()
        # Time-triggered faults apply to this request even if no simulation step has run since.
        self._poll_faults(now)
        if session.closed:
            return False
        if not session.api_started and msg_id != In.START_API:
            return True
        kind = REQUEST_KINDS.get(msg_id, "other")
        client_id = session.client_id
        if msg_id == In.START_API:
            client_id = _safe(lambda: P.Reader(fields, 2).int())
        self.faults.observe(kind, self._request_symbol(session, msg_id, fields, now), client_id)
        gate = self._gates.get(msg_id)
        if gate is None:
            return True
        try:
            return gate(session, fields, now)
        except (ProtocolError, ValueError, IndexError, TypeError) as e:
            # Let the handler report the unreadable request the usual way.
            log.debug("%r: gate for %d could not read the request: %s", session, msg_id, e)
            return True

    async def dispatch(self, session: ClientSession, fields: list[str]) -> None:
        """The one entry point for every request a client sends."""
        if not fields:
            return
        try:
            msg_id = int(fields[0])
        except ValueError:
            self.stats["malformed"] += 1
            log.warning("%r: non-numeric message id %r; closing", session, fields[0][:20])
            session.close()
            return
        self.stats["requests"][msg_id] += 1
        try:
            await self._dispatch(session, msg_id, fields)
        finally:
            # Faults triggered by the Nth request start once it has been answered.
            self._after_request()

    async def _dispatch(self, session: ClientSession, msg_id: int, fields: list[str]) -> None:
        ok = self.before_request(session, msg_id, fields)
        if inspect.isawaitable(ok):
            ok = await ok
        if not ok:
            return
        if not session.api_started and msg_id != In.START_API:
            log.info("%r: request %d before startApi ignored", session, msg_id)
            return
        handler = self._handlers.get(msg_id)
        if handler is None:
            self.stats["unknown_requests"] += 1
            log.info("%r: unhandled message id %d ignored", session, msg_id)
            return
        if self._hold_for_latency(session, msg_id, fields):
            return
        self._run_handler(session, msg_id, handler, fields)

    def _run_handler(
        self, session: ClientSession, msg_id: int, handler: Handler, fields: list[str]
    ) -> None:
        try:
            handler(session, fields)
        except (ProtocolError, ValueError, IndexError, TypeError) as e:
            log.warning("%r: cannot read request %d: %s", session, msg_id, e, exc_info=True)
            session.send_error(-1, 320, f"Error reading request: message id {msg_id}: {e}")
        except Exception as e:
            # A simulator bug must cost one request, not the client's session.
            log.exception("%r: request %d failed", session, msg_id)
            session.send_error(-1, 320, f"Error processing request: message id {msg_id}: {e}")

    def _after_request(self) -> None:
        try:
            self._poll_faults(self.clock.now())
            self._release_held()
        except Exception:
            log.exception("fault or pacing bookkeeping failed")


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (ProtocolError, ValueError, IndexError, TypeError):
        return None

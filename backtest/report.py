"""The money figures a trader reads, from the fills a backtest left in SQLite (pure functions).

Round trips are read per bracket: the entry's fills against the exits' (take-profit, stop,
or an exit at market: flatten before the close, expiry day, kill switch). The equity curve is
realized P&L, stepped at each round trip's exit; the daily Sharpe ratio is over every trading
day of the range, a day without a trade counting as a zero return.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

EXIT_ROLES = ("take_profit", "stop_loss", "exit")


@dataclass(frozen=True, slots=True)
class OrderInfo:
    order_ref: str
    bracket_ref: str
    role: str  # entry | take_profit | stop_loss | exit
    strategy: str
    symbol: str
    contract: str  # the OCC symbol
    multiplier: float
    reason: str = ""  # why an exit was sent (flatten, expiry day)


@dataclass(frozen=True, slots=True)
class FillInfo:
    order_ref: str
    at: datetime
    side: str  # BOT | SLD
    quantity: float
    price: float
    commission: float


@dataclass(frozen=True, slots=True)
class Trade:
    """One round trip: a bracket's entry and the exits that closed it."""

    symbol: str
    rule: str
    contract: str
    quantity: float
    entry_time: datetime
    exit_time: datetime
    entry_price: float
    exit_price: float
    commission: float
    pnl: float  # after commissions
    exit_reason: str


CSV_FIELDS = (
    "entry_time",
    "exit_time",
    "symbol",
    "contract",
    "quantity",
    "entry_price",
    "exit_price",
    "commission",
    "pnl",
    "rule",
    "exit_reason",
)


def _avg(fills: Sequence[FillInfo]) -> tuple[float, float]:
    qty = sum(f.quantity for f in fills)
    return qty, (sum(f.quantity * f.price for f in fills) / qty if qty else 0.0)


def round_trips(orders: Iterable[OrderInfo], fills: Iterable[FillInfo]) -> tuple[list[Trade], int]:
    """The closed round trips, in order of exit, and how many brackets are still open."""
    by_ref = {o.order_ref: o for o in orders}
    legs: dict[str, dict[str, list[FillInfo]]] = defaultdict(lambda: defaultdict(list))
    for f in fills:
        o = by_ref.get(f.order_ref)
        if o is None:
            continue
        legs[o.bracket_ref]["entry" if o.role == "entry" else "exit"].append(f)
    trades: list[Trade] = []
    still_open = 0
    for bracket in sorted(legs):
        entries = sorted(legs[bracket]["entry"], key=lambda f: f.at)
        exits = sorted(legs[bracket]["exit"], key=lambda f: f.at)
        bought, entry_px = _avg(entries)
        sold, exit_px = _avg(exits)
        if bought <= 0:
            continue
        if sold + 1e-9 < bought:
            still_open += 1
            continue
        first = by_ref[entries[0].order_ref]
        reasons: list[str] = []
        for f in exits:
            o = by_ref[f.order_ref]
            why = o.role if o.role != "exit" or not o.reason else f"exit: {o.reason}"
            if why not in reasons:
                reasons.append(why)
        commission = sum(f.commission for f in entries + exits)
        gross = (exit_px - entry_px) * bought * first.multiplier
        trades.append(
            Trade(
                symbol=first.symbol,
                rule=first.strategy,
                contract=first.contract,
                quantity=bought,
                entry_time=entries[0].at,
                exit_time=exits[-1].at,
                entry_price=entry_px,
                exit_price=exit_px,
                commission=commission,
                pnl=gross - commission,
                exit_reason="; ".join(reasons),
            )
        )
    trades.sort(key=lambda t: (t.exit_time, t.entry_time, t.symbol, t.contract))
    return trades, still_open


def max_drawdown(equity: Sequence[float]) -> tuple[float, float]:
    """The largest fall from a peak, in money and as a fraction of that peak (both >= 0)."""
    peak = -math.inf
    worst, worst_pct = 0.0, 0.0
    for value in equity:
        peak = max(peak, value)
        fall = peak - value
        if fall > worst:
            worst = fall
            worst_pct = fall / peak if peak > 0 else 0.0
    return worst, worst_pct


def daily_sharpe(daily_pnl: Sequence[float], start_equity: float) -> float:
    """Annualised Sharpe ratio of daily returns (252 days, zero risk-free rate); 0 when the
    returns do not vary (no trades, or fewer than two days)."""
    if len(daily_pnl) < 2 or start_equity <= 0:
        return 0.0
    equity = start_equity
    returns = []
    for pnl in daily_pnl:
        returns.append(pnl / equity if equity > 0 else 0.0)
        equity += pnl
    mean = sum(returns) / len(returns)
    var = sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    if var <= 1e-24:
        return 0.0
    return mean / math.sqrt(var) * math.sqrt(252)


def daily_pnl(trades: Iterable[Trade], days: Sequence[date], day_of) -> list[float]:
    """P&L per trading day (by exit), every day of `days` present, zero when nothing closed."""
    per = dict.fromkeys(days, 0.0)
    for t in trades:
        d = day_of(t.exit_time)
        if d in per:
            per[d] += t.pnl
    return [per[d] for d in days]


def equity_curve(trades: Sequence[Trade], start_equity: float) -> list[tuple[datetime, float]]:
    """Realized equity after each round trip, in exit order."""
    out, equity = [], start_equity
    for t in trades:
        equity += t.pnl
        out.append((t.exit_time, equity))
    return out


def _money(x: float) -> str:
    return f"{x:.2f}"


def trades_csv(trades: Iterable[Trade]) -> str:
    """One row per round trip; fixed formatting so equal runs give equal bytes."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for t in trades:
        w.writerow(
            [
                t.entry_time.isoformat(),
                t.exit_time.isoformat(),
                t.symbol,
                t.contract.replace(" ", ""),
                f"{t.quantity:g}",
                f"{t.entry_price:.4f}",
                f"{t.exit_price:.4f}",
                _money(t.commission),
                _money(t.pnl),
                t.rule,
                t.exit_reason,
            ]
        )
    return buf.getvalue()


def summarize(trades: Sequence[Trade], days: Sequence[date], day_of, start_equity: float) -> dict:
    """The headline figures (report.json's money part)."""
    wins = [t for t in trades if t.pnl > 0]
    per_day = daily_pnl(trades, days, day_of)
    curve = [start_equity] + [e for _, e in equity_curve(trades, start_equity)]
    dd, dd_pct = max_drawdown(curve)

    def group(key) -> dict:
        out: dict[str, dict] = {}
        for t in trades:
            g = out.setdefault(key(t), {"trades": 0, "wins": 0, "net_pnl": 0.0})
            g["trades"] += 1
            g["wins"] += t.pnl > 0
            g["net_pnl"] = round(g["net_pnl"] + t.pnl, 2)
        return dict(sorted(out.items()))

    return {
        "trades": len(trades),
        "wins": len(wins),
        "losses": len(trades) - len(wins),
        "win_rate": round(len(wins) / len(trades), 4) if trades else 0.0,
        "net_pnl": round(sum(t.pnl for t in trades), 2),
        "commissions": round(sum(t.commission for t in trades), 2),
        "max_drawdown": round(dd, 2),
        "max_drawdown_pct": round(dd_pct, 6),
        "sharpe": round(daily_sharpe(per_day, start_equity), 4),
        "start_equity": start_equity,
        "end_equity": round(curve[-1], 2),
        "daily_pnl": {d.isoformat(): round(p, 2) for d, p in zip(days, per_day, strict=True)},
        "by_symbol": group(lambda t: t.symbol),
        "by_rule": group(lambda t: t.rule),
    }


def quote_words(counts: dict | None) -> str:
    """Where the option quotes came from, in words (the summary and the page)."""
    c = counts or {}
    recorded, model = int(c.get("recorded", 0)), int(c.get("model", 0))
    stale = int(c.get("model_recorded_stale", 0))
    if not recorded:
        text = f"all {model:,} priced from the underlying by the simulator's model"
    else:
        text = (
            f"{recorded:,} from the recorded quotes, {model:,} priced from the underlying by "
            "the simulator's model"
        )
    if stale:
        text += f" ({stale:,} of those because the newest recorded quote was too old)"
    return text

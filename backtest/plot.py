"""The pictures and the page: DIR/equity.png (equity and drawdown) and DIR/report.html.

matplotlib is an optional extra (`pip install optionsbot[backtest]`): a Pi that only trades
does not need it, and without it the page is written with a note where the picture would be.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from backtest.report import CSV_FIELDS, Trade, quote_words


def equity_png(
    curve: Sequence[tuple[datetime, float]], start: datetime, start_equity: float, path: Path
) -> bool:
    """Realized equity, stepped at each round trip's exit, over its drawdown from the peak.
    False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a Pi or in CI
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    times = [start] + [t for t, _ in curve]
    equity = [start_equity] + [e for _, e in curve]
    peak, drawdown = -float("inf"), []
    for e in equity:
        peak = max(peak, e)
        drawdown.append(e - peak)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.step(times, equity, where="post", color="#1f6feb", linewidth=1.4)
    top.axhline(start_equity, color="#888", linewidth=0.8, linestyle="--")
    top.set_ylabel("equity ($, realized)")
    top.set_title("Backtest equity")
    top.grid(alpha=0.3)
    bottom.fill_between(times, drawdown, 0, step="post", color="#d1242f", alpha=0.5)
    bottom.set_ylabel("drawdown ($)")
    bottom.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return True


def _row(cells: Sequence[str], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"


def report_html(
    report: dict, trades: Sequence[Trade], picture: str | None, summary: list[str]
) -> str:
    """One self-contained page: the summary, the picture, the groups, the skips, every trade."""
    r = report
    head = [
        ("period", f"{r['from']} .. {r['to']} ({r['sessions']} sessions)"),
        ("symbols", ", ".join(r["symbols"])),
        ("market", r["market"]),
        ("option quotes", quote_words(r.get("option_quotes"))),
        ("trades", f"{r['trades']} (wins {r['wins']}, losses {r['losses']})"),
        ("net P&L", f"${r['net_pnl']:,.2f} after ${r['commissions']:,.2f} commissions"),
        ("max drawdown", f"${r['max_drawdown']:,.2f} ({r['max_drawdown_pct']:.2%})"),
        ("daily Sharpe", f"{r['sharpe']:.2f}"),
        ("equity", f"${r['start_equity']:,.2f} -> ${r['end_equity']:,.2f}"),
        (
            "signals",
            f"{r['signals']} ({', '.join(f'{k} {v}' for k, v in r['signals_by_rule'].items())})",
        ),
        ("entries placed", str(r["entries_placed"])),
        ("open at the end", str(r["open_at_end"])),
        ("speed", f"{r['bars_processed']:,} bars in {r['seconds']:.1f} s"),
    ]
    groups = "".join(
        _row([kind, name, g["trades"], g["wins"], f"{g['net_pnl']:,.2f}"])
        for kind in ("by_rule", "by_symbol")
        for name, g in r[kind].items()
    )
    skips = "".join(
        _row([k, v]) for k, v in sorted(r["skips_by_reason"].items(), key=lambda kv: -kv[1])
    )
    rows = "".join(
        _row(
            [
                t.entry_time.isoformat(timespec="minutes"),
                t.exit_time.isoformat(timespec="minutes"),
                t.symbol,
                t.contract.replace(" ", ""),
                f"{t.quantity:g}",
                f"{t.entry_price:.2f}",
                f"{t.exit_price:.2f}",
                f"{t.commission:.2f}",
                f"{t.pnl:,.2f}",
                t.rule,
                t.exit_reason,
            ]
        )
        for t in trades
    )
    img = (
        f'<img src="{html.escape(picture)}" alt="equity and drawdown">'
        if picture
        else "<p><em>equity.png not drawn: install matplotlib (pip install optionsbot[backtest])</em></p>"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>optionsbot backtest {html.escape(r["from"])} .. {html.escape(r["to"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; font-size: 13px; text-align: left; }}
th {{ background: #f3f3f3; }}
pre {{ background: #f6f8fa; padding: 1em; }}
</style></head><body>
<h1>Backtest {html.escape(r["from"])} .. {html.escape(r["to"])}</h1>
<table>{"".join(_row([k, v]) for k, v in head)}</table>
{img}
<h2>By rule and by symbol</h2>
<table>{_row(["group", "name", "trades", "wins", "net P&L"], "th")}{groups}</table>
<h2>Skipped entries, by reason</h2>
<table>{_row(["stage: reason", "count"], "th")}{skips}</table>
<h2>Trades</h2>
<table>{_row(CSV_FIELDS, "th")}{rows}</table>
<h2>Summary as printed</h2>
<pre>{html.escape(chr(10).join(summary))}</pre>
</body></html>
"""

"""`optionsbot backtest`: the service's actors over a market replayed as fast as they go."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import date
from pathlib import Path

log = logging.getLogger("optionsbot.backtest")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="optionsbot backtest",
        description="Run the service's own strategy, risk, option choice, orders and paper fills "
        "over the simulator's seeded market or recorded 1-minute bars; writes report.json, "
        "trades.csv, equity.png and report.html to --out.",
    )
    p.add_argument("--config", "-c", help="YAML settings file (default: configs/default.yaml)")
    p.add_argument("--from", dest="start", type=_date, required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="end", type=_date, required=True, help="last day, YYYY-MM-DD")
    p.add_argument(
        "--bars",
        type=Path,
        help="1-minute bars: a CSV (symbol,time,open,high,low,close,volume) or a service "
        "database with recorded bars (data.record_bars: true); default: the seeded simulator",
    )
    p.add_argument(
        "--quotes",
        type=Path,
        help="recorded option quotes: a CSV (time,symbol,expiry,strike,right,bid,ask) or a "
        "service database recorded with data.record_quotes: true; default: the --bars "
        "database's own, when it has any; else options are priced by the simulator's model",
    )
    p.add_argument(
        "--no-recorded-quotes",
        action="store_true",
        help="price every option by the simulator's model, even where the --bars database "
        "has recorded quotes",
    )
    p.add_argument(
        "--symbols", nargs="+", help="underlyings (default: the settings', or the file's)"
    )
    p.add_argument("--seed", type=int, help="the simulated market's seed (default: sim.seed)")
    p.add_argument("--out", type=Path, required=True, help="directory for the report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


class Progress:
    """One line on stderr, redrawn: how far, how fast."""

    def __init__(self, days: int, stream=sys.stderr, width: int = 30) -> None:
        self.days, self.stream, self.width = days, stream, width
        self.t0 = time.monotonic()

    def __call__(self, done: int, total: int, bars: int) -> None:
        frac = done / total if total else 1.0
        filled = int(frac * self.width)
        elapsed = max(1e-9, time.monotonic() - self.t0)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (self.width - filled)}] {frac:4.0%} "
            f"day {min(self.days, int(frac * self.days) + 1)}/{self.days}, {bars:,} bars, "
            f"{bars / elapsed:,.0f} bars/s "
        )
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def summary_lines(report: dict) -> list[str]:
    from backtest.report import quote_words

    r = report
    lines = [
        f"backtest {r['from']} .. {r['to']} ({r['sessions']} sessions), {', '.join(r['symbols'])}",
        f"  market: {r['market']}",
        f"  option quotes: {quote_words(r.get('option_quotes'))}",
        f"  trades {r['trades']} (wins {r['wins']}, losses {r['losses']}), net P&L "
        f"${r['net_pnl']:,.2f} after ${r['commissions']:,.2f} commissions",
        f"  max drawdown ${r['max_drawdown']:,.2f} ({r['max_drawdown_pct']:.2%}), daily Sharpe "
        f"{r['sharpe']:.2f}, equity ${r['start_equity']:,.0f} -> ${r['end_equity']:,.2f}",
        f"  signals {r['signals']}, ideas to risk {r['ideas']}, entries placed "
        f"{r['entries_placed']}, still open at the end {r['open_at_end']} (not in the P&L)",
    ]
    for rule, g in r["by_rule"].items():
        lines.append(f"  {rule}: {g['trades']} trades, {g['wins']} wins, ${g['net_pnl']:,.2f}")
    if r["skips_by_reason"]:
        top = sorted(r["skips_by_reason"].items(), key=lambda kv: -kv[1])[:5]
        lines.append("  skipped: " + ", ".join(f"{k} {v}" for k, v in top))
    if r.get("quotes_skipped"):
        lines.append(
            "  bad recorded quotes skipped: "
            + ", ".join(f"{k} {v}" for k, v in r["quotes_skipped"].items())
        )
    if r.get("bars_skipped"):
        lines.append(
            "  bad bars skipped: " + ", ".join(f"{k} {v}" for k, v in r["bars_skipped"].items())
        )
    lines.append(
        f"  {r['bars_processed']:,} bars in {r['seconds']:.1f}s: {r['bars_per_second']:,.0f} "
        f"bars/s, {r['days_per_minute']:.1f} days/min"
    )
    return lines


def main(argv: list[str]) -> int:
    from actors.cli import _load
    from configs.settings import SYMBOL_CHARS

    args = parser().parse_args(argv)
    if args.end < args.start:
        print("optionsbot backtest: --to is before --from", file=sys.stderr)
        return 2
    symbols = [s.strip().upper() for s in args.symbols or []]
    bad = [s for s in symbols if not s or set(s) - SYMBOL_CHARS or len(s) > 8]
    if bad:
        print(f"--symbols: {bad[0]!r} is not a US stock symbol (letters and '.')", file=sys.stderr)
        return 2
    if args.quotes is not None and args.no_recorded_quotes:
        print(
            "optionsbot backtest: --quotes and --no-recorded-quotes contradict each other; "
            "give one",
            file=sys.stderr,
        )
        return 2
    settings = _load(args.config)
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"optionsbot backtest: --out {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        filename=out / "backtest.log",
        filemode="w",
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    from actors.hours import MarketHours
    from backtest.bars import BarsError, load
    from backtest.engine import BacktestError, run
    from backtest.market import BarsMarket, SimMarket

    skipped: dict[str, int] = {}
    if args.bars is not None:
        hours = MarketHours(cache=out / "market-hours.json")
        try:
            loaded = load(args.bars, symbols or None, hours.is_open)
        except BarsError as exc:
            print(f"optionsbot backtest: {exc}", file=sys.stderr)
            return 2
        skipped = dict(sorted(loaded.skipped.items()))
        missing = [s for s in symbols if not loaded.bars.get(s)]
        if missing or not loaded.bars:
            what = ", ".join(missing) if missing else "any symbol"
            print(
                f"optionsbot backtest: --bars {args.bars}: no usable bars for {what}"
                + (f" (skipped: {skipped})" if skipped else ""),
                file=sys.stderr,
            )
            return 2
        in_range = [
            b
            for bars in loaded.bars.values()
            for b in bars
            if args.start <= MarketHours.trading_date(b.time) <= args.end
        ]
        if not in_range:
            print(
                f"optionsbot backtest: --bars {args.bars} has no bars from {args.start} to "
                f"{args.end}: choose dates the file covers",
                file=sys.stderr,
            )
            return 2
        symbols = symbols or sorted(loaded.bars)
        market = BarsMarket(loaded.bars, hours)
    else:
        symbols = symbols or list(settings.symbols)
        seed = args.seed if args.seed is not None else settings.sim.seed
        market = SimMarket(seed, symbols)
    from backtest.quotes import QuotesError, RecordedQuotes, backtest_window, is_sqlite
    from backtest.quotes import load as load_quotes

    quotes_skipped: dict[str, int] = {}
    source = args.quotes
    if source is None and not args.no_recorded_quotes and args.bars is not None:
        source = args.bars if is_sqlite(args.bars) else None
    if source is not None:
        try:
            book = load_quotes(source, symbols, backtest_window(args.start, args.end))
        except QuotesError as exc:
            print(f"optionsbot backtest: {exc}", file=sys.stderr)
            return 2
        quotes_skipped = dict(sorted(book.skipped.items()))
        if args.quotes is not None and not book.count:
            print(
                f"optionsbot backtest: --quotes {args.quotes}: no usable option quotes"
                + (f" for {', '.join(symbols)}" if symbols else "")
                + f" from {args.start} to {args.end}"
                + (f" (skipped: {quotes_skipped})" if quotes_skipped else "")
                + (
                    " (a service records them with data.record_quotes: true)"
                    if is_sqlite(args.quotes)
                    else "; fix the rows"
                )
                + ", or leave --quotes out to price options by the model",
                file=sys.stderr,
            )
            return 2
        if book.count:
            # The service's own bound on a quote's age: a recorded quote older than an entry
            # would accept is no better than none, and the model prices the moment instead.
            market = RecordedQuotes(
                market, book, settings.options.max_quote_age_s, source=source.name
            )
    settings = settings.model_copy(update={"symbols": tuple(symbols)})
    days = len(
        [
            s
            for s in MarketHours(cache=out / "market-hours.json").sessions
            if args.start <= s.date <= args.end
        ]
    )
    progress = None if args.quiet else Progress(max(days, 1))
    from actors.system import StartupError
    from backtest.pump import PumpFailure

    try:
        result = run(
            settings,
            market,
            args.start,
            args.end,
            out,
            progress=progress,
            extra={"bars_skipped": skipped, "quotes_skipped": quotes_skipped},
        )
    except BacktestError as exc:
        print(f"optionsbot backtest: {exc}", file=sys.stderr)
        return 2
    except (StartupError, PumpFailure) as exc:
        # As the service would have stopped: one line, the traceback in backtest.log.
        log.error("backtest stopped", exc_info=True)
        print(
            f"optionsbot backtest: stopped: {exc} (details in {out / 'backtest.log'})",
            file=sys.stderr,
        )
        return 1
    for line in summary_lines(result.report):
        print(line)
    print(f"  written: {', '.join(str(out / n) for n in result.files)}")
    return 0

"""Backtest and replay: the service's own actors over a recorded or generated market.

| module | what lives there | thread |
| --- | --- | --- |
| engine.py | BacktestSystem (System on the pump and the replay), the minute-by-minute driver, results | driver |
| pump.py | the deterministic scheduler: every actor's mailbox in one FIFO queue, one thread | driver |
| replay.py | ReplayConnection: answers the ConnectionActor's messages from a Market | driver (pump) |
| market.py | the markets: the simulator's seeded one, recorded bars; option prices by the sim's model | any (pure) |
| bars.py | bars from a CSV file or a service database, validated, bad rows skipped and counted | any (pure) |
| quotes.py | recorded option quotes (CSV or a service database), validated; RecordedQuotes, a Market that prices from them, else the model | driver |
| report.py | round trips from fills, drawdown, daily Sharpe, trades.csv | any (pure) |
| plot.py | equity.png (matplotlib, optional) and report.html | driver |
| cli.py | `optionsbot backtest`: arguments, the progress bar, the printed summary | main |
| history.py | `optionsbot history fetch`: 1-minute bars from a Gateway, paced and resumable | main (asyncio) |
"""

"""The simulated IB Gateway's server side of the TWS API, one module per concern.

| module | what lives there |
| --- | --- |
| gateway | SimServer: listening, handshake, sessions' lifecycle, the simulation step |
| sessions | ClientSession and its subscription records |
| dispatch | the tables message id -> gate and message id -> handler; the request path |
| gates | message rate, lines, historical pacing, request faults, held requests |
| faults | what active faults do: disconnects, restarts, farms, distorted quotes/bars/fills |
| contracts | contract lookup, details, option parameters, market rules |
| market_data | reqMktData, snapshots, delayed data, ticks, the book's quotes |
| history | historical bars, keepUpToDate, real-time bars |
| orders | placing and cancelling, open/completed orders, executions, book callbacks |
| account | account values and summary, portfolio, positions, P&L |
"""

from sim.server.gateway import SimServer
from sim.server.history import parse_bar_size
from sim.server.sessions import ClientSession, HistSub, MktDataSub, RealTimeSub

__all__ = ["ClientSession", "HistSub", "MktDataSub", "RealTimeSub", "SimServer", "parse_bar_size"]

"""The connection to IB Gateway: one actor, one asyncio loop, and the rooms between them.

| module | what lives there | thread |
| --- | --- | --- |
| actor.py | ConnectionActor: the connection machine, its handlers, the connection listeners | actor |
| session.py | the `ib_async.IB`, its loop and thread, the send gate, timers, connect and probe | loop |
| history.py | historical requests, keepUpToDate streams, gap requests, the session's last bar | loop |
| quotes.py | snapshots, streaming lines, quote marks and the brief recheck lines; option chains | loop |
| broker.py | placing and cancelling orders, order and account events, the broker's state, P&L | loop |
| convert.py | ib_async objects to our messages and back | any (pure) |

IB's error codes are in actors/ibcodes.py (the metrics, the orders and the doctor read them too).
"""

from actors.connection.actor import ConnectionActor, backoff_delay
from actors.connection.convert import bar_from_ib
from actors.connection.history import STREAM_KEEP, trim_stream
from actors.connection.session import back_off_on_error_100, install_gate

__all__ = [
    "STREAM_KEEP",
    "ConnectionActor",
    "back_off_on_error_100",
    "backoff_delay",
    "bar_from_ib",
    "install_gate",
    "trim_stream",
]

"""The order side: one actor and the pure rooms it calls.

| module | what lives there | thread |
| --- | --- | --- |
| actor.py | OrderActor: the working orders (one shared order machine), write-ahead persistence, I/O | actor |
| entry.py | the entry saga: candidates, the choice of contract, the bracket's legs and prices | any (pure) |
| accounting.py | fills to positions, exposure, P&L, the contract's own multiplier | any (pure) |
| reconcile.py | the broker's word against ours after a (re)connect: what to settle, what to fire | any (pure) |
| protection.py | the protection invariant: what every held contract needs at the broker | actor |
| adoption.py | the lost-database defence: vouching for the broker's state, `optionsbot adopt` | actor |
| paper.py | dry-run fills against live quotes | any (pure) |

The IB status to trigger mapping lives beside the order machine (machines/order.py).
"""

from actors.orders.actor import OrderActor

__all__ = ["OrderActor"]

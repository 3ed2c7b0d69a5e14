"""The order side: OrderActor (actor) and the pure rooms it calls (see actor.py's docstring)."""

from actors.orders.actor import OrderActor

__all__ = ["OrderActor"]

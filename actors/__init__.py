"""Pykka actors, their messages, and the system that wires them."""

import storage._lean  # noqa: F401, E402 - before anything imports sqlite-utils (see its doc)

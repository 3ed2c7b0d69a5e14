"""Pykka actors, their messages, and the system that wires them."""

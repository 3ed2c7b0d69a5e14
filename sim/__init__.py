"""Embedded IB Gateway simulator: scaled clock, seeded market model and TWS wire-protocol server."""

"""Pure trading logic: bar checks, indicators, scalp and whale rules, option choice, ticks, sizing, risk guards."""

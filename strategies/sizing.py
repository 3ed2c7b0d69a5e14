"""Position sizing: contracts from equity, risk per trade, the x100 multiplier and the stop distance."""

from __future__ import annotations

import math
from dataclasses import dataclass

# floor() of a ratio that should be a whole number (200 / 100.00000000000001) must not lose
# a contract to float noise; 1e-9 relative is far below a cent on any realistic account.
_FLOOR_SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class Sizing:
    contracts: int
    reason: str  # "<code>: <detail>"; code is ok, invalid_input, risk_budget, max_premium, max_contracts
    risk_per_contract: float  # premium * multiplier * stop_loss_pct, in account currency

    @property
    def code(self) -> str:
        return self.reason.split(":", 1)[0]


def _floor(x: float) -> int:
    return math.floor(x * (1.0 + _FLOOR_SLACK))


def size_position(
    equity: float,
    risk_per_trade: float,
    premium: float,
    multiplier: int,
    stop_loss_pct: float,
    max_contracts: int,
    max_premium: float,
) -> Sizing:
    """How many contracts to buy; 0 means skip, and the reason names the limit responsible.

    risk_per_contract = premium * multiplier * stop_loss_pct (the loss if the stop fills)
    by_risk    = floor(equity * risk_per_trade / risk_per_contract)
    by_premium = floor(max_premium / (premium * multiplier))
    contracts  = min(by_risk, by_premium, max_contracts)

    The reason is "ok: ..." naming the binding limit, or, for 0, "risk_budget: ...",
    "max_premium: ..." or "max_contracts: ..." (the first of these that is 0). Never rounds
    up to 1 contract. Inputs must be finite and positive, with risk_per_trade and
    stop_loss_pct at most 1; otherwise 0 contracts with "invalid_input: ...".
    """
    checks = (
        ("equity", equity),
        ("risk_per_trade", risk_per_trade),
        ("premium", premium),
        ("multiplier", multiplier),
        ("stop_loss_pct", stop_loss_pct),
        ("max_contracts", max_contracts),
        ("max_premium", max_premium),
    )
    for name, value in checks:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            return Sizing(
                0, f"invalid_input: {name} must be positive and finite, got {value!r}", 0.0
            )
    if risk_per_trade > 1 or stop_loss_pct > 1:
        return Sizing(
            0,
            f"invalid_input: risk_per_trade {risk_per_trade!r} and stop_loss_pct "
            f"{stop_loss_pct!r} must be at most 1",
            0.0,
        )

    cost = premium * multiplier
    risk_per_contract = cost * stop_loss_pct
    budget = equity * risk_per_trade
    by_risk = _floor(budget / risk_per_contract)
    by_premium = _floor(max_premium / cost)
    cap = int(max_contracts)

    if by_risk <= 0:
        return Sizing(
            0,
            f"risk_budget: one contract risks ${risk_per_contract:,.2f} "
            f"(${premium:.2f} x {multiplier} x {stop_loss_pct:.0%}) > budget ${budget:,.2f} "
            f"({risk_per_trade:.2%} of ${equity:,.2f})",
            risk_per_contract,
        )
    if by_premium <= 0:
        return Sizing(
            0,
            f"max_premium: one contract costs ${cost:,.2f} > max premium ${max_premium:,.2f}",
            risk_per_contract,
        )
    if cap <= 0:
        return Sizing(0, f"max_contracts: cap is {cap}", risk_per_contract)

    contracts = min(by_risk, by_premium, cap)
    if contracts == by_risk:
        binding = f"risk budget ${budget:,.2f} / ${risk_per_contract:,.2f} per contract"
    elif contracts == by_premium:
        binding = f"max premium ${max_premium:,.2f} / ${cost:,.2f} per contract"
    else:
        binding = f"max_contracts {cap}"
    return Sizing(contracts, f"ok: {contracts} contracts, limited by {binding}", risk_per_contract)

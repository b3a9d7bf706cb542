"""What risk hands the engine: order intents, denials, events and verdicts, and the limits it needs.

Owns the value types shared by `risk.layer`, `risk.machine`, `risk.checks` and the engine
(`OrderIntent`, `Denial`, `RiskEvent`, `Verdict`, `SymbolLimits`) and `closing_intent`, the
reduce-only intent that closes a whole position. (The foundation's minimal gate that lived here
is gone; `RiskLayer` still loads the state one saved.)

It must not decide anything, touch I/O, or keep money in floats: quantities are Decimal on the
instrument's qty step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from trader.domain import Side

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """An order risk wants placed; the engine turns it into an `Order` with a client id."""

    symbol: str
    side: Side
    qty: Decimal
    reduce_only: bool
    leg: str
    stop_loss: float | None = None
    take_profit: float | None = None


@dataclass(frozen=True, slots=True)
class Denial:
    """An intent risk refused, with a stable reason label and a free-text detail."""

    intent: OrderIntent
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """A state transition or denial worth storing in `risk_events`."""

    kind: str
    symbol: str
    detail: str


@dataclass(slots=True)
class Verdict:
    """What risk made of one decision (`events`: what to store in `risk_events`, if any)."""

    approved: list[OrderIntent] = field(default_factory=list)
    denied: list[Denial] = field(default_factory=list)
    events: list[RiskEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SymbolLimits:
    """The instrument facts sizing needs (passed in so risk stays free of trader I/O)."""

    qty_step: Decimal
    min_qty: Decimal
    min_notional_usdt: Decimal = _ZERO


def closing_intent(symbol: str, position_qty: Decimal, leg: str) -> OrderIntent:
    """A reduce-only intent closing the whole signed position `position_qty`."""
    side = Side.SELL if position_qty > 0 else Side.BUY
    return OrderIntent(symbol=symbol, side=side, qty=abs(position_qty), reduce_only=True, leg=leg)

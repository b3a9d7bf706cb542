"""The risk gate: the last word between a decision and a broker.

Owns sizing a decision into order intents, the pre-trade checks that approve or deny them with a
reason, and the trading state (ACTIVE / REDUCING / HALTED) driven by mark-to-market drawdown.
This is the foundation's minimal gate: per-symbol max notional (sizing caps at it, a check denies
anything above it) and `risk.max_drawdown` halting and flattening. The value types here
(`OrderIntent`, `Denial`, `RiskEvent`, `Verdict`, `SymbolLimits`) are shared with the full layer
in `risk.layer` (gross exposure, leverage, order rate, daily loss, stale feed, correlation, the
kill switch), which the engine uses instead of this gate (`RiskGate` is no longer built; the
layer loads the state a gate saved).

It must not know which model produced a decision, touch I/O, or keep money in floats: quantities
are Decimal on the instrument's qty step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

from risk.state import TradingState
from trader.domain import Action, Decision, Side

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


def round_qty_down(qty: Decimal, limits: SymbolLimits) -> Decimal:
    """Round a positive quantity down to the step; below the minimum it becomes zero."""
    steps = (qty / limits.qty_step).to_integral_value(rounding=ROUND_DOWN)
    rounded = steps * limits.qty_step
    return rounded if rounded >= limits.min_qty else _ZERO


class RiskGate:
    """Sizes decisions into intents, checks them, and holds the trading state.

    Args:
        max_position_notional_usdt: largest absolute position value per symbol.
        max_drawdown: fraction of peak mark-to-market equity lost that halts and flattens.
    """

    def __init__(self, *, max_position_notional_usdt: float, max_drawdown: float) -> None:
        self._max_notional = Decimal(repr(max_position_notional_usdt))
        self._max_drawdown = max_drawdown
        self.state = TradingState.ACTIVE
        self.reason = ""

    def review(
        self, decision: Decision, *, position_qty: Decimal, price: float, limits: SymbolLimits
    ) -> Verdict:
        """Turn a decision into approved and denied intents for the symbol's current position."""
        verdict = Verdict()
        action = decision.action
        if action is Action.HOLD:
            return verdict
        if action is Action.CLOSE_LONG or action is Action.CLOSE_SHORT:
            wants_long_closed = action is Action.CLOSE_LONG
            if (position_qty > 0) if wants_long_closed else (position_qty < 0):
                verdict.approved.append(closing_intent(decision.symbol, position_qty, "close"))
            return verdict
        direction = 1 if action is Action.BUY_LONG else -1
        if position_qty * direction < 0:
            # A flip: close the opposite position first (reducing always passes), then open.
            verdict.approved.append(closing_intent(decision.symbol, position_qty, "close"))
            position_qty = _ZERO
        target = self._target_qty(decision.size, price, limits)
        delta = target - abs(position_qty)
        if delta <= 0:
            return verdict
        intent = OrderIntent(
            symbol=decision.symbol,
            side=Side.BUY if direction > 0 else Side.SELL,
            qty=delta,
            reduce_only=False,
            leg="open",
            stop_loss=decision.stop_loss,
            take_profit=decision.take_profit,
        )
        reason = self._check_opening(intent, position_qty, price, limits)
        if reason:
            verdict.denied.append(Denial(intent, reason))
        else:
            verdict.approved.append(intent)
        return verdict

    def on_mark(self, *, drawdown: float) -> RiskEvent | None:
        """Apply the drawdown limit after equity was marked; returns the transition, if any."""
        if self.state is not TradingState.HALTED and drawdown >= self._max_drawdown:
            self.state = TradingState.HALTED
            self.reason = f"max_drawdown {drawdown:.4f} >= {self._max_drawdown}"
            return RiskEvent(kind="halted", symbol="", detail=self.reason)
        return None

    def flatten_intents(self, positions: dict[str, Decimal]) -> list[OrderIntent]:
        """Reduce-only intents closing every open position (used when halting)."""
        return [
            closing_intent(symbol, qty, "flatten")
            for symbol, qty in sorted(positions.items())
            if qty != 0
        ]

    def state_dict(self) -> dict[str, Any]:
        """JSON-able gate state saved with the run."""
        return {"state": self.state.value, "reason": self.reason}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.state = TradingState(state["state"])
        self.reason = str(state["reason"])

    def _target_qty(self, size: float, price: float, limits: SymbolLimits) -> Decimal:
        fraction = min(max(size, 0.0), 1.0)
        if fraction <= 0.0 or price <= 0.0:
            return _ZERO
        notional = self._max_notional * Decimal(repr(fraction))
        return round_qty_down(notional / Decimal(repr(price)), limits)

    def _check_opening(
        self, intent: OrderIntent, position_qty: Decimal, price: float, limits: SymbolLimits
    ) -> str:
        if self.state is not TradingState.ACTIVE:
            return f"state_{self.state.value.lower()}"
        if intent.qty < limits.min_qty:
            return "below_min_qty"
        resulting = (abs(position_qty) + intent.qty) * Decimal(repr(price))
        if resulting > self._max_notional:
            return "max_position_notional"
        return ""


def closing_intent(symbol: str, position_qty: Decimal, leg: str) -> OrderIntent:
    """A reduce-only intent closing the whole signed position `position_qty`."""
    side = Side.SELL if position_qty > 0 else Side.BUY
    return OrderIntent(symbol=symbol, side=side, qty=abs(position_qty), reduce_only=True, leg=leg)

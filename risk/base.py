"""The RiskPolicy protocol: the seam between the engine and whatever enforces risk.

Owns the contract every risk layer meets (the foundation's `RiskGate` now, the full layer with
exposure, leverage, rate, daily-loss and kill-switch rules later): size and check a decision,
react to each account mark, produce flattening intents, and save its state with the run. It must
not import the engine or know which model produced a decision.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from risk.gate import OrderIntent, RiskEvent, SymbolLimits, Verdict
from risk.state import TradingState
from trader.domain import Decision


class RiskPolicy(Protocol):
    """What the engine asks of risk; every order passes through `review` first."""

    state: TradingState

    def review(
        self, decision: Decision, *, position_qty: Decimal, price: float, limits: SymbolLimits
    ) -> Verdict:
        """Approved order intents and denials (with reasons) for one decision."""
        ...

    def on_mark(self, *, drawdown: float) -> RiskEvent | None:
        """Apply account-level limits after a mark; the transition to store, if any."""
        ...

    def flatten_intents(self, positions: dict[str, Decimal]) -> list[OrderIntent]:
        """Reduce-only intents closing every open position."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state saved with the run (a halt survives restarts)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        ...

"""The risk protocols: the seam between the engine and whatever enforces risk.

Owns the contracts a risk layer meets: size and check a decision, react to each account mark,
produce flattening intents, and save its state with the run. `RiskLayerPolicy` is the one the
engine speaks (met by `RiskLayer`): it takes every bar, exchange time, equity and all positions
explicitly, and has the kill switch. It must not import the engine or know which model produced
a decision.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from risk.context import RiskContext
from risk.gate import OrderIntent, Verdict
from risk.machine import RiskOutcome, StateReason
from risk.state import TradingState
from trader.domain import Bar, Decision


class RiskLayerPolicy(Protocol):
    """What the engine asks of the full risk layer; every order passes through `review` first.

    Each call that changes the trading state returns a `RiskOutcome`: its events go to
    `risk_events` and the bus, and `flatten` True means cancel pending orders and submit
    `flatten_intents` for every position.
    """

    @property
    def state(self) -> TradingState:
        """ACTIVE, REDUCING or HALTED."""
        ...

    def on_bar(self, bar: Bar) -> None:
        """Take in every confirmed bar (prices, ATR, stale-feed clock, return correlation)."""
        ...

    def on_mark(self, *, equity: Decimal, now_ms: int) -> RiskOutcome:
        """Apply drawdown and daily-loss limits to a mark-to-market equity at exchange time."""
        ...

    def review(self, decision: Decision, *, context: RiskContext) -> Verdict:
        """Approved order intents, denials with reasons, and the events to store."""
        ...

    def kill(self, *, reason: str, now_ms: int, flatten: bool = True) -> RiskOutcome:
        """HALTED with reason ``kill`` until `resume`."""
        ...

    def halt(self, *, reason: StateReason, detail: str, now_ms: int) -> RiskOutcome:
        """HALTED and flatten for another cause (``error`` when a core loop fails)."""
        ...

    def resume(self, *, reason: str, now_ms: int) -> RiskOutcome:
        """Lift a halt; limits are measured from the current equity."""
        ...

    def flatten_intents(self, positions: dict[str, Decimal]) -> list[OrderIntent]:
        """Reduce-only intents closing every open position."""
        ...

    def status(self) -> dict[str, Any]:
        """JSON-able state, reason and account figures for `trader status`."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state saved with the run (a halt or kill survives restarts)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        ...

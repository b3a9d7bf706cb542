"""The Strategy protocol and the read-only views a strategy decides from.

Owns the seam between the engine and every strategy (baselines now, the HRM later): what a
strategy sees for each symbol of a bar-close slice, what it returns, and how its state is saved
with the run. It must not touch the network, the database or the clock; it imports only
`trader.domain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from trader.domain import Bar, Decision


class FeatureView(Protocol):
    """Read-only access to one (symbol, interval) rolling feature buffer."""

    @property
    def ready(self) -> bool:
        """True once the strategic window is full of scaled feature vectors."""
        ...

    def raw(self, name: str) -> float:
        """The newest raw (unscaled) value of a market feature, by schema name."""
        ...

    def ema(self, period: int) -> float:
        """The newest exponential moving average of close for a period the buffer tracks."""
        ...

    def tactical_window(self) -> np.ndarray:
        """Scaled, clipped feature vectors of the tactical window, oldest first. # (T_tac, F)"""
        ...

    def strategic_window(self) -> np.ndarray:
        """Scaled, clipped feature vectors of the strategic window, oldest first. # (T_str, F)"""
        ...


# Not frozen: built for every symbol on every bar, and a frozen dataclass's __init__ costs
# about 4x a plain one's (object.__setattr__ per field). Treat it as read-only.
@dataclass(slots=True)
class AccountState:
    """The account for one symbol when the strategy decides (after this bar's fills)."""

    equity: float
    position_qty: float
    position_notional: float
    avg_price: float
    unrealized_pnl: float
    drawdown: float
    bars_in_position: int


# Not frozen: built for every symbol on every bar, and a frozen dataclass's __init__ costs
# about 4x a plain one's (object.__setattr__ per field). Treat it as read-only.
@dataclass(slots=True)
class SymbolContext:
    """Everything a strategy may use to decide for one symbol on one closed bar."""

    bar: Bar
    features: FeatureView
    account: AccountState


class Strategy(Protocol):
    """Decides for every symbol of one bar-close slice at once (one batched call)."""

    name: str
    model_version: str

    def decide(self, contexts: Sequence[SymbolContext]) -> list[Decision]:
        """Return exactly one Decision per context, in the same order."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state persisted with the run so a restart resumes the plan."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        ...


@runtime_checkable
class ModelHealth(Protocol):
    """What a model-backed strategy reports after each `decide` (the HRM and flat do).

    `last_rejections` lists the symbols whose inputs it refused (non-finite or out of range)
    with a reason, for this call only; `halted_reason` is set once the model itself failed, after
    which the strategy only holds. The engine turns both into risk events, the second into a halt.
    """

    last_rejections: list[tuple[str, str]]
    halted_reason: str | None

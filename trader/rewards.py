"""Per-decision rewards: the raw outcome of each decision over the next bar, HICRA-shaped.

Owns the bookkeeping between a decision and its outcome: at most one open decision per symbol,
holding the symbol's PnL and the account equity at decision time. When the symbol's next bar
has been filled and marked, the engine closes it and gets one `rewards` row. It must not read
the portfolio, bars or the clock itself (the engine passes the numbers in) nor choose weights.

Definitions, per decision on bar t for one symbol:

* ``raw_reward`` (USDT) = symbol PnL after bar t+1 is filled and marked - symbol PnL at the
  decision, where symbol PnL = realised + unrealised - fees: the symbol's mark-to-market change
  over the next bar, net of the fees paid on it.
* ``raw_return`` = raw_reward / account equity at the decision; 0 when that equity was not
  positive (a bust account has no return to speak of, and its row must still be written).
* ``shaped_reward`` = weight(decision_type) * raw_return (`strategies.hicra.shape_reward`).
* ``decision_type`` of the row is the type the reward is credited under: the decision's own,
  or strategic when the next bar closed the position by force (a risk flatten, the kill
  switch, a stop-loss or take-profit): DESIGN.md counts exits forced by risk as strategic, and
  HICRA puts its weight on them. The decisions row keeps the strategy's own type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from strategies.hicra import HicraWeights, shape_reward
from trader.domain import DecisionType
from trader.persistence.batch import Row


@dataclass(slots=True)
class _OpenDecision:
    decision_id: str
    bar_start_ms: int
    decision_type: DecisionType
    symbol_pnl: Decimal
    equity: Decimal


class RewardTracker:
    """Pairs each decision with the next bar's outcome and shapes the reward."""

    def __init__(self, weights: HicraWeights) -> None:
        """Create a tracker with no open decisions, shaping with `weights` (from config)."""
        self._weights = weights
        self._open: dict[str, _OpenDecision] = {}

    def open(
        self,
        decision_id: str,
        symbol: str,
        bar_start_ms: int,
        decision_type: DecisionType,
        symbol_pnl: Decimal,
        equity: Decimal,
    ) -> None:
        """Record a decision and the symbol's PnL and account equity when it was made.

        Raises:
            ValueError: the symbol already has an open decision (close it first), or the
                equity is not finite.
        """
        if symbol in self._open:
            pending = self._open[symbol].decision_id
            raise ValueError(f"{symbol}: decision {pending} is still open; close it first")
        # A non-positive equity is a bust account, not bad input: raising here would abort the
        # slice whose flatten must still be stored, on every restart.
        if not equity.is_finite():
            raise ValueError(f"{symbol}: equity at decision must be finite, got {equity}")
        # Runs once per bar and symbol: skip the enum lookup when given a member already.
        kind = decision_type if type(decision_type) is DecisionType else DecisionType(decision_type)
        self._open[symbol] = _OpenDecision(decision_id, bar_start_ms, kind, symbol_pnl, equity)

    def close(self, symbol: str, symbol_pnl: Decimal) -> Row | None:
        """Close the symbol's open decision with its PnL now; None when none is open.

        Returns:
            The rewards row: decision_id, symbol, bar_start_ms, raw_reward, raw_return,
            shaped_reward, decision_type, weight (the engine adds the run id).
        """
        decision = self._open.pop(symbol, None)
        if decision is None:
            return None
        change = symbol_pnl - decision.symbol_pnl
        # One division in Decimal, then a single conversion: no float error accumulates. A flat
        # symbol's change is zero on most bars: no division then.
        raw_return = float(change / decision.equity) if change and decision.equity > 0 else 0.0
        shaped, weight = shape_reward(raw_return, decision.decision_type, self._weights)
        return {
            "decision_id": decision.decision_id,
            "symbol": symbol,
            "bar_start_ms": decision.bar_start_ms,
            "raw_reward": float(change),
            "raw_return": raw_return,
            "shaped_reward": shaped,
            "decision_type": decision.decision_type._value_,  # not `.value`: per bar, slower
            "weight": weight,
        }

    def escalate(self, symbol: str) -> None:
        """Credit the symbol's open decision as strategic (a forced exit falls in its bar)."""
        decision = self._open.get(symbol)
        if decision is not None:
            decision.decision_type = DecisionType.STRATEGIC

    def is_open(self, symbol: str) -> bool:
        """True when the symbol has a decision awaiting its outcome."""
        return symbol in self._open

    def state_dict(self) -> dict[str, Any]:
        """JSON-able open decisions; Decimals as strings so the round trip is exact."""
        return {
            symbol: {
                "decision_id": decision.decision_id,
                "bar_start_ms": decision.bar_start_ms,
                "decision_type": decision.decision_type.value,
                "symbol_pnl": str(decision.symbol_pnl),
                "equity": str(decision.equity),
            }
            for symbol, decision in self._open.items()
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned, replacing the open decisions."""
        self._open = {
            symbol: _OpenDecision(
                decision_id=row["decision_id"],
                bar_start_ms=int(row["bar_start_ms"]),
                decision_type=DecisionType(row["decision_type"]),
                symbol_pnl=Decimal(row["symbol_pnl"]),
                equity=Decimal(row["equity"]),
            )
            for symbol, row in state.items()
        }

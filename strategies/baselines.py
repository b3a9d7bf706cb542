"""Rule-based baseline strategies: EMA cross, buy-and-hold, seeded random, and no-op.

Owns the baselines the HRM is judged against and the strategies the engine's tests and
benchmarks use. Each is a small class implementing `strategies.base.Strategy`. They must not
touch the network, the database or the clock, and keep all state in `state_dict()`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

from strategies.base import SymbolContext
from trader.domain import Action, Decision, DecisionType

_ACTIONS_BY_DRAW = (Action.BUY_LONG, Action.SELL_SHORT, Action.CLOSE_LONG, Action.CLOSE_SHORT)


class EmaCross:
    """Long when the fast EMA of close is above the slow one, short when below.

    Acts only on a cross: a flip from one side to the other is a strategic decision (DESIGN.md),
    the first entry after warm-up is tactical, everything else is a procedural HOLD. A position
    closed by a stop or by risk is not re-entered until the next cross.

    Args:
        fast: period of the fast EMA (one the feature buffer tracks: 8, 21, 50).
        slow: period of the slow EMA (21, 50, 200), longer than `fast`.
    """

    name = "ema_cross"

    def __init__(self, *, fast: int = 21, slow: int = 50) -> None:
        if slow <= fast:
            raise ValueError(f"slow EMA period {slow} must exceed the fast period {fast}")
        self.fast = fast
        self.slow = slow
        self.model_version = f"ema_cross/{fast}-{slow}"
        self._last_sign: dict[str, int] = {}

    def decide(self, contexts: Sequence[SymbolContext]) -> list[Decision]:
        """One decision per context; see the class docstring for the rule."""
        return [self._decide_one(context) for context in contexts]

    def _decide_one(self, context: SymbolContext) -> Decision:
        bar = context.bar
        fast = context.features.ema(self.fast)
        slow = context.features.ema(self.slow)
        sign = 1 if fast > slow else -1 if fast < slow else 0
        previous = self._last_sign.get(bar.symbol)
        self._last_sign[bar.symbol] = sign
        if previous is None or sign == 0 or sign == previous:
            return Decision.hold(bar.symbol, bar.start_ms, model_version=self.model_version)
        held = context.account.position_qty
        flips = (held > 0 and sign < 0) or (held < 0 and sign > 0)
        # Confidence grows with the EMA spread; 10 bp of spread is already a clear signal.
        confidence = math.tanh(abs(fast / slow - 1.0) * 1_000.0)
        return Decision(
            symbol=bar.symbol,
            bar_start_ms=bar.start_ms,
            action=Action.BUY_LONG if sign > 0 else Action.SELL_SHORT,
            size=1.0,
            confidence=confidence,
            decision_type=DecisionType.STRATEGIC if flips else DecisionType.TACTICAL,
            model_version=self.model_version,
        )

    def state_dict(self) -> dict[str, Any]:
        """The last EMA side seen per symbol (a cross needs the previous bar's side)."""
        return {"last_sign": dict(self._last_sign)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self._last_sign = {str(k): int(v) for k, v in state["last_sign"].items()}


class BuyAndHold:
    """Buys a full-size long on each symbol's first ready bar and holds it forever.

    The passive benchmark: its entry asks risk for no default stop-loss or take-profit
    (`Decision.default_exits`), so it stays long until a kill, a drawdown halt or the run's end,
    and never re-enters after one (sizing and every limit still apply).
    """

    name = "buy_hold"
    model_version = "buy_hold"

    def __init__(self) -> None:
        self._entered: set[str] = set()

    def decide(self, contexts: Sequence[SymbolContext]) -> list[Decision]:
        """BUY_LONG once per symbol, HOLD afterwards."""
        decisions = []
        for context in contexts:
            bar = context.bar
            if bar.symbol in self._entered:
                decisions.append(Decision.hold(bar.symbol, bar.start_ms, model_version="buy_hold"))
                continue
            self._entered.add(bar.symbol)
            decisions.append(
                Decision(
                    symbol=bar.symbol,
                    bar_start_ms=bar.start_ms,
                    action=Action.BUY_LONG,
                    size=1.0,
                    confidence=1.0,
                    decision_type=DecisionType.TACTICAL,
                    model_version=self.model_version,
                    default_exits=False,
                )
            )
        return decisions

    def state_dict(self) -> dict[str, Any]:
        """Symbols already bought."""
        return {"entered": sorted(self._entered)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self._entered = {str(symbol) for symbol in state["entered"]}


class RandomStrategy:
    """Seeded random actions, for exercising risk: stateless, so resume and replay agree.

    Every draw is a hash of (seed, symbol, bar start), so the decision for a bar never depends
    on how many bars were processed before it in this process.

    Args:
        seed: the strategy seed (`strategy.seed`).
        trade_probability: chance that a bar gets a non-HOLD action.
        size: fixed size fraction, or None for a uniform draw in (0, 1].
    """

    name = "random"

    def __init__(
        self, *, seed: int, trade_probability: float = 0.2, size: float | None = None
    ) -> None:
        if not 0.0 <= trade_probability <= 1.0:
            raise ValueError(f"trade_probability {trade_probability} is outside [0, 1]")
        self.seed = seed
        self.trade_probability = trade_probability
        self.size = size
        self.model_version = f"random/seed={seed}"

    def decide(self, contexts: Sequence[SymbolContext]) -> list[Decision]:
        """Draw an action per context from the hash of (seed, symbol, bar start)."""
        return [self._decide_one(context) for context in contexts]

    def _decide_one(self, context: SymbolContext) -> Decision:
        bar = context.bar
        digest = hashlib.blake2b(
            f"{self.seed}|{bar.symbol}|{bar.start_ms}".encode(), digest_size=12
        ).digest()
        u_trade, u_action, u_size = (
            int.from_bytes(digest[i : i + 4], "big") / 2**32 for i in (0, 4, 8)
        )
        if u_trade >= self.trade_probability:
            return Decision.hold(bar.symbol, bar.start_ms, model_version=self.model_version)
        action = _ACTIONS_BY_DRAW[int(u_action * len(_ACTIONS_BY_DRAW))]
        opens = action in (Action.BUY_LONG, Action.SELL_SHORT)
        return Decision(
            symbol=bar.symbol,
            bar_start_ms=bar.start_ms,
            action=action,
            size=self.size if self.size is not None else max(u_size, 1e-3),
            confidence=u_size,
            decision_type=DecisionType.TACTICAL if opens else DecisionType.STRATEGIC,
            model_version=self.model_version,
        )

    def state_dict(self) -> dict[str, Any]:
        """Nothing: every draw is derived from the bar itself."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""


class NoOp:
    """Always HOLD: measures the pipeline's own cost in benchmarks."""

    name = "noop"
    model_version = "noop"

    def decide(self, contexts: Sequence[SymbolContext]) -> list[Decision]:
        """A procedural HOLD per context."""
        return [Decision.hold(c.bar.symbol, c.bar.start_ms, model_version="noop") for c in contexts]

    def state_dict(self) -> dict[str, Any]:
        """Nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""

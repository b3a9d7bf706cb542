"""Baseline strategies: EMA cross rule, buy-and-hold, seeded random, no-op."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from strategies.base import AccountState, SymbolContext
from strategies.baselines import BuyAndHold, EmaCross, NoOp, RandomStrategy
from strategies.registry import build_strategy
from trader.domain import Action, Bar, DecisionType


@dataclass
class FakeFeatures:
    """A FeatureView whose EMAs the test sets directly."""

    emas: dict[int, float]
    ready: bool = True

    def raw(self, name: str) -> float:
        return 0.0

    def ema(self, period: int) -> float:
        return self.emas[period]

    def tactical_window(self) -> np.ndarray:
        return np.zeros((64, 3), dtype=np.float32)

    def strategic_window(self) -> np.ndarray:
        return np.zeros((256, 3), dtype=np.float32)


def _context(
    start_ms: int, fast: float, slow: float, qty: float = 0.0, symbol: str = "BTCUSDT"
) -> SymbolContext:
    bar = Bar(symbol, "5", start_ms, 100.0, 101.0, 99.0, 100.0, 1.0, 100.0)
    account = AccountState(10_000.0, qty, qty * 100.0, 100.0, 0.0, 0.0, 0)
    return SymbolContext(bar=bar, features=FakeFeatures({21: fast, 50: slow}), account=account)


def test_ema_cross_holds_until_a_cross_when_warming() -> None:
    """The first ready bar only records the side; no trade without a cross."""
    strategy = EmaCross(fast=21, slow=50)
    first = strategy.decide([_context(0, 101.0, 100.0)])[0]
    again = strategy.decide([_context(300_000, 102.0, 100.0)])[0]
    assert first.action is Action.HOLD
    assert again.action is Action.HOLD
    assert first.decision_type is DecisionType.PROCEDURAL


def test_ema_cross_buys_then_flips_when_emas_cross() -> None:
    """An up-cross enters long (tactical); a later down-cross while long is a strategic flip."""
    strategy = EmaCross(fast=21, slow=50)
    strategy.decide([_context(0, 99.0, 100.0)])
    entry = strategy.decide([_context(300_000, 101.0, 100.0)])[0]
    assert entry.action is Action.BUY_LONG
    assert entry.size == 1.0
    assert entry.decision_type is DecisionType.TACTICAL
    flip = strategy.decide([_context(600_000, 99.0, 100.0, qty=0.1)])[0]
    assert flip.action is Action.SELL_SHORT
    assert flip.decision_type is DecisionType.STRATEGIC
    assert 0.0 < flip.confidence <= 1.0


def test_ema_cross_state_round_trips_when_restored() -> None:
    """A restored strategy detects the same cross as the original would."""
    original = EmaCross(fast=21, slow=50)
    original.decide([_context(0, 99.0, 100.0)])
    restored = EmaCross(fast=21, slow=50)
    restored.load_state_dict(original.state_dict())
    assert restored.decide([_context(300_000, 101.0, 100.0)])[0].action is Action.BUY_LONG


def test_ema_cross_rejects_inverted_periods_when_built() -> None:
    """The slow period must exceed the fast one."""
    with pytest.raises(ValueError, match="must exceed"):
        EmaCross(fast=50, slow=21)


def test_buy_hold_buys_once_per_symbol_when_ready() -> None:
    """One BUY_LONG per symbol, HOLD ever after, also after a restore."""
    strategy = BuyAndHold()
    first = strategy.decide([_context(0, 1, 1), _context(0, 1, 1, symbol="ETHUSDT")])
    assert [d.action for d in first] == [Action.BUY_LONG, Action.BUY_LONG]
    restored = BuyAndHold()
    restored.load_state_dict(strategy.state_dict())
    assert restored.decide([_context(300_000, 1, 1)])[0].action is Action.HOLD


def test_random_is_reproducible_when_seeded() -> None:
    """Same seed and bars give the same decisions, regardless of call history."""
    contexts = [_context(i * 300_000, 1, 1) for i in range(200)]
    a = RandomStrategy(seed=3).decide(contexts)
    b_strategy = RandomStrategy(seed=3)
    b_strategy.decide(contexts[:50])  # history must not matter
    b = b_strategy.decide(contexts)
    assert a == b
    actions = {d.action for d in a}
    assert Action.HOLD in actions
    assert len(actions) >= 3
    assert RandomStrategy(seed=4).decide(contexts) != a


def test_noop_always_holds_when_deciding() -> None:
    """The no-op strategy returns a HOLD per context."""
    decisions = NoOp().decide([_context(0, 2, 1), _context(0, 1, 2, symbol="ETHUSDT")])
    assert [d.action for d in decisions] == [Action.HOLD, Action.HOLD]


def test_registry_refuses_unknown_name_when_building() -> None:
    """An unavailable strategy name is a clear error listing the choices."""
    assert build_strategy("ema_cross", seed=1).name == "ema_cross"
    with pytest.raises(ValueError, match="ema_cross"):
        build_strategy("no_such_strategy", seed=1)

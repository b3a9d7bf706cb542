"""RewardTracker: raw outcome over the next bar, return on equity, HICRA shaping and state."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from strategies.hicra import HicraWeights
from trader.domain import DecisionType
from trader.rewards import RewardTracker

WEIGHTS = HicraWeights(strategic=2.0, tactical=1.4, procedural=0.5)


@pytest.mark.parametrize(
    ("decision_type", "pnl_before", "pnl_after", "equity", "raw", "ret", "weight", "shaped"),
    [
        (DecisionType.STRATEGIC, "0", "25", "10000", 25.0, 0.0025, 2.0, 0.005),
        (DecisionType.TACTICAL, "0", "-12.5", "10000", -12.5, -0.00125, 1.4, -0.00175),
        (DecisionType.PROCEDURAL, "3", "3", "10000", 0.0, 0.0, 0.5, 0.0),
        # Realised 10 before; after: realised 10 + unrealised 5.5 - fee 0.55 = 14.95.
        (DecisionType.TACTICAL, "10", "14.95", "9990", 4.95, 4.95 / 9990, 1.4, 1.4 * 4.95 / 9990),
        (DecisionType.PROCEDURAL, "-4", "-6", "8000", -2.0, -0.00025, 0.5, -0.000125),
    ],
    ids=[
        "strategic-gain",
        "tactical-loss",
        "procedural-flat",
        "tactical-net-of-fee",
        "procedural-loss",
    ],
)
def test_row_matches_hand_computation_when_next_bar_closes(
    decision_type: DecisionType,
    pnl_before: str,
    pnl_after: str,
    equity: str,
    raw: float,
    ret: float,
    weight: float,
    shaped: float,
) -> None:
    """raw_reward is the symbol PnL change, raw_return divides by equity, shaping multiplies."""
    tracker = RewardTracker(WEIGHTS)
    tracker.open(
        "dec-1", "BTCUSDT", 1_750_000_200_000, decision_type, Decimal(pnl_before), Decimal(equity)
    )
    row = tracker.close("BTCUSDT", Decimal(pnl_after))
    assert row is not None
    assert row == {
        "decision_id": "dec-1",
        "symbol": "BTCUSDT",
        "bar_start_ms": 1_750_000_200_000,
        "raw_reward": pytest.approx(raw, rel=1e-12),
        "raw_return": pytest.approx(ret, rel=1e-12),
        "shaped_reward": pytest.approx(shaped, rel=1e-12),
        "decision_type": decision_type.value,
        "weight": weight,
    }


def test_close_returns_none_when_no_decision_is_open() -> None:
    """Closing a symbol without an open decision yields no row."""
    assert RewardTracker(WEIGHTS).close("BTCUSDT", Decimal(1)) is None


def test_decision_closes_once_when_close_repeats() -> None:
    """A decision produces one row; a second close finds nothing open."""
    tracker = RewardTracker(WEIGHTS)
    tracker.open("d", "BTCUSDT", 0, DecisionType.TACTICAL, Decimal(0), Decimal(100))
    assert tracker.is_open("BTCUSDT")
    assert tracker.close("BTCUSDT", Decimal(1)) is not None
    assert not tracker.is_open("BTCUSDT")
    assert tracker.close("BTCUSDT", Decimal(2)) is None


def test_symbols_are_independent_when_both_have_open_decisions() -> None:
    """Each symbol keeps its own open decision."""
    tracker = RewardTracker(WEIGHTS)
    tracker.open("a", "BTCUSDT", 0, DecisionType.TACTICAL, Decimal(0), Decimal(100))
    tracker.open("b", "ETHUSDT", 0, DecisionType.STRATEGIC, Decimal(5), Decimal(100))
    eth = tracker.close("ETHUSDT", Decimal(6))
    btc = tracker.close("BTCUSDT", Decimal(-1))
    assert eth is not None
    assert btc is not None
    assert (eth["decision_id"], eth["raw_reward"], eth["shaped_reward"]) == ("b", 1.0, 0.02)
    assert (btc["decision_id"], btc["raw_reward"]) == ("a", -1.0)


def test_open_rejects_second_decision_when_one_is_pending() -> None:
    """Only one decision per symbol may await its outcome."""
    tracker = RewardTracker(WEIGHTS)
    tracker.open("a", "BTCUSDT", 0, DecisionType.TACTICAL, Decimal(0), Decimal(100))
    with pytest.raises(ValueError, match="still open"):
        tracker.open("b", "BTCUSDT", 300_000, DecisionType.TACTICAL, Decimal(0), Decimal(100))


@pytest.mark.parametrize("equity", ["NaN", "Infinity"])
def test_open_rejects_equity_when_not_finite(equity: str) -> None:
    """A non-finite equity is a bug upstream, not an account state."""
    with pytest.raises(ValueError, match="equity"):
        RewardTracker(WEIGHTS).open("a", "X", 0, DecisionType.TACTICAL, Decimal(0), Decimal(equity))


@pytest.mark.parametrize("equity", ["0", "-1288.76"])
def test_bust_account_rewards_in_usdt_with_zero_return(equity: str) -> None:
    """Equity at or below zero still gives a row: the USDT outcome, a return of 0."""
    tracker = RewardTracker(WEIGHTS)
    tracker.open("a", "X", 0, DecisionType.STRATEGIC, Decimal("-50"), Decimal(equity))
    row = tracker.close("X", Decimal("-80"))
    assert row is not None
    assert row["raw_reward"] == -30.0
    assert row["raw_return"] == 0.0
    assert row["shaped_reward"] == 0.0
    assert row["weight"] == WEIGHTS.strategic


def test_state_round_trip_gives_same_row_when_restored() -> None:
    """A tracker restored from JSON closes its open decisions exactly like the original."""
    original = RewardTracker(WEIGHTS)
    original.open(
        "a", "BTCUSDT", 0, DecisionType.STRATEGIC, Decimal("1.23456789"), Decimal("9876.5")
    )
    restored = RewardTracker(WEIGHTS)
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    assert restored.state_dict() == original.state_dict()
    assert restored.close("BTCUSDT", Decimal("7.5")) == original.close("BTCUSDT", Decimal("7.5"))

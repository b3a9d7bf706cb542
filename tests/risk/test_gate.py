"""The foundation's risk gate: sizing, per-symbol notional cap, drawdown halt and flatten."""

from __future__ import annotations

from decimal import Decimal

import pytest

from risk.gate import RiskGate, SymbolLimits, round_qty_down
from risk.state import TradingState
from trader.domain import Action, Decision, Side

BTC = SymbolLimits(qty_step=Decimal("0.001"), min_qty=Decimal("0.001"))


def _decision(action: Action, size: float = 1.0) -> Decision:
    return Decision(symbol="BTCUSDT", bar_start_ms=0, action=action, size=size, confidence=1.0)


def _gate() -> RiskGate:
    return RiskGate(max_position_notional_usdt=5_000.0, max_drawdown=0.2)


@pytest.mark.parametrize(
    ("action", "position", "expected"),
    [
        # (action, current qty, [(side, qty, reduce_only, leg), ...])
        (Action.HOLD, "0", []),
        (Action.BUY_LONG, "0", [(Side.BUY, "0.100", False, "open")]),
        (Action.BUY_LONG, "0.04", [(Side.BUY, "0.060", False, "open")]),
        (Action.BUY_LONG, "0.100", []),
        (
            Action.BUY_LONG,
            "-0.05",
            [(Side.BUY, "0.05", True, "close"), (Side.BUY, "0.100", False, "open")],
        ),
        (Action.SELL_SHORT, "0", [(Side.SELL, "0.100", False, "open")]),
        (
            Action.SELL_SHORT,
            "0.05",
            [(Side.SELL, "0.05", True, "close"), (Side.SELL, "0.100", False, "open")],
        ),
        (Action.CLOSE_LONG, "0.05", [(Side.SELL, "0.05", True, "close")]),
        (Action.CLOSE_LONG, "-0.05", []),
        (Action.CLOSE_LONG, "0", []),
        (Action.CLOSE_SHORT, "-0.05", [(Side.BUY, "0.05", True, "close")]),
        (Action.CLOSE_SHORT, "0.05", []),
    ],
)
def test_review_sizes_intents_when_deciding(
    action: Action, position: str, expected: list[tuple[Side, str, bool, str]]
) -> None:
    """Each action becomes the right legs for the current position (size 1 = max notional)."""
    verdict = _gate().review(
        _decision(action), position_qty=Decimal(position), price=50_000.0, limits=BTC
    )
    got = [(i.side, i.qty, i.reduce_only, i.leg) for i in verdict.approved]
    assert got == [(side, Decimal(qty), reduce, leg) for side, qty, reduce, leg in expected]
    assert verdict.denied == []


def test_size_fraction_scales_target_when_below_one() -> None:
    """Half size targets half the maximum notional, rounded down to the qty step."""
    verdict = _gate().review(
        _decision(Action.BUY_LONG, size=0.5), position_qty=Decimal(0), price=30_000.0, limits=BTC
    )
    assert verdict.approved[0].qty == Decimal("0.083")  # 2,500 / 30,000 = 0.0833..


def test_tiny_target_is_no_order_when_below_min_qty() -> None:
    """A target below the minimum quantity rounds to zero and places nothing."""
    verdict = _gate().review(
        _decision(Action.BUY_LONG, size=0.001), position_qty=Decimal(0), price=100_000.0, limits=BTC
    )
    assert verdict.approved == []
    assert verdict.denied == []


def test_opening_is_denied_when_halted() -> None:
    """Once HALTED, nothing opens, but closing still passes."""
    gate = _gate()
    assert gate.on_mark(drawdown=0.25) is not None
    opened = gate.review(
        _decision(Action.BUY_LONG), position_qty=Decimal(0), price=50_000.0, limits=BTC
    )
    assert opened.approved == []
    assert [d.reason for d in opened.denied] == ["state_halted"]
    closed = gate.review(
        _decision(Action.CLOSE_LONG), position_qty=Decimal("0.1"), price=50_000.0, limits=BTC
    )
    assert [i.leg for i in closed.approved] == ["close"]


def test_drawdown_halts_once_when_crossing_limit() -> None:
    """Crossing max_drawdown halts with a reason; later marks do not repeat the event."""
    gate = _gate()
    assert gate.on_mark(drawdown=0.19) is None
    event = gate.on_mark(drawdown=0.2)
    assert event is not None
    assert event.kind == "halted"
    assert gate.state is TradingState.HALTED
    assert "max_drawdown" in gate.reason
    assert gate.on_mark(drawdown=0.3) is None


def test_flatten_closes_every_position_when_halting() -> None:
    """Flatten intents are reduce-only and cover every non-zero position."""
    intents = _gate().flatten_intents(
        {"ETHUSDT": Decimal("-2"), "BTCUSDT": Decimal("0.5"), "SOLUSDT": Decimal(0)}
    )
    assert [(i.symbol, i.side, i.qty, i.reduce_only, i.leg) for i in intents] == [
        ("BTCUSDT", Side.SELL, Decimal("0.5"), True, "flatten"),
        ("ETHUSDT", Side.BUY, Decimal("2"), True, "flatten"),
    ]


def test_state_round_trips_when_saved() -> None:
    """A halted gate restored from its state stays halted with its reason."""
    gate = _gate()
    gate.on_mark(drawdown=0.5)
    restored = _gate()
    restored.load_state_dict(gate.state_dict())
    assert restored.state is TradingState.HALTED
    assert restored.reason == gate.reason


@pytest.mark.parametrize(
    ("qty", "expected"), [("0.0019", "0.001"), ("0.0009", "0"), ("1.23456", "1.234")]
)
def test_round_qty_down_respects_step_when_rounding(qty: str, expected: str) -> None:
    """Quantities round down to the step and vanish below the minimum."""
    assert round_qty_down(Decimal(qty), BTC) == Decimal(expected)

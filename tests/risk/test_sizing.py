"""Volatility-targeted sizing, its scaling, step rounding, and default protective levels."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from risk.sizing import (
    default_protection,
    round_down_to_step,
    target_notional,
    unit_fraction,
    vol_target_notional,
)
from trader.domain import Side

D = Decimal


@pytest.mark.parametrize(
    ("equity", "price", "atr", "expected"),
    [
        # 10,000 x 1 % = 100 USDT at risk; stop 2 ATR = 200 -> 0.5 BTC = 25,000 USDT.
        ("10000", 50_000.0, 100.0, "25000"),
        # Twice the volatility, half the position.
        ("10000", 50_000.0, 200.0, "12500"),
        ("10000", 50_000.0, None, None),  # ATR unknown (warm-up)
        ("10000", 50_000.0, 0.0, None),
        ("10000", 50_000.0, math.nan, None),
        ("0", 50_000.0, 100.0, None),  # no equity, nothing to target
    ],
)
def test_vol_target_scales_inversely_with_atr_when_sizing(
    equity: str, price: float, atr: float | None, expected: str | None
) -> None:
    """The position whose 2-ATR stop loses 1 % of equity; unknown without a positive ATR."""
    got = vol_target_notional(
        equity=D(equity), price=price, atr=atr, risk_per_trade=0.01, stop_atr_multiple=2.0
    )
    assert got == (None if expected is None else D(expected))


@pytest.mark.parametrize(
    ("caps", "size", "confidence", "budget", "expected"),
    [
        (["5000", "30000", "25000"], 1.0, 1.0, None, "5000"),  # smallest cap wins
        (["5000", "30000", None], 0.5, 1.0, None, "2500"),  # unknown vol cap is skipped
        (["5000", "30000", "2000"], 1.0, 0.5, None, "1000"),  # times confidence
        (["5000", "30000", "2000"], 1.0, 0.5, 0.5, "500"),  # times the risk budget
        (["5000"], 2.0, 1.5, 7.0, "5000"),  # factors are clamped to 1
        (["5000"], -1.0, 1.0, None, "0"),  # and to 0
        (["5000"], math.nan, 1.0, None, "0"),  # NaN sizes nothing
        (["-10", "5000"], 1.0, 1.0, None, "0"),  # a negative cap (no equity) is zero
        ([None], 1.0, 1.0, None, "0"),
    ],
)
def test_target_notional_takes_smallest_cap_times_factors(
    caps: list[str | None],
    size: float,
    confidence: float,
    budget: float | None,
    expected: str,
) -> None:
    """Target = min(known caps) x size x confidence x risk budget, each factor in [0, 1]."""
    got = target_notional(
        [None if c is None else D(c) for c in caps],
        size=size,
        confidence=confidence,
        risk_budget=budget,
    )
    assert got == D(expected)


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "1"), (0.25, "0.25"), (3.0, "1"), (-0.1, "0"), (math.inf, "0")]
)
def test_unit_fraction_clamps_when_scaling(value: float | None, expected: str) -> None:
    """Missing factors do not scale; others are clamped to [0, 1] and non-finite ones are 0."""
    assert unit_fraction(value) == D(expected)


@pytest.mark.parametrize(
    ("qty", "step", "expected"),
    [("0.0999", "0.001", "0.099"), ("5", "0.1", "5.0"), ("-1", "0.1", "0"), ("7", "2", "6")],
)
def test_round_down_to_step_never_rounds_up(qty: str, step: str, expected: str) -> None:
    """Quantities are rounded down to whole steps, so sized orders stay inside their caps."""
    assert round_down_to_step(D(qty), D(step)) == D(expected)


@pytest.mark.parametrize(
    ("side", "atr", "given", "expected"),
    [
        (Side.BUY, 100.0, (None, None), (49_800.0, 50_300.0)),
        (Side.SELL, 100.0, (None, None), (50_200.0, 49_700.0)),
        (Side.BUY, 100.0, (49_000.0, None), (49_000.0, 50_300.0)),  # the strategy's stop stays
        (Side.SELL, 100.0, (None, 40_000.0), (50_200.0, 40_000.0)),
        (Side.BUY, None, (None, None), (None, None)),  # no ATR yet: nothing to fill in
        (Side.BUY, 30_000.0, (None, None), (None, 140_000.0)),  # a stop below zero is dropped
    ],
)
def test_default_protection_fills_missing_levels_from_atr(
    side: Side,
    atr: float | None,
    given: tuple[float | None, float | None],
    expected: tuple[float | None, float | None],
) -> None:
    """Missing stop-loss / take-profit sit 2 / 3 ATRs from the price, on the side's sides."""
    got = default_protection(
        side=side,
        price=50_000.0,
        atr=atr,
        stop_loss=given[0],
        take_profit=given[1],
        stop_atr_multiple=2.0,
        take_profit_atr_multiple=3.0,
    )
    assert got == expected

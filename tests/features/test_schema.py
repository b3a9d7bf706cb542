"""The feature schema: names, scaling classes, the schema hash and the account vector."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trader.features.schema import (
    ACCOUNT_FEATURES,
    BOUNDED_FEATURES,
    MARKET_FEATURE_SPECS,
    MARKET_FEATURES,
    ROBUST_MASK,
    account_vector,
    feature_schema_hash,
)

BASE = {"tactical_window": 64, "strategic_window": 256, "scale_window": 256, "clip": 5.0}


def test_names_unique_and_defined_when_schema_loaded() -> None:
    """Every market feature has a unique name and a one-line definition."""
    assert len(set(MARKET_FEATURES)) == len(MARKET_FEATURES)
    assert all(spec.definition and "\n" not in spec.definition for spec in MARKET_FEATURE_SPECS)
    assert {"tod_sin", "dow_cos", "rsi_14", "bb_squeeze"} <= BOUNDED_FEATURES
    assert ROBUST_MASK.tolist() == [name not in BOUNDED_FEATURES for name in MARKET_FEATURES]


def test_hash_is_stable_when_parameters_equal() -> None:
    """The same parameters always give the same digest, with clip as int or float."""
    assert feature_schema_hash(**BASE) == feature_schema_hash(**{**BASE, "clip": 5})  # type: ignore[arg-type]
    assert len(feature_schema_hash(**BASE)) == 64  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [{"tactical_window": 32}, {"strategic_window": 512}, {"scale_window": 128}, {"clip": 4.0}],
)
def test_hash_changes_when_a_parameter_changes(change: dict[str, float]) -> None:
    """Each window length and the clip are part of the digest."""
    assert feature_schema_hash(**{**BASE, **change}) != feature_schema_hash(**BASE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("notional", "equity", "pnl", "drawdown", "bars"),
    [
        (0.0, 10_000.0, 0.0, 0.0, 0),
        (1e12, 1.0, 1e12, 1.0, 10**9),
        (-1e12, 1.0, -1e12, 0.5, 1),
        (5_000.0, 10_000.0, -150.0, 0.03, 12),
    ],
)
def test_account_vector_is_bounded_when_inputs_are_extreme(
    notional: float, equity: float, pnl: float, drawdown: float, bars: int
) -> None:
    """Every account feature lies in [-1, 1] (drawdown and bars in [0, 1]) whatever the size."""
    vector = account_vector(
        position_notional=notional,
        equity=equity,
        unrealized_pnl=pnl,
        drawdown=drawdown,
        bars_in_position=bars,
    )
    assert vector.shape == (len(ACCOUNT_FEATURES),)
    assert vector.dtype == np.float32
    assert np.all(np.abs(vector) <= 1.0)
    assert vector[2] >= 0.0
    assert vector[3] >= 0.0
    assert np.sign(vector[0]) == np.sign(notional)


def test_account_vector_scales_when_inputs_are_typical() -> None:
    """Leverage 1, 2% PnL, 10% drawdown and 64 bars each map to tanh(1)."""
    vector = account_vector(
        position_notional=-10_000.0,
        equity=10_000.0,
        unrealized_pnl=200.0,
        drawdown=0.1,
        bars_in_position=64,
    )
    expected = [-math.tanh(1.0), math.tanh(1.0), math.tanh(1.0), math.tanh(1.0)]
    np.testing.assert_allclose(vector, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "change",
    [
        {"equity": 0.0},
        {"equity": -5.0},
        {"drawdown": 1.5},
        {"drawdown": -0.1},
        {"bars_in_position": -1},
        {"unrealized_pnl": math.nan},
    ],
)
def test_account_vector_raises_when_inputs_are_invalid(change: dict[str, float]) -> None:
    """Non-positive equity, a drawdown outside [0, 1], negative bars or NaN are refused."""
    kwargs = {
        "position_notional": 100.0,
        "equity": 1_000.0,
        "unrealized_pnl": 0.0,
        "drawdown": 0.0,
        "bars_in_position": 0,
        **change,
    }
    with pytest.raises(ValueError, match=r"equity|drawdown|bars_in_position|finite"):
        account_vector(**kwargs)  # type: ignore[arg-type]

"""HICRA weights: the table of weights by decision type, shaping and validation."""

from __future__ import annotations

import pytest

from strategies.hicra import HicraWeights, shape_reward, weight_for
from trader.config import RewardSettings
from trader.domain import DecisionType

WEIGHTS = HicraWeights(strategic=2.25, tactical=1.5, procedural=0.5)


@pytest.mark.parametrize(
    ("decision_type", "weight"),
    [
        (DecisionType.STRATEGIC, 2.25),
        (DecisionType.TACTICAL, 1.5),
        (DecisionType.PROCEDURAL, 0.5),
        ("strategic", 2.25),
    ],
)
def test_weight_follows_table_when_type_given(decision_type: DecisionType, weight: float) -> None:
    """Each decision type maps to its configured weight (the stored string form too)."""
    assert weight_for(decision_type, WEIGHTS) == weight


@pytest.mark.parametrize(
    ("raw_return", "decision_type", "shaped", "weight"),
    [
        (0.001, DecisionType.STRATEGIC, 0.00225, 2.25),
        (-0.004, DecisionType.TACTICAL, -0.006, 1.5),
        (0.01, DecisionType.PROCEDURAL, 0.005, 0.5),
        (0.0, DecisionType.STRATEGIC, 0.0, 2.25),
    ],
)
def test_shaped_reward_is_weighted_return_when_shaped(
    raw_return: float, decision_type: DecisionType, shaped: float, weight: float
) -> None:
    """The shaped reward is the weight times the raw return, returned with the weight."""
    actual_shaped, actual_weight = shape_reward(raw_return, decision_type, WEIGHTS)
    assert actual_shaped == pytest.approx(shaped)
    assert actual_weight == weight


def test_seed_example_ranks_types_when_base_reward_is_equal() -> None:
    """Seed 000's ordering holds: strategic > tactical > procedural for the same outcome."""
    shaped = [shape_reward(10.0, kind, WEIGHTS)[0] for kind in DecisionType]
    assert shaped == sorted(shaped, reverse=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("strategic", 1.99),
        ("strategic", 2.51),
        ("tactical", 1.29),
        ("tactical", 1.51),
        ("procedural", -0.01),
        ("procedural", 1.01),
        ("tactical", float("nan")),
    ],
)
def test_weights_reject_value_when_outside_range(field: str, value: float) -> None:
    """A weight outside its HICRA range (or NaN) raises naming the field."""
    values = {"strategic": 2.0, "tactical": 1.4, "procedural": 0.5, field: value}
    with pytest.raises(ValueError, match=field):
        HicraWeights(**values)


@pytest.mark.parametrize(
    ("strategic", "tactical", "procedural"), [(2.0, 1.3, 0.0), (2.5, 1.5, 1.0)]
)
def test_weights_accept_bounds_when_on_range_edges(
    strategic: float, tactical: float, procedural: float
) -> None:
    """Range ends are inclusive."""
    assert HicraWeights(strategic, tactical, procedural).strategic == strategic


def test_weights_come_from_config_when_built_from_settings() -> None:
    """from_config copies the rewards section of the settings."""
    settings = RewardSettings(strategic_weight=2.4, tactical_weight=1.3, procedural_weight=0.25)
    assert HicraWeights.from_config(settings) == HicraWeights(2.4, 1.3, 0.25)


@pytest.mark.parametrize("raw_return", [float("nan"), float("inf"), float("-inf")])
def test_shape_rejects_return_when_not_finite(raw_return: float) -> None:
    """Non-finite returns are refused instead of poisoning training batches."""
    with pytest.raises(ValueError, match="finite"):
        shape_reward(raw_return, DecisionType.TACTICAL, WEIGHTS)

"""HICRA reward shaping: weight each decision's outcome by its place in the hierarchy.

Owns the weight per decision type (strategic > tactical > procedural, seed 000), the ranges
those weights may take, and the shaping of a raw return. It must not choose the weights (they
come from config: `rewards.strategic_weight` and friends), compute raw returns, or import
anything from `trader` beyond the domain types.

HICRA (Hierarchy-Aware Credit Assignment) concentrates the learning signal on the decisions
that carry the plan: regime switches, exits, risk-forced actions. Entries and scaling get a
moderate boost; holds and routine updates are damped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from trader.domain import DecisionType

#: Allowed weight ranges (inclusive), from seed 000: strategic 2.0-2.5x, tactical 1.3-1.5x;
#: procedural is a damping factor in [0, 1].
STRATEGIC_RANGE = (2.0, 2.5)
TACTICAL_RANGE = (1.3, 1.5)
PROCEDURAL_RANGE = (0.0, 1.0)


class RewardWeightConfig(Protocol):
    """Any config section carrying the three weights (e.g. `trader.config.RewardSettings`)."""

    @property
    def strategic_weight(self) -> float:
        """Weight of strategic decisions."""
        ...

    @property
    def tactical_weight(self) -> float:
        """Weight of tactical decisions."""
        ...

    @property
    def procedural_weight(self) -> float:
        """Weight of procedural decisions."""
        ...


@dataclass(frozen=True, slots=True)
class HicraWeights:
    """Reward weight per decision type, validated against the HICRA ranges.

    Raises:
        ValueError: a weight is outside its range (or NaN); the message names the field.
    """

    strategic: float
    tactical: float
    procedural: float

    def __post_init__(self) -> None:
        for name, value, (low, high) in (
            ("strategic", self.strategic, STRATEGIC_RANGE),
            ("tactical", self.tactical, TACTICAL_RANGE),
            ("procedural", self.procedural, PROCEDURAL_RANGE),
        ):
            # Written as a negated conjunction so that NaN fails it too.
            if not (low <= value <= high):
                raise ValueError(f"{name} weight must be in [{low}, {high}], got {value!r}")

    @classmethod
    def from_config(cls, config: RewardWeightConfig) -> HicraWeights:
        """Build the weights from the `rewards` config section."""
        return cls(
            strategic=config.strategic_weight,
            tactical=config.tactical_weight,
            procedural=config.procedural_weight,
        )


def weight_for(decision_type: DecisionType, weights: HicraWeights) -> float:
    """The reward weight of one decision type (its stored string form is accepted too).

    Raises:
        ValueError: `decision_type` names no decision type.
    """
    # Once per decision: skip the enum constructor (a Python-level lookup) for a member.
    kind = decision_type if type(decision_type) is DecisionType else DecisionType(decision_type)
    if kind is DecisionType.STRATEGIC:
        return weights.strategic
    if kind is DecisionType.TACTICAL:
        return weights.tactical
    return weights.procedural


def shape_reward(
    raw_return: float, decision_type: DecisionType, weights: HicraWeights
) -> tuple[float, float]:
    """Scale a raw return by its decision type's weight.

    Returns:
        (shaped, weight): the shaped reward ``weight * raw_return`` and the weight used.

    Raises:
        ValueError: `raw_return` is NaN or infinite (it would poison the learner's batches).
    """
    if not math.isfinite(raw_return):
        raise ValueError(f"raw_return must be finite, got {raw_return!r}")
    weight = weight_for(decision_type, weights)
    return weight * raw_return, weight

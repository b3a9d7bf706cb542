"""Training losses of the HRM over deep-supervision segments: forecasts, regime and ACT Q.

Owns the supervised loss of one `Rollout`: log-cosh on the next-bar and horizon returns (ATR
units), BCE with label smoothing on the direction, cross-entropy on the regime, and the ACT
Q-head's BCE against Q-learning targets (halt: the direction call was right; continue: the next
segment's best Q, or its halt Q when that segment is the last allowed). When the targets carry
them, auxiliary terms train the confidence (BCE against "the direction call was right"), the
stop-loss and take-profit distances (log-cosh against volatility-scaled distances) and the
strategic risk budget (BCE). Each segment's losses count only for rows still active in it.
Weights are named and come from the caller (defaults from seed 004). It must not build targets
from bars (that is `targets.py`), step an optimiser or do I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from strategies.hrm.heads import HRMOutputs
from strategies.hrm.model import Rollout


@dataclass(frozen=True, slots=True)
class HRMTargets:
    """Supervised targets of one batch, built strictly from bars after the decision bar."""

    next_return: Tensor  # (B,) next-bar log return / ATR
    direction: Tensor  # (B,) 1.0 when the next return is positive, else 0.0
    horizon_returns: Tensor  # (B, H) log returns over the model's horizons / ATR
    regime: Tensor  # (B,) long index into model.REGIMES
    stop_loss_atr: Tensor | None = None  # (B,) ATR distances scaled from forward volatility
    take_profit_atr: Tensor | None = None  # (B,)
    risk_budget: Tensor | None = None  # (B,) in [0, 1]


@dataclass(frozen=True, slots=True)
class LossWeights:
    """Weights of the loss terms; seed 004's w_r = 1, w_d = 0.25, w_q = 0.1 by default.

    `confidence`, `stops` and `risk_budget` weigh the auxiliary terms (used only when the
    targets carry stop and budget targets).
    """

    next_return: float = 1.0
    direction: float = 0.25
    q: float = 0.1
    horizons: float = 0.5
    regime: float = 0.25
    label_smoothing: float = 0.1
    confidence: float = 0.1
    stops: float = 0.05
    risk_budget: float = 0.05

    def __post_init__(self) -> None:
        values = (
            self.next_return,
            self.direction,
            self.q,
            self.horizons,
            self.regime,
            self.confidence,
            self.stops,
            self.risk_budget,
        )
        if min(values) < 0.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("loss weights must be >= 0 and label_smoothing in [0, 1)")


def log_cosh(error: Tensor) -> Tensor:
    """log(cosh(x)), computed without overflow for large |x|."""
    return error + F.softplus(-2.0 * error) - math.log(2.0)


def rollout_loss(
    rollout: Rollout, targets: HRMTargets, weights: LossWeights, *, max_segments: int
) -> tuple[Tensor, dict[str, float]]:
    """Mean loss over the rollout's segments, and its parts as floats for logging.

    Args:
        rollout: what `HRM.rollout` returned.
        targets: the batch's targets.
        weights: loss weights.
        max_segments: the model's `act_max_segments` (decides the last segment's Q target).
    """
    parts: dict[str, float] = {}
    total = torch.zeros((), device=targets.next_return.device)
    for m, (out, active) in enumerate(zip(rollout.outputs, rollout.active, strict=True)):
        following = rollout.outputs[m + 1] if m + 1 < len(rollout.outputs) else None
        terms = _segment_terms(out, following, targets, weights, is_last=m + 2 >= max_segments)
        mask = active.float()
        count = mask.sum().clamp(min=1.0)
        for name, (weight, per_row) in terms.items():
            value = (per_row * mask).sum() / count
            total = total + weight * value
            parts[name] = parts.get(name, 0.0) + float(value.detach()) / len(rollout.outputs)
    loss = total / len(rollout.outputs)
    parts["loss"] = float(loss.detach())
    return loss, parts


def _segment_terms(
    out: HRMOutputs,
    following: HRMOutputs | None,
    targets: HRMTargets,
    weights: LossWeights,
    *,
    is_last: bool,
) -> dict[str, tuple[float, Tensor]]:
    """Per-row loss terms of one segment, with their weights. # (B,) each"""
    smooth = weights.label_smoothing
    direction = targets.direction * (1.0 - smooth) + 0.5 * smooth
    correct = ((out.direction_logit > 0) == (targets.direction > 0.5)).float()
    q_loss = F.binary_cross_entropy_with_logits(out.q_halt, correct, reduction="none")
    if following is not None:
        with torch.no_grad():
            best = torch.maximum(following.q_halt, following.q_continue)
            target = torch.sigmoid(following.q_halt if is_last else best)
        q_loss = q_loss + F.binary_cross_entropy_with_logits(
            out.q_continue, target, reduction="none"
        )
    terms = {
        "next_return": (weights.next_return, log_cosh(out.next_return - targets.next_return)),
        "direction": (
            weights.direction,
            F.binary_cross_entropy_with_logits(out.direction_logit, direction, reduction="none"),
        ),
        "horizons": (
            weights.horizons,
            log_cosh(out.horizon_returns - targets.horizon_returns).mean(dim=-1),
        ),
        "regime": (
            weights.regime,
            F.cross_entropy(out.regime_logits, targets.regime, reduction="none"),
        ),
        "q": (weights.q, q_loss),
    }
    terms.update(_auxiliary_terms(out, targets, weights, correct))
    return terms


def _auxiliary_terms(
    out: HRMOutputs, targets: HRMTargets, weights: LossWeights, correct: Tensor
) -> dict[str, tuple[float, Tensor]]:
    """Confidence, stop distances and risk budget, when the targets carry them. # (B,) each"""
    stop, take, budget = targets.stop_loss_atr, targets.take_profit_atr, targets.risk_budget
    if stop is None or take is None or budget is None:
        return {}
    # The heads are squashed already; BCE on their logits keeps autocast and gradients sane.
    confidence_logit = torch.logit(out.confidence.float(), eps=1e-6)
    budget_logit = torch.logit(out.risk_budget.float(), eps=1e-6)
    return {
        "confidence": (
            weights.confidence,
            F.binary_cross_entropy_with_logits(confidence_logit, correct, reduction="none"),
        ),
        "stops": (
            weights.stops,
            log_cosh(out.stop_loss_atr - stop) + log_cosh(out.take_profit_atr - take),
        ),
        "risk_budget": (
            weights.risk_budget,
            F.binary_cross_entropy_with_logits(budget_logit, budget, reduction="none"),
        ),
    }

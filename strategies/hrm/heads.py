"""The typed tensors at the model boundary: FeatureBatch in, HRMOutputs out, and the head layout.

Owns what both the HRM and the flat baseline take and give: the input batch, the order of the
action logits and regimes, the column layout of the fused tactical head, its decoding into named
outputs (squashing sizes, confidences and ATR distances into their ranges) and its untrained
initialisation. Return heads are in ATR units: a log return divided by the bar's `atr_14` (ATR
over close), so one head serves instruments of any volatility. It must not hold model layers or
do I/O.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trader.domain import Action

#: Order of the action logits.
ACTIONS: tuple[Action, ...] = (
    Action.BUY_LONG,
    Action.SELL_SHORT,
    Action.CLOSE_LONG,
    Action.CLOSE_SHORT,
    Action.HOLD,
)
REGIMES: tuple[str, ...] = ("trending", "ranging", "volatile")
# Column layout of the fused tactical head, after the action logits and the horizon returns.
SCALAR_HEADS = 9
_SIZE, _CONF, _STOP, _TAKE, _VALUE, _NEXT, _DIR, _Q_HALT, _Q_CONT = range(SCALAR_HEADS)
#: Positions of the confidence and Q columns among the scalar heads (ACT reads them raw).
CONFIDENCE, Q_HALT, Q_CONTINUE = _CONF, _Q_HALT, _Q_CONT
#: Positions of the size and value columns among the scalar heads (policy learning trains them).
SIZE, VALUE = _SIZE, _VALUE
_STOP_INIT_ATR, _TAKE_INIT_ATR = 1.5, 3.0
_Q_HALT_INIT, _Q_CONT_INIT = -5.0, -5.5  # untrained: prefer halting, Q near 0 (pessimistic)


def tactical_outputs(horizons: int) -> int:
    """Width of the fused tactical head: 5 action logits, the horizon returns, 9 scalars."""
    return len(ACTIONS) + horizons + SCALAR_HEADS


@dataclass(frozen=True, slots=True)
class FeatureBatch:
    """One batch of model inputs (typed, no string keys).

    `strategic` holds the strategic windows of the rows listed in `strategic_rows` only (all
    rows when `strategic_rows` is None); None means no row runs the strategic module.
    """

    tactical: Tensor  # (B, T_tac, F) scaled features, oldest first
    account: Tensor  # (B, A) scaled account vector
    instrument: Tensor  # (B,) long instrument bucket
    timeframe: Tensor  # (B,) long timeframe index
    strategic: Tensor | None = None  # (S, T_str, F)
    strategic_rows: Tensor | None = None  # (S,) long rows of the batch, ascending

    def rows(self) -> Tensor:
        """Row indices the strategic windows belong to. # (S,) long"""
        if self.strategic_rows is not None:
            return self.strategic_rows
        return torch.arange(self.tactical.shape[0], device=self.tactical.device)

    def tactical_only(self, rows: Tensor) -> FeatureBatch:
        """The tactical inputs of some rows, with no strategic windows."""
        return FeatureBatch(
            self.tactical[rows], self.account[rows], self.instrument[rows], self.timeframe[rows]
        )


@dataclass(frozen=True, slots=True)
class HRMOutputs:
    """Decoded heads, one row per batch row. Returns are in ATR units (see module docstring)."""

    action_logits: Tensor  # (B, 5) in ACTIONS order
    size: Tensor  # (B,) in [0, 1]
    confidence: Tensor  # (B,) in [0, 1]
    stop_loss_atr: Tensor  # (B,) > 0
    take_profit_atr: Tensor  # (B,) > 0
    value: Tensor  # (B,)
    next_return: Tensor  # (B,) next-bar log return / ATR
    direction_logit: Tensor  # (B,) logit of P(next return > 0)
    horizon_returns: Tensor  # (B, H) log return over config.horizons / ATR
    q_halt: Tensor  # (B,) ACT Q logits
    q_continue: Tensor  # (B,)
    regime_logits: Tensor  # (B, 3) in REGIMES order
    risk_budget: Tensor  # (B,) in [0, 1]

    def tensors(self) -> list[Tensor]:
        """Every head in field order (the order the constructor takes them positionally)."""
        return [getattr(self, name) for name in OUTPUT_FIELDS]

    @staticmethod
    def decode(
        tactical: Tensor, strategic: Tensor, *, horizons: int, min_atr_distance: float
    ) -> HRMOutputs:
        """Split the fused heads (B, tactical_outputs(horizons)) and (B, 4) into named outputs."""
        tactical, strategic = tactical.float(), strategic.float()
        n_act, n_hor = len(ACTIONS), horizons
        scalars = tactical[:, n_act + n_hor :]  # (B, 9)
        floor = min_atr_distance
        return HRMOutputs(
            action_logits=tactical[:, :n_act],
            size=torch.sigmoid(scalars[:, _SIZE]),
            confidence=torch.sigmoid(scalars[:, _CONF]),
            stop_loss_atr=F.softplus(scalars[:, _STOP]) + floor,
            take_profit_atr=F.softplus(scalars[:, _TAKE]) + floor,
            value=scalars[:, _VALUE],
            next_return=scalars[:, _NEXT],
            direction_logit=scalars[:, _DIR],
            horizon_returns=tactical[:, n_act : n_act + n_hor],
            q_halt=scalars[:, _Q_HALT],
            q_continue=scalars[:, _Q_CONT],
            regime_logits=strategic[:, :3],
            risk_budget=torch.sigmoid(strategic[:, 3]),
        )


#: HRMOutputs' field names in order (dataclasses.fields costs microseconds on every call).
OUTPUT_FIELDS = tuple(f.name for f in dataclasses.fields(HRMOutputs))


def init_tactical_head_(head: nn.Linear, *, horizons: int, min_atr_distance: float) -> None:
    """Start the fused tactical head at sane untrained outputs (stops 1.5 ATR, Q pessimistic)."""
    base = len(ACTIONS) + horizons
    with torch.no_grad():
        for column, target in ((_STOP, _STOP_INIT_ATR), (_TAKE, _TAKE_INIT_ATR)):
            excess = torch.tensor(target - min_atr_distance)
            head.bias[base + column] = excess + torch.log(-torch.expm1(-excess))  # softplus⁻¹
        for column, bias in ((_Q_HALT, _Q_HALT_INIT), (_Q_CONT, _Q_CONT_INIT)):
            head.weight[base + column].zero_()
            head.bias[base + column] = bias

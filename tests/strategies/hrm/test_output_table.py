"""The streaming strategy's one-table reading of the heads: the same floats, the same checks.

`HRMStrategy` reads every head of a slice through one (B, C) table (one transfer, one finiteness
check, one conversion to floats). These tests hold it to the per-head conversion it replaced, bit
for bit, and to halting on a non-finite value in any head, even one no decision reads.
"""

from __future__ import annotations

import dataclasses

import torch

from strategies.hrm.checkpoint import LoadedModel, fresh_model
from strategies.hrm.heads import ACTIONS, FeatureBatch, HRMOutputs
from strategies.hrm.model import HRM, HRMCarry, HRMConfig, Inference
from strategies.hrm.policy import SymbolOutputs
from strategies.hrm.strategy import HRMStrategy, output_table, row_outputs
from tests.strategies.hrm.streams import Stream, fixture_bars
from trader.domain import Action

HORIZONS = (1, 8, 32)


def _outputs(rows: int, seed: int) -> HRMOutputs:
    """Random heads of `rows` rows; the first rows' action logits hold ties and signed zeros."""
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    logits = draw(rows, len(ACTIONS))
    logits[0] = torch.tensor([0.5, 2.0, 2.0, -1.0, 2.0])  # a three-way tie: the first wins
    logits[1] = torch.tensor([-0.0, 0.0, -1.0, -2.0, -3.0])  # equal zeros of both signs
    return HRMOutputs(
        action_logits=logits,
        size=torch.sigmoid(draw(rows)),
        confidence=torch.sigmoid(draw(rows)),
        stop_loss_atr=draw(rows).abs() + 0.25,
        take_profit_atr=draw(rows).abs() + 0.25,
        value=draw(rows),
        next_return=draw(rows),
        direction_logit=draw(rows) * 1e-7,  # near 0: sigmoid rounding decides > 0.5
        horizon_returns=draw(rows, len(HORIZONS)),
        q_halt=draw(rows),
        q_continue=draw(rows),
        regime_logits=draw(rows, 3),
        risk_budget=torch.sigmoid(draw(rows)),
    )


def _per_head(out: HRMOutputs, j: int, atr_relative: float, horizon_bars: int) -> SymbolOutputs:
    """The conversion the strategy made before: one tensor element of each head at a time."""
    if horizon_bars == 1:
        in_atr = float(out.next_return[j])
    else:
        in_atr = float(out.horizon_returns[j, HORIZONS.index(horizon_bars)])
    return SymbolOutputs(
        action=ACTIONS[int(out.action_logits[j].argmax())],
        size=float(out.size[j]),
        confidence=float(out.confidence[j]),
        stop_loss_atr=float(out.stop_loss_atr[j]),
        take_profit_atr=float(out.take_profit_atr[j]),
        expected_return=in_atr * atr_relative,
        up_probability=float(torch.sigmoid(out.direction_logit[j])),
        risk_budget=float(out.risk_budget[j]),
    )


def test_table_rows_equal_the_per_head_conversion_bit_for_bit() -> None:
    """Every field of every row is the very float the per-head conversion gives, ties included."""
    out = _outputs(rows=50, seed=4)
    table, starts = output_table(out)
    values = table.tolist()
    for j in range(50):
        for horizon_bars in HORIZONS:
            got = row_outputs(
                table,
                values[j],
                j,
                starts,
                atr_relative=0.0123,
                horizons=HORIZONS,
                horizon_bars=horizon_bars,
            )
            assert got == _per_head(out, j, 0.0123, horizon_bars), (j, horizon_bars)
    assert (
        row_outputs(
            table, values[0], 0, starts, atr_relative=1.0, horizons=HORIZONS, horizon_bars=1
        ).action
        is Action.SELL_SHORT
    )


class _NaNValueHRM(HRM):
    """An HRM whose value head (read by no decision) turns NaN."""

    def infer(self, carry: HRMCarry, batch: FeatureBatch) -> Inference:
        result = super().infer(carry, batch)
        value = torch.full_like(result.outputs.value, float("nan"))
        return dataclasses.replace(result, outputs=dataclasses.replace(result.outputs, value=value))


def test_non_finite_head_halts_the_strategy_when_no_decision_reads_it() -> None:
    """A NaN in any head is a model failure: every symbol HOLDs and the strategy halts."""
    healthy = fresh_model("hrm", preset="tiny", seed=2)
    broken = _NaNValueHRM(HRMConfig.preset("tiny"), seed=2).eval()
    broken.load_state_dict(healthy.model.state_dict())
    strategy = HRMStrategy(LoadedModel(broken, healthy.meta), device="cpu", strategic_every=10)
    stream = Stream({"BTCUSDT": fixture_bars("BTCUSDT")})
    stream.warm()
    while strategy.halted_reason is None:
        decisions = strategy.decide(stream.step())
        assert all(d.action is Action.HOLD for d in decisions)
    assert "non-finite" in strategy.halted_reason
    assert strategy.carry_of("BTCUSDT") is None

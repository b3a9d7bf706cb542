"""The HRM and flat models: shapes, the 1-step gradient, ACT bounds, determinism, losses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from strategies.hrm.flat import FlatConfig, FlatTransformer
from strategies.hrm.heads import CONFIDENCE, SCALAR_HEADS, FeatureBatch, HRMOutputs
from strategies.hrm.model import HRM, HRMConfig, count_parameters
from strategies.training.losses import HRMTargets, LossWeights, rollout_loss

TINY = HRMConfig.preset("tiny")


def _batch(size: int, *, strategic: bool = True, seed: int = 0) -> FeatureBatch:
    g = torch.Generator().manual_seed(seed)
    return FeatureBatch(
        tactical=torch.randn(size, 12, TINY.n_features, generator=g).clamp(-5, 5),
        account=torch.rand(size, TINY.n_account, generator=g) * 2 - 1,
        instrument=torch.randint(0, TINY.instrument_buckets, (size,), generator=g),
        timeframe=torch.randint(0, 12, (size,), generator=g),
        strategic=torch.randn(size, 24, TINY.n_features, generator=g) if strategic else None,
    )


def _targets(size: int) -> HRMTargets:
    g = torch.Generator().manual_seed(1)
    returns = torch.randn(size, generator=g)
    return HRMTargets(
        next_return=returns,
        direction=(returns > 0).float(),
        horizon_returns=torch.randn(size, len(TINY.horizons), generator=g),
        regime=torch.randint(0, 3, (size,), generator=g),
    )


def _set_q(
    model: HRM, *, halt: float, cont: float, spread: float = 0.0, confidence: float | None = None
) -> None:
    """Fix the Q head's biases (random weights of scale `spread` make rows differ), and
    optionally pin every row's confidence logit."""
    n = model.config.tactical_outputs
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        head = model.tactical_head
        head.weight[n - 2 :] = torch.randn(2, head.in_features, generator=g) * spread
        head.bias[n - 2], head.bias[n - 1] = halt, cont
        if confidence is not None:
            column = n - SCALAR_HEADS + CONFIDENCE
            head.weight[column] = 0.0
            head.bias[column] = confidence


def test_outputs_have_documented_shapes_when_inferring() -> None:
    """Every head has its (B, ...) shape and range; the carry keeps its shape."""
    model = HRM(TINY, seed=0).eval()
    with torch.inference_mode():
        result = model.infer(model.initial_carry(3), _batch(3))
    out = result.outputs
    assert out.action_logits.shape == (3, 5)
    assert out.horizon_returns.shape == (3, len(TINY.horizons))
    assert out.regime_logits.shape == (3, 3)
    for name in ("size", "confidence", "stop_loss_atr", "take_profit_atr", "value", "q_halt"):
        assert getattr(out, name).shape == (3,)
    assert ((out.size >= 0) & (out.size <= 1)).all()
    assert ((out.risk_budget >= 0) & (out.risk_budget <= 1)).all()
    assert (out.stop_loss_atr >= TINY.min_atr_distance).all()
    assert (out.take_profit_atr > 0).all()
    assert result.carry.z_strategic.shape == (3, TINY.strategic_tokens, TINY.strategic_width)
    assert result.carry.z_tactical.shape == (3, TINY.tactical_tokens, TINY.tactical_width)
    assert result.act_steps.shape == (3,)


def test_strategic_update_changes_only_marked_rows_when_rows_given() -> None:
    """z_H moves only for the rows whose strategic windows are passed."""
    model = HRM(TINY, seed=0).eval()
    full = _batch(4)
    assert full.strategic is not None
    partial = dataclasses.replace(
        full, strategic=full.strategic[[1, 3]], strategic_rows=torch.tensor([1, 3])
    )
    carry = model.initial_carry(4)
    with torch.inference_mode():
        result = model.infer(carry, partial)
    moved = (result.carry.z_strategic != carry.z_strategic).flatten(1).any(dim=1)
    assert moved.tolist() == [False, True, False, True]


def _grad_calls(model: HRM, config: HRMConfig) -> dict[str, list[bool]]:
    """Run one training segment and record, per fL/fH block-0 call, whether it kept a graph."""
    calls: dict[str, list[bool]] = {"tactical": [], "strategic": []}

    def recorder(name: str) -> Callable[[nn.Module, object, tuple[Tensor, object]], None]:
        def hook(module: nn.Module, args: object, output: tuple[Tensor, object]) -> None:
            calls[name].append(output[0].grad_fn is not None)

        return hook

    model.tactical.blocks[0].register_forward_hook(recorder("tactical"))
    model.strategic.blocks[0].register_forward_hook(recorder("strategic"))
    _, out = model.segment(model.initial_carry(2), _batch(2))
    loss = out.next_return.sum() + out.risk_budget.sum()
    loss.backward()
    return calls


def test_gradient_flows_only_through_last_steps_when_training() -> None:
    """Inner steps run without a graph; only the last fL and fH calls (and encodings) keep one."""
    config = dataclasses.replace(TINY, cycles=3, tactical_steps=4)
    model = HRM(config, seed=0).train()
    calls = _grad_calls(model, config)
    # One-layer stacks encode windows as keys/values only, so block calls are refinements:
    # fL runs (N-1)*T steps inside the cycles and T after the last fH; only the very last
    # keeps a graph. fH runs N updates; only the last keeps a graph.
    assert calls["tactical"] == [False] * (3 * 4 - 1) + [True]
    assert calls["strategic"] == [False, False, True]
    assert model.strategic.blocks[0].ffn.down.weight.grad is not None
    assert model.tactical.blocks[0].ffn.down.weight.grad is not None


def _graph_size(loss: Tensor) -> int:
    seen: set[object] = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return len(seen)


@pytest.mark.parametrize(("cycles", "steps"), [(2, 2), (4, 6)])
def test_graph_size_is_independent_of_depth_when_training(cycles: int, steps: int) -> None:
    """The autograd graph of a segment is as large for N x T = 4 x 6 as for 1 x 1 (O(1) memory)."""
    sizes = []
    for n, t in ((1, 1), (cycles, steps)):
        model = HRM(dataclasses.replace(TINY, cycles=n, tactical_steps=t), seed=0).train()
        _, out = model.segment(model.initial_carry(2), _batch(2))
        sizes.append(_graph_size(out.next_return.sum() + out.risk_budget.sum()))
    assert sizes[0] == sizes[1]


def test_act_halts_between_min_and_max_when_q_varies() -> None:
    """Per-row segments stay in [M_min, M_max], or [M_min, scaled M_max] when unconfident."""
    config = dataclasses.replace(
        TINY, act_min_segments=2, act_max_segments=4, act_max_segments_scaled=6
    )
    model = HRM(config, seed=0).eval()
    _set_q(model, halt=0.0, cont=0.0, spread=3.0)
    with torch.inference_mode():
        result = model.infer(model.initial_carry(32), _batch(32))
    steps = result.act_steps
    confident = result.outputs.confidence >= config.act_confidence_threshold
    assert ((steps >= 2) & (steps <= 6)).all()
    assert (steps[confident] <= 4).all()
    assert len(set(steps.tolist())) > 1


@pytest.mark.parametrize(
    ("halt", "cont", "confidence", "steps"),
    [(5.0, -5.0, 5.0, 2), (-5.0, 5.0, 5.0, 4), (5.0, -5.0, -5.0, 6), (-5.0, 5.0, -5.0, 6)],
)
def test_act_uses_bounds_when_q_is_decisive(
    halt: float, cont: float, confidence: float, steps: int
) -> None:
    """Confident rows halt at M_min when Q says halt and run to M_max when it says continue;
    unconfident rows run to the scaled M_max either way (inference-time scaling)."""
    config = dataclasses.replace(
        TINY, act_min_segments=2, act_max_segments=4, act_max_segments_scaled=6
    )
    model = HRM(config, seed=0).eval()
    _set_q(model, halt=halt, cont=cont, confidence=confidence)
    with torch.inference_mode():
        result = model.infer(model.initial_carry(8), _batch(8))
    assert result.act_steps.tolist() == [steps] * 8


def test_rollout_runs_segments_within_bounds_when_training() -> None:
    """Training ACT halts each row in [1, M_max]; later segments mask halted rows out."""
    config = dataclasses.replace(TINY, act_max_segments=3, act_exploration=0.5)
    model = HRM(config, seed=0).train()
    _set_q(model, halt=0.0, cont=0.0, spread=3.0)
    rollout = model.rollout(
        model.initial_carry(16), _batch(16), generator=torch.Generator().manual_seed(0)
    )
    assert 1 <= len(rollout.outputs) <= 3
    assert ((rollout.act_steps >= 1) & (rollout.act_steps <= 3)).all()
    assert rollout.active[0].all()
    for before, after in zip(rollout.active, rollout.active[1:], strict=False):
        assert not (after & ~before).any()
    assert rollout.carry.z_tactical.grad_fn is None


def test_loss_backpropagates_finite_gradients_when_rolled_out() -> None:
    """The deep-supervision loss is finite and reaches both levels and the heads."""
    model = HRM(TINY, seed=0).train()
    rollout = model.rollout(model.initial_carry(8), _batch(8))
    loss, parts = rollout_loss(
        rollout, _targets(8), LossWeights(), max_segments=TINY.act_max_segments
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert {"next_return", "direction", "horizons", "regime", "q", "loss"} <= parts.keys()
    for module in (model.strategic, model.tactical, model.tactical_head, model.input_strategic):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads
        assert all(torch.isfinite(g).all() for g in grads)


def _outputs_equal(a: HRMOutputs, b: HRMOutputs) -> bool:
    return all(torch.equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))


def test_same_seed_gives_identical_outputs_when_rebuilt() -> None:
    """Two models from one seed give bit-identical outputs; another seed differs."""
    outs = []
    for seed in (3, 3, 4):
        model = HRM(TINY, seed=seed).eval()
        with torch.inference_mode():
            outs.append(model.infer(model.initial_carry(4), _batch(4)).outputs)
    assert _outputs_equal(outs[0], outs[1])
    assert not _outputs_equal(outs[0], outs[2])


def test_flat_baseline_matches_heads_when_inferring() -> None:
    """The flat model gives the same outputs as the HRM, one segment, carry untouched."""
    model = FlatTransformer(FlatConfig.preset("tiny"), seed=0).eval()
    hrm = HRM(TINY, seed=0).eval()
    carry = model.initial_carry(3)
    with torch.inference_mode():
        result = model.infer(carry, _batch(3))
        reference = hrm.infer(hrm.initial_carry(3), _batch(3)).outputs
    for field in dataclasses.fields(reference):
        got, want = getattr(result.outputs, field.name), getattr(reference, field.name)
        assert (got.shape, got.dtype) == (want.shape, want.dtype), field.name
    assert result.act_steps.tolist() == [1, 1, 1]
    assert result.carry is carry
    with pytest.raises(ValueError, match="strategic window"):
        model.infer(carry, _batch(3, strategic=False))


def test_presets_fit_their_budgets_when_counted() -> None:
    """`small` flat and HRM have similar parameter counts; the HRM `base` sizes fit < 30M."""
    hrm, flat = HRM(HRMConfig.preset("small")), FlatTransformer(FlatConfig.preset("small"))
    assert abs(count_parameters(flat) / count_parameters(hrm) - 1.0) < 0.15
    base = HRMConfig.preset("base")
    assert (base.strategic_width, base.strategic_layers, base.heads) == (512, 4, 8)
    assert (base.tactical_width, base.tactical_layers) == (256, 3)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        params = count_parameters(HRM(base))
    assert params < 30_000_000


def test_inference_keeps_float32_carry_when_autocast_to_bf16() -> None:
    """Under bf16 autocast (the GPU setting, exercised here on CPU) outputs and carry stay
    finite float32."""
    model = HRM(TINY, seed=0).eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        result = model.infer(model.initial_carry(3), _batch(3))
    assert result.carry.z_tactical.dtype == torch.float32
    assert result.outputs.next_return.dtype == torch.float32
    assert torch.isfinite(result.outputs.action_logits).all()

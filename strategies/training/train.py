"""Supervised training of the HRM and the flat baseline on `TrainingSeries`.

Owns the training loop: seeded model and sampling, AdamW with linear warmup and cosine decay,
gradient clipping, bf16 autocast on CUDA, the curriculum (N cycles and T tactical steps growing
by phase, seed 001), the deep-supervision losses of `losses.py` over `unroll` consecutive bars
with the carry passed (detached) from bar to bar as in the stream, periodic validation on the
validation rows with the best state kept, and a rich progress bar. It must not read files,
split series (that is `data.py`) or write checkpoints (that is `checkpoint.py`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor

from strategies.hrm.checkpoint import ModelKind, StreamModel, build_model
from strategies.hrm.flat import FlatConfig, FlatTransformer
from strategies.hrm.heads import FeatureBatch, HRMOutputs
from strategies.hrm.model import HRM, HRMConfig, Preset, Rollout
from strategies.hrm.strategy import autocast_for
from strategies.training.data import (
    BatchOptions,
    TrainingSeries,
    WindowSettings,
    draw_sample,
    make_batches,
)
from strategies.training.losses import HRMTargets, LossWeights, log_cosh, rollout_loss


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything a training run depends on besides its data.

    Attributes:
        steps: optimiser steps.
        batch_size: sampled starting bars per step.
        unroll: consecutive bars per sample for the HRM (the first runs the strategic module,
            the rest are tactical with the carry passed on); the flat model always uses 1.
        lr, min_lr_ratio, warmup_steps: peak learning rate, its floor as a fraction of the
            peak at the end of the cosine decay, and the linear warm-up.
        curriculum_phases: 1 disables the curriculum; P > 1 trains P equal phases with
            N and T growing to the model's (see `curriculum`).
        eval_every: validation every this many steps (and at the end); the best state wins.
        val_batches: validation batches (fixed rows, the same every time).
    """

    kind: ModelKind = "hrm"
    preset: Preset = "small"
    steps: int = 1_000
    batch_size: int = 32
    unroll: int = 8
    lr: float = 5e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    curriculum_phases: int = 3
    eval_every: int = 250
    val_batches: int = 8
    account_noise: float = 0.5
    instrument_dropout: float = 0.2
    losses: LossWeights = field(default_factory=LossWeights)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.unroll, self.curriculum_phases) < 1:
            raise ValueError("steps, batch_size, unroll and curriculum_phases must be >= 1")
        if not (self.lr > 0.0 and 0.0 <= self.min_lr_ratio <= 1.0 and self.grad_clip > 0.0):
            raise ValueError("need lr > 0, min_lr_ratio in [0, 1] and grad_clip > 0")


@dataclass(frozen=True, slots=True)
class TrainResult:
    """The trained model (best validation state, eval mode) and how training went."""

    model: StreamModel
    history: list[dict[str, float]]
    seconds: float
    best: dict[str, float]


def curriculum(config: HRMConfig, steps: int, phases: int) -> list[tuple[int, int, int]]:
    """(first step, cycles N, tactical steps T) of each phase; the last phase is the model's.

    Phase i of P (0-based) runs N_i = ceil(N (i + 1) / P) cycles of T_i = ceil(T (i + 1) / P)
    steps: shallow reasoning first, the full depth last (seed 001's 1x3 -> 2x5 -> 3x7).
    """
    out = []
    for i in range(phases):
        cycles = max(1, math.ceil(config.cycles * (i + 1) / phases))
        tactical = max(1, math.ceil(config.tactical_steps * (i + 1) / phases))
        out.append((steps * i // phases, cycles, tactical))
    return out


def _phase_at(schedule: list[tuple[int, int, int]], step: int) -> tuple[int, int]:
    current = schedule[0]
    for phase in schedule:
        if step >= phase[0]:
            current = phase
    return current[1], current[2]


def train_model(
    series: Sequence[TrainingSeries],
    config: TrainConfig,
    *,
    windows: WindowSettings,
    model_config: HRMConfig | FlatConfig | None = None,
    progress: bool = True,
    description: str = "training",
) -> TrainResult:
    """Train one model from a seeded initialisation; see the module docstring.

    Args:
        series: the symbols' development data (train and validation rows).
        config: the run's settings.
        windows: feature windows (the ones the series were built with).
        model_config: overrides the preset (tests use tiny ones).
        progress: show a progress bar on the terminal.
        description: the progress bar's label.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = torch.device(config.device)
    base = model_config or (
        HRMConfig.preset(config.preset)
        if config.kind == "hrm"
        else FlatConfig.preset(config.preset)
    )
    model = build_model(config.kind, base, seed=config.seed).to(device).train()
    unroll = config.unroll if isinstance(model, HRM) else 1
    options = BatchOptions(
        windows=windows,
        instrument_buckets=base.instrument_buckets,
        account_noise=config.account_noise,
        instrument_dropout=config.instrument_dropout,
        device=device,
    )
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=(0.9, 0.95), weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: _lr_factor(s, config))
    schedule = (
        curriculum(base, config.steps, config.curriculum_phases)
        if isinstance(base, HRMConfig)
        else []
    )
    val_sets = _validation_sets(series, config, unroll, options)
    history: list[dict[str, float]] = []
    best: dict[str, float] = {"val_loss": math.inf}
    best_state: dict[str, Tensor] | None = None
    with _progress(progress) as bar:
        task = bar.add_task(description, total=config.steps)
        for step in range(config.steps):
            if isinstance(model, HRM) and isinstance(base, HRMConfig):
                cycles, tactical = _phase_at(schedule, step)
                model.config = dataclasses.replace(base, cycles=cycles, tactical_steps=tactical)
            sample = draw_sample(
                series, batch_size=config.batch_size, unroll=unroll, split="train", rng=rng
            )
            batches = make_batches(series, sample, options, rng)
            parts = _optimise(model, batches, config, generator, optimiser, scheduler)
            record = {"step": float(step + 1), **parts}
            last = step + 1 == config.steps
            if (step + 1) % config.eval_every == 0 or last:
                if isinstance(model, HRM) and isinstance(base, HRMConfig):
                    model.config = base  # validate at the depth that ships
                record.update(validate(model, val_sets))
                model.train()
                if record["val_loss"] < best["val_loss"]:
                    best = dict(record)
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            history.append(record)
            bar.update(task, advance=1, description=f"{description} loss {parts['loss']:.3f}")
    if isinstance(model, HRM) and isinstance(base, HRMConfig):
        model.config = base
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, history, time.perf_counter() - started, best)


def _validation_sets(
    series: Sequence[TrainingSeries], config: TrainConfig, unroll: int, options: BatchOptions
) -> list[list[tuple[FeatureBatch, HRMTargets]]]:
    """Fixed validation batches (their own seed, no augmentation), the same at every check."""
    rng = np.random.default_rng(config.seed + 1)
    quiet = dataclasses.replace(options, account_noise=0.0, instrument_dropout=0.0)
    return [
        make_batches(
            series,
            draw_sample(series, batch_size=config.batch_size, unroll=unroll, split="val", rng=rng),
            quiet,
            rng,
        )
        for _ in range(config.val_batches)
    ]


def _optimise(
    model: StreamModel,
    batches: list[tuple[FeatureBatch, HRMTargets]],
    config: TrainConfig,
    generator: torch.Generator,
    optimiser: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, float]:
    """One optimiser step (autocast on CUDA, clipped gradients); the loss parts and grad norm."""
    with autocast_for(batches[0][0].tactical.device):
        loss, parts = _loss(model, batches, config.losses, generator)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimiser.step()
    scheduler.step()
    return {"grad_norm": float(norm), **parts}


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(config.steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine


def _loss(
    model: StreamModel,
    batches: list[tuple[FeatureBatch, HRMTargets]],
    weights: LossWeights,
    generator: torch.Generator,
) -> tuple[Tensor, dict[str, float]]:
    """Mean deep-supervision loss over the unrolled bars, and its parts averaged."""
    total: Tensor | None = None
    parts: dict[str, float] = {}
    carry = model.initial_carry(batches[0][0].tactical.shape[0])
    for batch, targets in batches:
        if isinstance(model, HRM):
            rollout = model.rollout(carry, batch, generator=generator)
            carry = rollout.carry.detach()
            max_segments = model.config.act_max_segments
        else:
            outputs = model(batch)
            active = torch.ones_like(outputs.next_return, dtype=torch.bool)
            steps = torch.ones_like(active, dtype=torch.long)
            rollout = Rollout(outputs=[outputs], active=[active], carry=carry, act_steps=steps)
            max_segments = 1
        loss, bar_parts = rollout_loss(rollout, targets, weights, max_segments=max_segments)
        total = loss if total is None else total + loss
        for key, value in bar_parts.items():
            parts[key] = parts.get(key, 0.0) + value / len(batches)
    assert total is not None
    return total / len(batches), parts


@torch.no_grad()
def validate(
    model: StreamModel, val_sets: list[list[tuple[FeatureBatch, HRMTargets]]]
) -> dict[str, float]:
    """Validation loss (log-cosh of the next-bar return, ATR units), MAE and direction accuracy
    of the streaming call (`infer`: ACT as at inference), over every unrolled bar."""
    model.eval()
    losses: list[Tensor] = []
    errors: list[Tensor] = []
    hits: list[Tensor] = []
    for batches in val_sets:
        carry = model.initial_carry(batches[0][0].tactical.shape[0])
        for batch, targets in batches:
            if isinstance(model, FlatTransformer):
                outputs: HRMOutputs = model(batch)
            else:
                result = model.infer(carry, batch)
                carry, outputs = result.carry, result.outputs
            error = outputs.next_return.float() - targets.next_return
            losses.append(log_cosh(error))
            errors.append(error.abs())
            hits.append(((outputs.direction_logit > 0).float() == targets.direction).float())
    return {
        "val_loss": float(torch.cat(losses).mean()),
        "val_mae_atr": float(torch.cat(errors).mean()),
        "val_direction_accuracy": float(torch.cat(hits).mean()),
    }


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )

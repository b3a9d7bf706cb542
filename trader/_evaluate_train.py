"""`trader train`: the HRM and the flat baseline trained on candle files, written as checkpoints.

Owns turning the settings into the training recipe (feature windows and schema hash from
`[features]`, fees and slippage from `[broker]`, HICRA weights from `[rewards]`, the strategic
period from `[model]`), the step budgets per preset, training both models on the development
part (first 70%) of every given series, and where the two files go. It must not hold training
logic (that is `strategies.hrm`) or evaluate anything.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import structlog
import torch

from strategies.hicra import HicraWeights
from strategies.hrm.checkpoint import ModelKind, save_checkpoint
from strategies.training.episodes import PaperCosts
from strategies.training.recipe import RecipeSettings, train_checkpoint
from strategies.training.rl import RLConfig
from strategies.training.targets import TargetSettings
from strategies.training.train import TrainConfig
from trader._evaluate_data import (
    load_series,
    training_series,
    training_window,
    windows_of,
)
from trader.config import Settings
from trader.features.schema import schema_hash_of

log = structlog.get_logger()

Preset = Literal["small", "base"]
#: Optimiser steps per model by preset: `small` trains both models, policy stage included, in
#: about 10 minutes on the project's quiet 2-core VM, over 20 next to another CPU-heavy job
#: (`reports/evaluation/notes.md`; batch 32; the HRM unrolls 8 bars per sample, the flat model
#: reads 1).
DEFAULT_STEPS: dict[str, int] = {"small": 500, "base": 1_500}
#: Torch threads for training on the CPU.
TRAIN_THREADS = 2


@dataclass(frozen=True, slots=True)
class TrainOptions:
    """What `trader train` was asked to do."""

    files: tuple[Path, ...]
    out: Path
    preset: Preset = "small"
    steps: int | None = None
    seed: int = 0
    policy_stage: bool = True
    kinds: tuple[ModelKind, ...] = ("hrm", "flat")
    progress: bool = True
    rl: RLConfig = field(default_factory=RLConfig)


@dataclass(frozen=True, slots=True)
class TrainedFile:
    """One written checkpoint and the numbers it records about its training."""

    kind: ModelKind
    path: Path
    model_version: str
    policy_trained: bool
    seconds: float
    training: dict[str, float]


def flat_path(out: Path) -> Path:
    """Where the flat baseline goes next to the HRM's `out` (`hrm-small.pt` -> `flat-small.pt`)."""
    return out.with_name("flat-" + out.name.removeprefix("hrm-"))


def recipe_for(settings: Settings, options: TrainOptions, kind: ModelKind) -> RecipeSettings:
    """The recipe of one model from the settings tree and the command's options."""
    device = "cuda" if settings.model.device != "cpu" and torch.cuda.is_available() else "cpu"
    steps = options.steps if options.steps is not None else DEFAULT_STEPS[options.preset]
    train = TrainConfig(
        kind=kind,
        preset=options.preset,
        steps=steps,
        eval_every=max(steps // 6, 1),
        warmup_steps=min(50, max(steps // 10, 1)),
        seed=options.seed,
        device=device,
    )
    rewards = settings.rewards
    return RecipeSettings(
        train=train,
        rl=options.rl,
        windows=windows_of(settings.features),
        costs=PaperCosts(
            taker_fee=settings.broker.taker_fee,
            slippage_bps=settings.broker.slippage_bps,
            initial_equity=settings.broker.initial_equity,
        ),
        hicra=HicraWeights(
            strategic=rewards.strategic_weight,
            tactical=rewards.tactical_weight,
            procedural=rewards.procedural_weight,
        ),
        strategic_every=settings.model.strategic_every,
        policy_stage=options.policy_stage,
    )


def train_files(settings: Settings, options: TrainOptions) -> list[TrainedFile]:
    """Train the HRM (to `options.out`) and the flat baseline (to `flat_path(out)`)."""
    torch.set_num_threads(TRAIN_THREADS)
    series = load_series(options.files)
    schema = schema_hash_of(settings.features)
    data = training_series(series, windows_of(settings.features), TargetSettings())
    window = training_window(series)
    written = []
    for kind in options.kinds:
        started = time.perf_counter()
        recipe = recipe_for(settings, options, kind)
        loaded = train_checkpoint(
            data, recipe, schema_hash=schema, window=window, progress=options.progress
        )
        path = options.out if kind == "hrm" else flat_path(options.out)
        save_checkpoint(path, loaded.model, loaded.meta)
        seconds = time.perf_counter() - started
        log.info("checkpoint_written", kind=kind, path=str(path), seconds=round(seconds, 1))
        written.append(
            TrainedFile(
                kind=kind,
                path=path,
                model_version=loaded.meta.model_version,
                policy_trained=loaded.meta.policy_trained,
                seconds=seconds,
                training=loaded.meta.training,
            )
        )
    return written


def describe(files: Sequence[TrainedFile]) -> str:
    """Lines for the terminal: one per checkpoint."""
    lines = []
    for f in files:
        decides = "policy head" if f.policy_trained else "forecast rule"
        lines.append(
            f"{f.kind}: {f.path} ({f.model_version}), {f.seconds:.0f} s, decides by {decides}"
        )
    return "\n".join(lines)

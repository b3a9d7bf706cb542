"""The whole training recipe of one checkpoint: supervised, then the policy stage, then its file.

Owns the order of the stages and what the checkpoint records about them: supervised training
(`train.py`), a stream pass over the validation rows and over the last training rows
(`episodes.py`), the forecast rule calibrated on validation and the policy heads fine-tuned by
PPO (`rl.py`), the choice between them by validation Sharpe, and the `CheckpointMeta` (config,
feature-schema hash, training window, code version, which decides, summary numbers). It must
not read files or settings: the caller passes series, costs and weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog

from strategies.hicra import HicraWeights
from strategies.hrm.checkpoint import (
    CheckpointMeta,
    LoadedModel,
    TrainingWindow,
    code_version,
    model_version_of,
)
from strategies.hrm.policy import PolicySettings
from strategies.training.data import TrainingSeries, WindowSettings
from strategies.training.episodes import PaperCosts, stream_pass
from strategies.training.rl import RLConfig, calibrate_rule, fine_tune_policy, score_policy
from strategies.training.train import TrainConfig, train_model

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RecipeSettings:
    """Everything besides the data that one checkpoint's training depends on.

    Attributes:
        policy_bars: training bars per series (the last ones before the validation gap) the
            policy heads are fine-tuned on.
        val_bars: validation bars per series (the last ones) the rule and the policy are
            scored on.
        chunks: parallel pieces per series in the stream passes.
        policy_stage: False skips calibration and fine-tuning (tests, quick runs).
    """

    train: TrainConfig
    rl: RLConfig = field(default_factory=RLConfig)
    windows: WindowSettings = field(default_factory=WindowSettings)
    costs: PaperCosts = field(default_factory=PaperCosts)
    hicra: HicraWeights = field(default_factory=lambda: HicraWeights(2.0, 1.4, 0.5))
    strategic_every: int = 16
    policy_bars: int = 2_048
    val_bars: int = 2_048
    chunks: int = 4
    policy_stage: bool = True


def train_checkpoint(
    series: Sequence[TrainingSeries],
    settings: RecipeSettings,
    *,
    schema_hash: str,
    window: TrainingWindow,
    progress: bool = True,
) -> LoadedModel:
    """Train one model through every stage and describe it; see the module docstring."""
    config = settings.train
    result = train_model(
        series,
        config,
        windows=settings.windows,
        progress=progress,
        description=f"{config.kind} {config.preset}",
    )
    model = result.model
    _log.info(
        "supervised_training_finished",
        kind=config.kind,
        seconds=round(result.seconds, 1),
        **{k: round(v, 4) for k, v in result.best.items()},
    )
    stats: dict[str, float] = {
        "steps": float(config.steps),
        "batch_size": float(config.batch_size),
        "unroll": float(config.unroll if config.kind == "hrm" else 1),
        "supervised_seconds": round(result.seconds, 1),
        **{f"best_{k}": round(v, 5) for k, v in result.best.items() if k.startswith("val")},
    }
    policy_trained = False
    rule = None
    if settings.policy_stage:
        val = stream_pass(
            model,
            series,
            [s.val_rows[:-1][-settings.val_bars :] for s in series],
            windows=settings.windows,
            strategic_every=settings.strategic_every,
            chunks=settings.chunks,
        )
        rule, rule_score = calibrate_rule(val, costs=settings.costs)
        _log.info("forecast_rule_calibrated", kind=config.kind, rule=str(rule), **rule_score)
        train = stream_pass(
            model,
            series,
            [s.train_rows[-settings.policy_bars :] for s in series],
            windows=settings.windows,
            strategic_every=settings.strategic_every,
            chunks=settings.chunks,
        )
        heads, history = fine_tune_policy(
            model, train, costs=settings.costs, weights=settings.hicra, config=settings.rl
        )
        policy_score = score_policy(heads, val, costs=settings.costs)
        _log.info("policy_fine_tuned", kind=config.kind, **policy_score)
        policy_trained = policy_score["sharpe"] > rule_score["sharpe"]
        if policy_trained:
            heads.write_back(model)
        stats.update(
            {
                "val_rule_sharpe": round(rule_score["sharpe"], 4),
                "val_rule_position_changes": rule_score["position_changes"],
                "val_policy_sharpe": round(policy_score["sharpe"], 4),
                "val_policy_position_changes": policy_score["position_changes"],
                "rl_iterations": float(len(history)),
                "rl_final_mean_shaped_return": float(
                    np.round(history[-1]["mean_shaped_return"], 8)
                ),
            }
        )
        _log.info("policy_stage_finished", kind=config.kind, policy_trained=policy_trained, **stats)
    model.eval()
    meta = CheckpointMeta(
        kind=config.kind,
        preset=config.preset,
        seed=config.seed,
        feature_schema_hash=schema_hash,
        feature_clip=settings.windows.clip,
        model_version=model_version_of(model, kind=config.kind, preset=config.preset, trained=True),
        policy_trained=policy_trained,
        training_window=window,
        code_version=code_version(),
        training=stats,
        policy=rule if rule is not None else PolicySettings(taker_fee=settings.costs.taker_fee),
    )
    return LoadedModel(model, meta)

"""The Hierarchical Reasoning Model strategy and its flat-transformer baseline.

Owns building the `hrm` and `flat` strategies: from a checkpoint when one is given or shipped
(`checkpoint.DEFAULT_CHECKPOINTS`), else from a seeded untrained model marked as such. Modules,
in dependency order: `layers` (blocks), `model` (HRM), `flat` (baseline), `checkpoint` (files),
`inputs` (checks and batching), `policy` (outputs to decisions), `strategy` (streaming); their
training is `strategies.training`. It must not read configuration files or the environment: the
caller passes validated settings.
"""

from __future__ import annotations

from pathlib import Path

from strategies.hrm.checkpoint import (
    DEFAULT_CHECKPOINTS,
    DEFAULT_SCHEMA_HASH,
    ModelKind,
    fresh_model,
    load_checkpoint,
)
from strategies.hrm.strategy import HRMStrategy

__all__ = ["HRMStrategy", "build_hrm_strategy"]

#: CPU threads for inference: small batches gain nothing from more and would starve the loop.
INFERENCE_THREADS = 1


def build_hrm_strategy(
    name: str,
    *,
    checkpoint: str | None,
    device: str,
    strategic_every: int,
    seed: int,
    schema_hash: str | None = None,
    feature_clip: float = 5.0,
    taker_fee: float | None = None,
) -> HRMStrategy:
    """Build the `hrm` or `flat` strategy.

    Args:
        name: `hrm` or `flat`.
        checkpoint: a checkpoint path; None uses the shipped default when it exists, else a
            fresh model seeded by `seed` (its model_version says `untrained`).
        device: `auto`, `cpu` or `cuda`.
        strategic_every: bars between strategic updates of one symbol.
        seed: the seed of a fresh model.
        schema_hash: `FeatureBook.schema_hash` of the running features; None means the
            default `[features]` settings.
        feature_clip: the running features' clip (used when no checkpoint records one).
        taker_fee: the run's fee per side (`broker.taker_fee`). The forecast rule's thresholds
            are calibrated in multiples of the round-trip fee, so they follow the fees the run
            actually pays; None keeps the fee the checkpoint was calibrated with.

    Raises:
        ValueError: the name is not `hrm` or `flat`.
        ConfigError: the checkpoint is missing, unreadable, of another kind or built for
            another feature schema.
    """
    if name not in ("hrm", "flat"):
        raise ValueError(f"build_hrm_strategy builds hrm or flat, not {name!r}")
    kind: ModelKind = "hrm" if name == "hrm" else "flat"
    expected = schema_hash if schema_hash is not None else DEFAULT_SCHEMA_HASH
    path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINTS[kind]
    if checkpoint is not None or path.is_file():
        loaded = load_checkpoint(path, expected_kind=kind, expected_schema_hash=expected)
    else:
        loaded = fresh_model(kind, seed=seed, schema_hash=expected, feature_clip=feature_clip)
    return HRMStrategy(
        loaded,
        device=device,
        strategic_every=strategic_every,
        policy=loaded.meta.policy.at_fee(taker_fee),
        num_threads=INFERENCE_THREADS,
    )

"""Checkpoints: round trip, schema and kind refusal, fresh seeded models, the factory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from strategies.hrm import HRMStrategy, build_hrm_strategy
from strategies.hrm.checkpoint import (
    DEFAULT_SCHEMA_HASH,
    LoadedModel,
    TrainingWindow,
    fresh_model,
    load_checkpoint,
    model_version_of,
    save_checkpoint,
)
from strategies.hrm.heads import FeatureBatch
from strategies.hrm.model import HRMConfig
from strategies.registry import build_strategy
from trader.config import FeatureSettings
from trader.errors import ConfigError
from trader.features.buffer import FeatureBook
from trader.features.schema import feature_schema_hash


def _batch() -> FeatureBatch:
    g = torch.Generator().manual_seed(0)
    return FeatureBatch(
        tactical=torch.randn(2, 8, 31, generator=g),
        account=torch.zeros(2, 4),
        instrument=torch.tensor([1, 2]),
        timeframe=torch.tensor([2, 2]),
        strategic=torch.randn(2, 16, 31, generator=g),
    )


def _save_trained(path: Path, kind: str = "hrm") -> LoadedModel:
    """Save a tiny model as if trained; its weights are moved off its seed's, so a loader that
    rebuilt the model from the seed without restoring the weights would not reproduce it."""
    loaded = fresh_model("hrm" if kind == "hrm" else "flat", preset="tiny", seed=9)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in loaded.model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=g))
    meta = dataclasses.replace(
        loaded.meta,
        model_version=model_version_of(loaded.model, kind=kind, preset="tiny", trained=True),
        policy_trained=True,
        training_window=TrainingWindow(("BTCUSDT", "ETHUSDT"), "5", 1_000, 2_000),
    )
    save_checkpoint(path, loaded.model, meta)
    return LoadedModel(loaded.model, meta)


def test_checkpoint_round_trips_weights_and_meta_when_saved(tmp_path: Path) -> None:
    """A loaded checkpoint gives identical outputs and the same self-description."""
    path = tmp_path / "hrm.pt"
    original = _save_trained(path)
    loaded = load_checkpoint(path, expected_kind="hrm", expected_schema_hash=DEFAULT_SCHEMA_HASH)
    assert loaded.meta == original.meta
    assert loaded.meta.training_window == TrainingWindow(("BTCUSDT", "ETHUSDT"), "5", 1_000, 2_000)
    assert loaded.meta.policy_trained
    assert loaded.meta.model_version.startswith("hrm-tiny-")
    assert "untrained" not in loaded.meta.model_version
    assert loaded.meta.code_version.startswith("hrm-trader")
    assert loaded.model.config == HRMConfig.preset("tiny")
    with torch.inference_mode():
        a = original.model.infer(original.model.initial_carry(2), _batch())
        b = loaded.model.infer(loaded.model.initial_carry(2), _batch())
    assert torch.equal(a.outputs.action_logits, b.outputs.action_logits)
    assert torch.equal(a.carry.z_strategic, b.carry.z_strategic)


def test_loader_refuses_other_feature_schema_when_loading(tmp_path: Path) -> None:
    """A checkpoint trained on other features is a clear ConfigError naming both schemas."""
    path = tmp_path / "hrm.pt"
    _save_trained(path)
    other = feature_schema_hash(tactical_window=32, strategic_window=256, scale_window=256, clip=5)
    with pytest.raises(ConfigError, match="feature schema") as info:
        load_checkpoint(path, expected_schema_hash=other)
    assert info.value.key == "model.checkpoint"
    assert other[:12] in str(info.value)
    with pytest.raises(ConfigError, match="feature schema"):
        build_hrm_strategy(
            "hrm", checkpoint=str(path), device="cpu", strategic_every=16, seed=1, schema_hash=other
        )


def test_loader_refuses_wrong_kind_or_missing_file_when_loading(tmp_path: Path) -> None:
    """A flat checkpoint is not an HRM; a missing or corrupt file is a ConfigError."""
    path = tmp_path / "flat.pt"
    _save_trained(path, kind="flat")
    with pytest.raises(ConfigError, match="'flat' model"):
        load_checkpoint(path, expected_kind="hrm", expected_schema_hash=DEFAULT_SCHEMA_HASH)
    with pytest.raises(ConfigError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt", expected_schema_hash=DEFAULT_SCHEMA_HASH)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not readable"):
        load_checkpoint(corrupt, expected_schema_hash=DEFAULT_SCHEMA_HASH)


def test_fresh_model_is_seeded_and_marked_when_untrained() -> None:
    """No checkpoint: the seed fixes the weights and the version says untrained."""
    a, b = fresh_model("hrm", seed=3), fresh_model("hrm", seed=3)
    c = fresh_model("hrm", seed=4)
    assert a.meta.model_version == b.meta.model_version
    assert a.meta.model_version.startswith("hrm-small-untrained-")
    assert c.meta.model_version != a.meta.model_version


def test_registry_builds_model_strategies_when_named() -> None:
    """`build_strategy` accepts hrm and flat and still builds the baselines."""
    hrm = build_strategy("hrm", seed=1, device="cpu", strategic_every=12)
    flat = build_strategy("flat", seed=1, device="cpu")
    assert (hrm.name, flat.name) == ("hrm", "flat")
    assert hrm.model_version.startswith("hrm-small-")
    assert build_strategy("noop", seed=1).name == "noop"
    with pytest.raises(ValueError, match="not available"):
        build_strategy("nope", seed=1)


def test_forecast_rule_pays_the_runs_fee_when_the_broker_fee_differs(tmp_path: Path) -> None:
    """The rule's thresholds are fee multiples: they follow `broker.taker_fee`, not the fee the
    checkpoint was calibrated with; the other calibrated thresholds are kept."""
    from tests.support.engine_harness import settings_for
    from trader.pipeline import build_strategy_from

    path = tmp_path / "hrm.pt"
    _save_trained(path)
    calibrated = load_checkpoint(path, expected_schema_hash=DEFAULT_SCHEMA_HASH).meta.policy
    as_calibrated = build_hrm_strategy(
        "hrm", checkpoint=str(path), device="cpu", strategic_every=16, seed=1
    )
    assert as_calibrated.policy == calibrated
    settings = settings_for(
        "hrm", model={"checkpoint": str(path), "device": "cpu"}, broker={"taker_fee": 0.002}
    )
    strategy = build_strategy_from(settings)
    assert isinstance(strategy, HRMStrategy)
    assert strategy.policy.taker_fee == 0.002
    assert strategy.policy.round_trip == pytest.approx(0.004)
    assert dataclasses.replace(strategy.policy, taker_fee=calibrated.taker_fee) == calibrated


def test_default_schema_hash_is_the_default_features_settings_when_none_is_given() -> None:
    """`DEFAULT_SCHEMA_HASH` (what a strategy built without a schema expects) is the hash of the
    default `[features]` settings and of a default `FeatureBook`."""
    assert feature_schema_hash(**FeatureSettings().model_dump()) == DEFAULT_SCHEMA_HASH
    assert FeatureBook().schema_hash == DEFAULT_SCHEMA_HASH

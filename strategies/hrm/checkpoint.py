"""Checkpoints that describe themselves, and the seeded untrained model used when none is found.

Owns the checkpoint file format (weights, model kind and config, feature schema hash, version
and names, clip, training window, code version, whether the policy head was trained and is the
one deciding, the forecast rule's thresholds as calibrated on validation, a summary of training,
the model version string), saving and loading it with a refusal of any feature-schema mismatch, and
building a fresh deterministic model when no checkpoint exists. It must not train, read
configuration files or the environment, or know about the engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import torch

from strategies.hrm.flat import FlatConfig, FlatTransformer
from strategies.hrm.model import HRM, MODEL_CODE_VERSION, HRMConfig
from strategies.hrm.policy import PolicySettings
from trader.errors import ConfigError
from trader.features.schema import FEATURE_SCHEMA_VERSION, MARKET_FEATURES, feature_schema_hash

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
#: Where the training issue ships the default checkpoints; used when they exist.
DEFAULT_CHECKPOINTS: dict[str, Path] = {
    "hrm": CHECKPOINT_DIR / "hrm-small.pt",
    "flat": CHECKPOINT_DIR / "flat-small.pt",
}
#: The schema hash of the default `[features]` settings (64 / 256 / 256 / clip 5).
DEFAULT_SCHEMA_HASH = feature_schema_hash(
    tactical_window=64, strategic_window=256, scale_window=256, clip=5.0
)
ModelKind = Literal["hrm", "flat"]
StreamModel = HRM | FlatTransformer
_KEY = "model.checkpoint"


@dataclass(frozen=True, slots=True)
class TrainingWindow:
    """The bars a checkpoint was trained on: symbols, interval and the span of bar starts."""

    symbols: tuple[str, ...]
    interval: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class CheckpointMeta:
    """Everything a checkpoint says about itself besides its weights.

    `policy_trained` means the policy head was fine-tuned and beat the forecast rule on
    validation, so the strategy follows it; otherwise the rule decides, with the thresholds in
    `policy`. `training` holds plain numbers about the run (steps, seconds, validation scores).
    """

    kind: ModelKind
    preset: str
    seed: int
    feature_schema_hash: str
    feature_clip: float
    model_version: str
    policy_trained: bool = False
    training_window: TrainingWindow | None = None
    feature_schema_version: int = FEATURE_SCHEMA_VERSION
    feature_names: tuple[str, ...] = MARKET_FEATURES
    code_version: str = ""
    policy: PolicySettings = field(default_factory=PolicySettings)
    training: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model in eval mode and its description."""

    model: StreamModel
    meta: CheckpointMeta


def code_version() -> str:
    """The installed package version and the model architecture version."""
    try:
        package = metadata.version("hrm-trader")
    except metadata.PackageNotFoundError:
        package = "unknown"
    return f"hrm-trader {package} / model {MODEL_CODE_VERSION}"


def weights_digest(model: torch.nn.Module) -> str:
    """A sha256 hex digest of every tensor of the state dict, in key order."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode("utf-8"))
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_version_of(model: torch.nn.Module, *, kind: str, preset: str, trained: bool) -> str:
    """`hrm-small-1a2b3c4d`, or `hrm-small-untrained-1a2b3c4d` for a fresh model."""
    middle = "" if trained else "untrained-"
    return f"{kind}-{preset}-{middle}{weights_digest(model)[:8]}"


def build_model(kind: ModelKind, config: HRMConfig | FlatConfig, *, seed: int) -> StreamModel:
    """An untrained model of a kind from its config (seeded, so deterministic)."""
    if kind == "hrm" and isinstance(config, HRMConfig):
        return HRM(config, seed=seed)
    if kind == "flat" and isinstance(config, FlatConfig):
        return FlatTransformer(config, seed=seed)
    raise ValueError(f"a {type(config).__name__} does not build a {kind!r} model")


def fresh_model(
    kind: ModelKind,
    *,
    preset: Literal["tiny", "small", "base"] = "small",
    seed: int,
    schema_hash: str = DEFAULT_SCHEMA_HASH,
    feature_clip: float = 5.0,
) -> LoadedModel:
    """A seeded untrained model, marked `<kind>-<preset>-untrained-<hash8>`."""
    config = HRMConfig.preset(preset) if kind == "hrm" else FlatConfig.preset(preset)
    model = build_model(kind, config, seed=seed).eval()
    meta = CheckpointMeta(
        kind=kind,
        preset=preset,
        seed=seed,
        feature_schema_hash=schema_hash,
        feature_clip=feature_clip,
        model_version=model_version_of(model, kind=kind, preset=preset, trained=False),
        code_version=code_version(),
    )
    return LoadedModel(model, meta)


def save_checkpoint(path: Path, model: StreamModel, meta: CheckpointMeta) -> None:
    """Write weights, config and meta (plain containers only, so loading needs no pickle)."""
    if meta.kind != model.kind:
        raise ValueError(f"meta says {meta.kind!r} but the model is {model.kind!r}")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": dataclasses.asdict(model.config),
        "meta": dataclasses.asdict(meta),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def load_checkpoint(
    path: Path, *, expected_kind: ModelKind | None = None, expected_schema_hash: str
) -> LoadedModel:
    """Load a checkpoint onto the CPU in eval mode, refusing one built for other features.

    Raises:
        ConfigError: the file is missing or not a checkpoint of this format, holds another
            kind of model than expected, or was trained on another feature schema.
    """
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist", key=_KEY)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        raise ConfigError(f"checkpoint {path} is not readable: {exc}", key=_KEY) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a format-{CHECKPOINT_FORMAT} checkpoint", key=_KEY)
    try:
        meta = _meta_from(payload["meta"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"checkpoint {path} has no valid description: {exc}", key=_KEY) from exc
    if expected_kind is not None and meta.kind != expected_kind:
        raise ConfigError(f"{path} holds a {meta.kind!r} model, not {expected_kind!r}", key=_KEY)
    if meta.feature_schema_hash != expected_schema_hash:
        raise ConfigError(
            f"checkpoint {path} was trained on feature schema {meta.feature_schema_hash[:12]} "
            f"(schema v{meta.feature_schema_version}, clip {meta.feature_clip}) but the "
            f"running features have schema {expected_schema_hash[:12]}; use a checkpoint "
            "trained on these features or restore the [features] settings it was trained with",
            key=_KEY,
        )
    try:
        config = _config_from(meta.kind, payload["config"])
        model = build_model(meta.kind, config, seed=meta.seed)
        model.load_state_dict(payload["state_dict"], strict=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"checkpoint {path} does not fit this code: {exc}", key=_KEY) from exc
    return LoadedModel(model.eval(), meta)


def _config_from(kind: ModelKind, raw: dict[str, Any]) -> HRMConfig | FlatConfig:
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    if kind == "hrm":
        return HRMConfig(**values)
    return FlatConfig(**values)


def _meta_from(raw: dict[str, Any]) -> CheckpointMeta:
    window = raw.get("training_window")
    values = dict(raw)
    values["feature_names"] = tuple(raw["feature_names"])
    if "policy" in raw:
        values["policy"] = PolicySettings(**raw["policy"])
    if "training" in raw:
        values["training"] = {str(k): float(v) for k, v in raw["training"].items()}
    if window is not None:
        values["training_window"] = TrainingWindow(
            symbols=tuple(window["symbols"]),
            interval=str(window["interval"]),
            start_ms=int(window["start_ms"]),
            end_ms=int(window["end_ms"]),
        )
    return CheckpointMeta(**values)

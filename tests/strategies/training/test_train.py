"""Training of the HRM: forward-only targets, time splits, a tiny run, curriculum, the RL stage."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from strategies.hicra import HicraWeights
from strategies.hrm.checkpoint import (
    DEFAULT_CHECKPOINTS,
    DEFAULT_SCHEMA_HASH,
    TrainingWindow,
    load_checkpoint,
    save_checkpoint,
)
from strategies.hrm.heads import ACTIONS, SIZE, VALUE
from strategies.hrm.model import HRM, HRMConfig
from strategies.hrm.strategy import output_table, row_outputs
from strategies.training.data import (
    SeriesSplit,
    TrainingSeries,
    WindowSettings,
    build_training_series,
)
from strategies.training.episodes import PaperCosts, stream_pass
from strategies.training.recipe import RecipeSettings, train_checkpoint
from strategies.training.rl import RLConfig, fine_tune_policy
from strategies.training.targets import TargetSettings, build_targets
from strategies.training.train import TrainConfig, curriculum, train_model
from tests.support.candles import random_walk_bars
from trader.domain import Bar
from trader.errors import ConfigError
from trader.features.dataset import build_feature_matrix
from trader.features.schema import FEATURE_INDEX, feature_schema_hash

WINDOWS = WindowSettings(tactical=16, strategic=32, scale_window=32)
SCHEMA = feature_schema_hash(tactical_window=16, strategic_window=32, scale_window=32, clip=5.0)
TINY = HRMConfig.preset("tiny")
TARGETS = TargetSettings()


def _series(seed: int, count: int = 900) -> TrainingSeries:
    bars = random_walk_bars(count, seed=seed, symbol=f"T{seed}USDT")
    split = SeriesSplit.of(len(bars))
    return build_training_series(
        bars[: split.heldout_start], val_start=split.val_start, windows=WINDOWS, targets=TARGETS
    )


def _targets_of(bars: list[Bar]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    matrix = build_feature_matrix(bars, scale_window=32)
    close = np.array([b.close for b in bars])
    targets = build_targets(close, matrix.raw[:, FEATURE_INDEX["atr_14"]], TARGETS)
    stacked = np.column_stack(
        [
            targets.next_return,
            targets.direction,
            targets.horizon_returns,
            targets.realised_vol,
            targets.regime,
        ]
    )
    return np.nan_to_num(matrix.scaled, nan=-99.0), stacked, targets.valid


def test_targets_change_only_before_the_bar_when_a_future_bar_is_perturbed() -> None:
    """Moving bar k changes no feature before k and no target more than the lookahead before k."""
    bars = random_walk_bars(600, seed=3)
    k = 450
    moved = bars[k]
    bumped = dataclasses.replace(
        moved, close=moved.close * 1.03, high=max(moved.high, moved.close * 1.03)
    )
    features, targets, valid = _targets_of(bars)
    features2, targets2, _ = _targets_of([*bars[:k], bumped, *bars[k + 1 :]])

    assert np.array_equal(features[:k], features2[:k])
    assert not np.array_equal(features[k:], features2[k:])
    ahead = TARGETS.lookahead
    assert np.array_equal(targets[: k - ahead], targets2[: k - ahead])
    assert not np.array_equal(targets[k - ahead : k], targets2[k - ahead : k])
    assert not valid[-ahead:].any()


def test_split_keeps_training_targets_clear_of_validation_when_built() -> None:
    """Training rows end a lookahead before validation; nothing reaches the held-out tail."""
    bars = random_walk_bars(900, seed=1)
    split = SeriesSplit.of(len(bars))
    series = build_training_series(
        bars[: split.heldout_start], val_start=split.val_start, windows=WINDOWS, targets=TARGETS
    )

    assert split.heldout_start == 630
    assert int(series.train_rows.max()) + TARGETS.lookahead < split.val_start
    assert int(series.val_rows.min()) >= split.val_start
    assert int(series.val_rows.max()) + TARGETS.lookahead < split.heldout_start
    assert len(series) == split.heldout_start


def test_curriculum_grows_cycles_and_steps_to_the_model_when_phased() -> None:
    """Phases start shallow, never shrink, and end at the model's N x T."""
    config = dataclasses.replace(TINY, cycles=3, tactical_steps=5)
    schedule = curriculum(config, steps=90, phases=3)

    assert [p[0] for p in schedule] == [0, 30, 60]
    assert schedule[0][1:] == (1, 2)
    assert schedule[-1][1:] == (3, 5)
    for before, after in itertools.pairwise(schedule):
        assert after[1] >= before[1]
        assert after[2] >= before[2]


def test_tiny_training_reduces_loss_and_writes_a_checkpoint_that_refuses_other_features(
    tmp_path: Path,
) -> None:
    """A tiny run lowers the loss; its checkpoint loads, and is refused for another schema."""
    torch.set_num_threads(1)
    series = [_series(0), _series(1)]
    config = TrainConfig(
        kind="hrm",
        steps=40,
        batch_size=8,
        unroll=2,
        lr=3e-3,
        warmup_steps=4,
        eval_every=20,
        val_batches=1,
        curriculum_phases=2,
    )
    result = train_model(series, config, windows=WINDOWS, model_config=TINY, progress=False)
    first = np.mean([h["loss"] for h in result.history[:5]])
    last = np.mean([h["loss"] for h in result.history[-5:]])
    assert last < first

    window = TrainingWindow(("T0USDT", "T1USDT"), "5", 0, 1)
    recipe = RecipeSettings(train=config, windows=WINDOWS, policy_stage=False)
    loaded = train_checkpoint(
        series[:1],
        dataclasses.replace(recipe, train=dataclasses.replace(config, steps=2)),
        schema_hash=SCHEMA,
        window=window,
        progress=False,
    )
    path = tmp_path / "hrm.pt"
    save_checkpoint(path, loaded.model, loaded.meta)

    again = load_checkpoint(path, expected_kind="hrm", expected_schema_hash=SCHEMA)
    assert again.meta.training_window == window
    assert again.meta.code_version
    assert again.meta.training["steps"] == 2.0
    with pytest.raises(ConfigError, match="feature schema"):
        load_checkpoint(path, expected_schema_hash="0" * 64)


def test_policy_stage_changes_only_the_policy_size_and_value_rows_when_it_steps() -> None:
    """One PPO iteration moves the action, size and value rows of the tactical head only."""
    torch.set_num_threads(1)
    series = [_series(2)]
    config = TrainConfig(kind="hrm", steps=2, batch_size=4, unroll=1, val_batches=1)
    model = train_model(series, config, windows=WINDOWS, model_config=TINY, progress=False).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    passes = stream_pass(
        model, series, [series[0].train_rows[-80:]], windows=WINDOWS, strategic_every=16, chunks=2
    )
    rl = RLConfig(iterations=1, episodes=4, episode_bars=16, epochs=1, minibatch=32, lr=0.05)
    heads, history = fine_tune_policy(
        model, passes, costs=PaperCosts(), weights=HicraWeights(2.0, 1.4, 0.5), config=rl
    )
    heads.write_back(model)

    assert len(history) == 1
    rows = [*range(len(ACTIONS)), heads.base + SIZE, heads.base + VALUE]
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith("tactical_head."):
            changed = (after[key] != value).reshape(value.shape[0], -1).any(dim=1)
            assert changed[rows].all(), key
            others = [i for i in range(value.shape[0]) if i not in rows]
            assert not changed[others].any(), key
        else:
            assert torch.equal(after[key], value), key


def test_pass_rows_match_the_streaming_conversion_when_read_back() -> None:
    """The offline pass reads each bar's heads exactly as the streaming strategy converts them."""
    torch.set_num_threads(1)
    series = [_series(4)]
    model = fresh_tiny_model()
    (passed,) = stream_pass(
        model, series, [series[0].val_rows[:20]], windows=WINDOWS, strategic_every=4, chunks=2
    )
    table, starts = output_table(passed.outputs)
    for k in (0, 7, 19):
        for horizon in (1, 8, 32):
            expected = row_outputs(
                table,
                table[k].tolist(),
                k,
                starts,
                atr_relative=float(series[0].atr[passed.rows[k]]),
                horizons=TINY.horizons,
                horizon_bars=horizon,
            )
            got = passed.row(k, horizon_bars=horizon)
            # The same float32 heads widened to float: equal. Only the sigmoid of the direction
            # logit may round differently (a whole column here, one element in the stream).
            assert got.up_probability == pytest.approx(expected.up_probability, rel=1e-6)
            assert dataclasses.replace(got, up_probability=0.0) == dataclasses.replace(
                expected, up_probability=0.0
            )
    assert passed.strategic.tolist()[:5] == [True, False, False, False, True]


def fresh_tiny_model() -> HRM:
    """A seeded, untrained tiny HRM in eval mode."""
    return HRM(TINY, seed=0).eval()


def test_shipped_checkpoints_are_small_and_trained_only_before_the_held_out_part() -> None:
    """The committed checkpoints load with the default features, stay small, and end their
    training window on 2025-06-05 17:00 UTC: the last development bar of BTC/ETH/SOL 5m."""
    last_dev_bar = datetime(2025, 6, 5, 17, 0, tzinfo=UTC)
    for kind, path in DEFAULT_CHECKPOINTS.items():
        loaded = load_checkpoint(path, expected_kind=kind, expected_schema_hash=DEFAULT_SCHEMA_HASH)
        window = loaded.meta.training_window

        assert path.stat().st_size < 5_000_000
        assert window is not None
        assert window.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT")
        assert window.end_ms == int(last_dev_bar.timestamp() * 1000)
        assert "untrained" not in loaded.meta.model_version

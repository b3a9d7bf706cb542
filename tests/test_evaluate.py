"""`trader evaluate` and `trader train`: the report's contract keys, metrics, and the CLI help."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from strategies.hrm.checkpoint import (
    DEFAULT_SCHEMA_HASH,
    fresh_model,
    load_checkpoint,
    save_checkpoint,
)
from trader._evaluate_data import load_series, replay_start
from trader._evaluate_metrics import (
    Aligned,
    auc,
    expected_calibration_error,
    prediction_metrics,
    reliability,
)
from trader._evaluate_replay import ReplayJob, Variant, run_job
from trader._evaluate_train import TrainOptions, describe, train_files
from trader.cli import app
from trader.config import Settings
from trader.evaluate import EvaluateOptions, evaluate

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CONTRACT_KEYS = {
    "series",
    "strategy",
    "sharpe",
    "sortino",
    "max_drawdown",
    "total_return",
    "trades",
}


@pytest.fixture
def tiny_checkpoints(tmp_path: Path) -> Path:
    """Untrained tiny HRM and flat checkpoints for the default features, side by side."""
    for kind in ("hrm", "flat"):
        loaded = fresh_model(kind, preset="tiny", seed=0)
        save_checkpoint(tmp_path / f"{kind}-tiny.pt", loaded.model, loaded.meta)
    return tmp_path / "hrm-tiny.pt"


async def test_report_has_the_contract_keys_for_all_four_strategies_when_evaluated(
    tmp_path: Path, tiny_checkpoints: Path
) -> None:
    """report.json holds a row per strategy with the contract's keys, plus report.md and plots."""
    out = tmp_path / "report"
    settings = Settings(database={"url": f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"})
    options = EvaluateOptions(
        files=(FIXTURES / "BTCUSDT_5m.csv.gz",),
        out_dir=out,
        checkpoint=tiny_checkpoints,
        train=False,
        max_bars=90,
        workers=1,
        ablations=False,
        folds=2,
        command="trader evaluate tests/fixtures/BTCUSDT_5m.csv.gz --no-train",
    )

    await evaluate(settings, options)

    document = json.loads((out / "report.json").read_text())
    rows = document["rows"]
    assert {r["strategy"] for r in rows} == {"hrm", "flat", "ema_cross", "buy_hold"}
    for row in rows:
        assert row.keys() >= CONTRACT_KEYS
        assert row["series"] == "BTCUSDT_5m"
        assert row["bars"] == 90
        assert sum(row["decisions"].values()) == 90
        assert len(row["folds"]) == 2
    assert {p["strategy"] for p in document["prediction"]} == {"hrm", "flat"}
    assert document["splits"]["BTCUSDT_5m"]["heldout_bars"] == 90
    assert "trader evaluate" in (out / "report.md").read_text()
    for plot in ("equity.png", "sharpe.png", "reliability.png", "act_steps.png"):
        assert (out / plot).stat().st_size > 1_000


def test_prediction_metrics_score_a_perfect_forecaster_when_aligned() -> None:
    """A forecaster that knows the sign gets accuracy 1, AUC 1 and zero MAE."""
    actual = np.array([0.01, -0.02, 0.03, -0.01])
    aligned = Aligned(actual.copy(), (actual > 0).astype(float), actual)

    metrics, bins = prediction_metrics(aligned)

    assert metrics["direction_accuracy"] == 1.0
    assert metrics["auc"] == 1.0
    assert metrics["mae_bp"] == 0.0
    assert metrics["ece"] == 0.0
    assert sum(bins.counts) == 4


def test_auc_and_calibration_match_hand_computed_values_when_scores_tie() -> None:
    """Tied scores share ranks in the AUC; ECE weights bin gaps by counts."""
    assert auc(np.array([0.5, 0.5, 0.9]), np.array([True, False, True])) == 0.75
    calibration = reliability(
        np.array([0.15, 0.15, 0.85, 0.85]), np.array([False, True, True, True])
    )
    assert calibration.counts == [2, 2]
    assert expected_calibration_error(calibration) == pytest.approx(0.5 * 0.35 + 0.5 * 0.15)


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_help_exits_0_when_asked_of_the_model_commands(command: str) -> None:
    """`trader train --help` and `trader evaluate --help` print their usage."""
    result = CliRunner().invoke(app, [command, "--help"])

    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "--out" in result.output


def test_train_files_writes_both_checkpoints_beside_each_other_when_asked(tmp_path: Path) -> None:
    """`trader train`'s function trains both models on the files and writes hrm and flat."""
    options = TrainOptions(
        files=(FIXTURES / "BTCUSDT_5m.csv.gz", FIXTURES / "ETHUSDT_5m.csv.gz"),
        out=tmp_path / "hrm-small.pt",
        steps=1,
        policy_stage=False,
        progress=False,
    )

    written = train_files(Settings(), options)

    assert [f.kind for f in written] == ["hrm", "flat"]
    assert written[1].path == tmp_path / "flat-small.pt"
    for f in written:
        loaded = load_checkpoint(
            f.path, expected_kind=f.kind, expected_schema_hash=DEFAULT_SCHEMA_HASH
        )
        assert loaded.meta.training_window is not None
        assert loaded.meta.training_window.symbols == ("BTCUSDT", "ETHUSDT")
    assert "decides by forecast rule" in describe(written)


def test_replay_job_cuts_metrics_to_the_held_out_bars_when_run_in_process(tmp_path: Path) -> None:
    """A job replays from the warm-up start but reports only held-out bars, split in folds."""
    settings = Settings()
    (series,) = load_series([FIXTURES / "ETHUSDT_5m.csv.gz"])
    split = series.split()
    job = ReplayJob(
        series=series.name,
        path=series.path,
        variant=Variant("buy_hold", "buy_hold"),
        checkpoint=None,
        from_ms=series.bars[replay_start(series, settings.features)].start_ms,
        heldout_start_ms=series.bars[split.heldout_start].start_ms,
        to_ms=series.bars[split.heldout_start + 60].start_ms,
        folds=3,
        settings=settings,
        work_dir=tmp_path,
    )

    result = run_job(job)

    assert result.metrics["bars"] == 60
    assert result.metrics["start_ms"] == series.bars[split.heldout_start].close_ms
    assert [f["bars"] for f in result.folds] == [20, 20, 20]
    assert result.decisions["BUY_LONG"] == 1
    assert sum(result.decisions.values()) == 60  # the warm-up bars' HOLDs are not counted
    assert list(tmp_path.iterdir()) == []


def test_model_jobs_weigh_forecasts_against_the_runs_fee_when_it_differs(tmp_path: Path) -> None:
    """`trader evaluate` charges `broker.taker_fee`; a checkpoint's forecast rule (calibrated at
    another fee) must then weigh its forecasts against that fee too, as `trader replay` does."""
    from strategies.hrm.checkpoint import DEFAULT_CHECKPOINTS
    from strategies.hrm.strategy import HRMStrategy
    from trader._evaluate_replay import build_job_strategy

    settings = Settings(broker={"taker_fee": 0.002}, model={"device": "cpu"})
    job = ReplayJob(
        series="BTCUSDT_5m",
        path=FIXTURES / "ETHUSDT_5m.csv.gz",
        variant=Variant("hrm", "hrm"),
        checkpoint=DEFAULT_CHECKPOINTS["hrm"],
        from_ms=0,
        heldout_start_ms=0,
        to_ms=None,
        folds=1,
        settings=settings,
        work_dir=tmp_path,
    )
    strategy = build_job_strategy(job, lambda records: None)
    assert isinstance(strategy, HRMStrategy)
    assert strategy.policy.taker_fee == 0.002
    calibrated = load_checkpoint(
        DEFAULT_CHECKPOINTS["hrm"], expected_schema_hash=DEFAULT_SCHEMA_HASH
    ).meta.policy
    assert strategy.policy == calibrated.at_fee(0.002)
    assert calibrated.at_fee(None) is calibrated

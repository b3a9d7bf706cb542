"""`trader evaluate`: walk-forward evaluation of the HRM against the flat baseline and the rules.

Owns the evaluation protocol. Every given series is split by time and its last 30% is held out
of all training and tuning; the held-out bars (optionally capped at the first `max_bars`, the
same bars for every strategy) are replayed through the real engine (`trader.replay.runner`,
fees, slippage and the risk layer included) for `hrm`, `flat`, `ema_cross` and `buy_hold`, and
for the ablations (the HRM without ACT, and with other N x T at inference). Metrics are reported
for the whole held-out part and for `folds` consecutive windows of it (walk-forward: the model
never sees a bar of any window before trading it). Symbols in `unseen` are never trained on and
are reported apart. Unless `--no-train`, both models are first trained on the development part
of the training symbols. Prediction metrics and ACT statistics come from the models' outputs
in those same replays. It must not compute trading metrics itself (the engine and
`trader.metrics` do), hold training logic, or draw (that is `_evaluate_report`).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from strategies.hrm.checkpoint import DEFAULT_CHECKPOINTS, load_checkpoint
from trader._evaluate_data import (
    UNSEEN_SYMBOLS,
    CandleSeries,
    load_series,
    replay_start,
)
from trader._evaluate_metrics import Aligned, act_statistics, align, prediction_metrics
from trader._evaluate_pool import run_in_workers
from trader._evaluate_replay import JobResult, ReplayJob, Variant, run_job
from trader._evaluate_report import EvaluationReport, write_evaluation_report
from trader._evaluate_train import Preset, TrainOptions, flat_path, train_files
from trader.config import Settings
from trader.errors import ConfigError
from trader.features.dataset import build_feature_matrix
from trader.features.schema import FEATURE_INDEX, schema_hash_of

log = structlog.get_logger()

#: Trained on by default (those among the files; every non-unseen file when none is).
TRAIN_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
STRATEGIES = (
    Variant("flat", "flat"),
    Variant("hrm", "hrm"),
    Variant("ema_cross", "ema_cross"),
    Variant("buy_hold", "buy_hold"),
)
ABLATIONS = (
    Variant("hrm_no_act", "hrm", act=False),
    Variant("hrm_n1xt1", "hrm", cycles=1, tactical_steps=1),
    Variant("hrm_n3xt3", "hrm", cycles=3, tactical_steps=3),
)


@dataclass(frozen=True, slots=True)
class EvaluateOptions:
    """What `trader evaluate` was asked to do (see the module docstring)."""

    files: tuple[Path, ...]
    out_dir: Path
    checkpoint: Path | None = None
    flat_checkpoint: Path | None = None
    train: bool = True
    preset: Preset = "small"
    steps: int | None = None
    unseen: tuple[str, ...] = UNSEEN_SYMBOLS
    train_symbols: tuple[str, ...] = TRAIN_SYMBOLS
    folds: int = 3
    max_bars: int | None = None
    workers: int = 2
    ablations: bool = True
    command: str = ""
    notes: Path | None = None


async def evaluate(settings: Settings, options: EvaluateOptions) -> EvaluationReport:
    """Run the evaluation and write `report.json`, `report.md` and plots to `out_dir`."""
    series = load_series(options.files)
    hrm_path, flat_ckpt = _checkpoints(settings, options, series)
    work = options.out_dir / ".work"
    work.mkdir(parents=True, exist_ok=True)
    jobs = [
        _job(settings, options, s, variant, hrm_path, flat_ckpt, work)
        for s in series
        for variant in (*STRATEGIES, *(ABLATIONS if options.ablations else ()))
    ]
    results = await _run_jobs(jobs, options.workers)
    shutil.rmtree(work)
    report = _report(settings, options, series, results, hrm_path, flat_ckpt)
    write_evaluation_report(options.out_dir, report)
    return report


def _checkpoints(
    settings: Settings, options: EvaluateOptions, series: Sequence[CandleSeries]
) -> tuple[Path, Path]:
    """The HRM and flat checkpoints to evaluate: trained now (to `--checkpoint` when given,
    else under the output directory), given, or the shipped ones."""
    if options.train:
        train = [s for s in series if s.symbol in options.train_symbols] or [
            s for s in series if s.symbol not in options.unseen
        ]
        if not train:
            raise ConfigError("no series to train on: every file is an unseen symbol", key="FILES")
        out = options.checkpoint or options.out_dir / "checkpoints" / f"hrm-{options.preset}.pt"
        train_files(
            settings,
            TrainOptions(
                files=tuple(s.path for s in train),
                out=out,
                preset=options.preset,
                steps=options.steps,
                progress=False,
            ),
        )
        return out, flat_path(out)
    hrm = options.checkpoint or DEFAULT_CHECKPOINTS["hrm"]
    if options.flat_checkpoint is not None:
        flat = options.flat_checkpoint
    elif options.checkpoint is not None and flat_path(options.checkpoint).is_file():
        flat = flat_path(options.checkpoint)
    else:
        flat = DEFAULT_CHECKPOINTS["flat"]
    for path in (hrm, flat):
        if not path.is_file():
            raise ConfigError(
                f"checkpoint {path} does not exist; train one (`trader train`) or run "
                "without --no-train",
                key="--checkpoint",
            )
    return hrm, flat


def _job(
    settings: Settings,
    options: EvaluateOptions,
    series: CandleSeries,
    variant: Variant,
    hrm: Path,
    flat: Path,
    work: Path,
) -> ReplayJob:
    split = series.split()
    bars = series.bars
    heldout_start_ms = bars[split.heldout_start].start_ms
    end = split.heldout_start + options.max_bars if options.max_bars else len(bars)
    return ReplayJob(
        series=series.name,
        path=series.path,
        variant=variant,
        checkpoint=hrm if variant.kind == "hrm" else flat if variant.kind == "flat" else None,
        from_ms=bars[replay_start(series, settings.features)].start_ms,
        heldout_start_ms=heldout_start_ms,
        to_ms=bars[end].start_ms if end < len(bars) else None,
        folds=options.folds,
        settings=settings,
        work_dir=work,
    )


async def _run_jobs(jobs: list[ReplayJob], workers: int) -> list[JobResult]:
    """Every job in `workers` spawned processes (one torch thread each)."""

    def finished(result: JobResult) -> None:
        log.info(
            "evaluation_replay_finished",
            series=result.series,
            strategy=result.strategy,
            sharpe=result.metrics.get("sharpe"),
            seconds=round(result.seconds, 1),
        )

    return await run_in_workers(run_job, jobs, workers=workers, on_result=finished)


def _report(
    settings: Settings,
    options: EvaluateOptions,
    series: Sequence[CandleSeries],
    results: list[JobResult],
    hrm: Path,
    flat: Path,
) -> EvaluationReport:
    by_name = {s.name: s for s in series}
    unseen = {s.name for s in series if s.symbol in options.unseen}
    prediction: list[dict[str, Any]] = []
    pooled: dict[str, list[Aligned]] = {}
    act: list[dict[str, Any]] = []
    vol: dict[str, dict[int, float]] = {}
    results = sorted(results, key=lambda r: (r.series, r.strategy))
    for result in results:
        if not result.records:
            continue
        s = by_name[result.series]
        aligned = align(result.records, s.bars)
        metrics, _ = prediction_metrics(aligned)
        prediction.append({"series": result.series, "strategy": result.strategy, **metrics})
        group = "unseen" if result.series in unseen else "trained"
        for key in (result.strategy, f"{result.strategy}/{group}"):
            pooled.setdefault(key, []).append(aligned)
        if result.strategy.startswith("hrm"):
            if s.name not in vol:
                vol[s.name] = _vol_percentile(s)
            statistics = act_statistics(result.records, vol[s.name])
            act.append({"series": result.series, "strategy": result.strategy, **statistics})
    calibration = {}
    for key, parts in pooled.items():
        metrics, bins = prediction_metrics(Aligned.join(parts))
        calibration[key] = (metrics, bins)
    return EvaluationReport(
        results=results,
        prediction=prediction,
        calibration=calibration,
        act=act,
        unseen=tuple(sorted(unseen)),
        checkpoints={"hrm": _describe(hrm, settings), "flat": _describe(flat, settings)},
        splits={s.name: _split_info(s, options) for s in series},
        command=options.command,
        settings={
            "broker": settings.broker.model_dump(mode="json", exclude={"api_key", "api_secret"}),
            "risk": settings.risk.model_dump(mode="json"),
            "model": settings.model.model_dump(mode="json"),
            "features": settings.features.model_dump(mode="json"),
        },
        folds=options.folds,
        max_bars=options.max_bars,
        notes=options.notes.read_text(encoding="utf-8") if options.notes else "",
    )


def _describe(path: Path, settings: Settings) -> dict[str, Any]:
    """A checkpoint's self-description, as the report shows it."""
    meta = load_checkpoint(path, expected_schema_hash=schema_hash_of(settings.features)).meta
    shown = path.resolve()
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())  # reports stay free of this machine's paths
    described: dict[str, Any] = {"path": str(shown), **dataclasses.asdict(meta)}
    described["size_bytes"] = path.stat().st_size
    return described


def _vol_percentile(series: CandleSeries) -> dict[int, float]:
    matrix = build_feature_matrix(series.bars)
    column = np.asarray(matrix.raw[:, FEATURE_INDEX["vol_percentile_256"]])
    return {int(t): float(v) for t, v in zip(matrix.start_ms, column, strict=True)}


def _split_info(series: CandleSeries, options: EvaluateOptions) -> dict[str, Any]:
    split = series.split()
    end = (
        min(split.heldout_start + options.max_bars, split.bars) if options.max_bars else split.bars
    )
    return {
        "bars": split.bars,
        "heldout_first_ms": series.bars[split.heldout_start].start_ms,
        "heldout_last_ms": series.bars[end - 1].start_ms,
        "heldout_bars": end - split.heldout_start,
        # The passive reference: close of the last held-out bar over the close before it.
        "market_return": round(
            series.bars[end - 1].close / series.bars[split.heldout_start - 1].close - 1.0, 6
        ),
        "trained_on": series.symbol not in options.unseen,
    }

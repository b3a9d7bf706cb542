"""One evaluation replay: a strategy over one series' held-out bars through the real engine.

Owns the picklable `ReplayJob` (jobs run in worker processes), building its strategy (the rule
baselines by name; the models from their checkpoint, with an ablation applied and a recorder of
their outputs attached), running `trader.replay.runner.replay` (the engine, risk layer and paper
broker of `trader replay`, fees and slippage included) on a private SQLite file from the
warm-up start, and cutting the run's equity, fills and decisions to the held-out bars (and the
equity and fills to its folds) for `trader.metrics.compute_metrics`. It must not aggregate
across jobs or write reports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from strategies.base import Strategy
from strategies.hrm.checkpoint import LoadedModel, ModelKind, load_checkpoint
from strategies.hrm.model import HRM
from strategies.hrm.strategy import HRMStrategy, OutputRecord
from strategies.registry import build_strategy
from trader.config import Settings
from trader.domain import interval_ms
from trader.features.schema import schema_hash_of
from trader.logs import configure_logging
from trader.metrics import EquityPoint, FillPoint, compute_metrics
from trader.persistence import repository
from trader.persistence.database import make_engine
from trader.replay.runner import ReplayOptions, replay

StrategyKind = Literal["hrm", "flat", "ema_cross", "buy_hold"]
#: Equity points kept per job for the plots.
PLOT_POINTS = 1_500


@dataclass(frozen=True, slots=True)
class Variant:
    """A strategy as evaluated: its report name, kind and, for the HRM, an ablation.

    `act=False` runs one segment per bar (no ACT); `cycles`/`tactical_steps` replace N and T
    at inference, with the same weights.
    """

    name: str
    kind: StrategyKind
    act: bool = True
    cycles: int | None = None
    tactical_steps: int | None = None


@dataclass(frozen=True, slots=True)
class ReplayJob:
    """One (series, variant) replay; `to_ms` (exclusive) caps the held-out bars when set."""

    series: str
    path: Path
    variant: Variant
    checkpoint: Path | None
    from_ms: int
    heldout_start_ms: int
    to_ms: int | None
    folds: int
    settings: Settings
    work_dir: Path


@dataclass(frozen=True, slots=True)
class JobResult:
    """Metrics of one job over the held-out bars (and per fold), and what the model said."""

    series: str
    strategy: str
    metrics: dict[str, float | int | None]
    folds: list[dict[str, float | int | None]]
    decisions: dict[str, int]
    equity: list[tuple[int, float]]
    records: list[OutputRecord] = field(default_factory=list)
    seconds: float = 0.0


def run_job(job: ReplayJob) -> JobResult:
    """Run one job (in a worker process: one torch thread, quiet logs)."""
    configure_logging("WARNING", "json")
    torch.set_num_threads(1)
    db = job.work_dir / f"{job.series}-{job.variant.name}.db"
    files = [Path(f"{db}{suffix}") for suffix in ("", "-wal", "-shm")]
    for path in files:
        path.unlink(missing_ok=True)
    try:
        return asyncio.run(_run(job, db))
    finally:
        for path in files:
            path.unlink(missing_ok=True)


async def _run(job: ReplayJob, db: Path) -> JobResult:
    started = time.perf_counter()
    records: list[OutputRecord] = []
    strategy = build_job_strategy(job, records.extend)
    settings = job.settings.model_copy(
        update={
            "database": job.settings.database.model_copy(
                update={"url": f"sqlite+aiosqlite:///{db}"}
            )
        }
    )
    run_name = f"evaluate-{job.series}-{job.variant.name}"
    options = ReplayOptions(
        sources=(job.path,), from_ms=job.from_ms, to_ms=job.to_ms, run_name=run_name
    )
    outcome = await replay(settings, options, strategy=strategy)
    results = outcome.results
    decisions = await _heldout_decisions(settings, results.run_id, job.heldout_start_ms)
    step = interval_ms(results.interval)
    held = [p for p in results.equity if p.ts_ms > job.heldout_start_ms]
    before = [p for p in results.equity if p.ts_ms <= job.heldout_start_ms]
    initial = before[-1].equity if before else results.initial_equity
    fills = [f for f in results.fills if f.ts_ms > job.heldout_start_ms]
    metrics = compute_metrics(equity=held, fills=fills, initial_equity=initial, interval_ms=step)
    stride = max(len(held) // PLOT_POINTS, 1)
    return JobResult(
        series=job.series,
        strategy=job.variant.name,
        metrics=metrics.as_dict(),
        folds=_folds(held, fills, initial, step, job.folds),
        decisions=decisions,
        equity=[(p.ts_ms, p.equity) for p in held[::stride]],
        records=[r for r in records if r.bar_start_ms >= job.heldout_start_ms],
        seconds=time.perf_counter() - started,
    )


async def _heldout_decisions(
    settings: Settings, run_id: str, heldout_start_ms: int
) -> dict[str, int]:
    """The run's decisions by action on the held-out bars only.

    The run's own count (`RunResults.decisions`) also holds a HOLD for every warm-up bar, which
    the held-out metrics beside it do not cover.
    """
    db = make_engine(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
    try:
        return await repository.count_decisions(db, run_id, since_bar_ms=heldout_start_ms)
    finally:
        await db.dispose()


def _folds(
    equity: list[EquityPoint], fills: list[FillPoint], initial: float, step: int, folds: int
) -> list[dict[str, float | int | None]]:
    """Metrics of `folds` consecutive, equal parts of the held-out bars (walk-forward windows)."""
    out = []
    size = len(equity) // folds if folds else 0
    start_equity = initial
    for k in range(folds if size else 0):
        part = equity[k * size : (k + 1) * size if k + 1 < folds else len(equity)]
        # A fill happens at the open of the bar whose close is the next equity point.
        lo, hi = part[0].ts_ms - step, part[-1].ts_ms
        part_fills = [f for f in fills if lo <= f.ts_ms < hi]
        metrics = compute_metrics(
            equity=part, fills=part_fills, initial_equity=start_equity, interval_ms=step
        )
        out.append({"fold": k + 1, **metrics.as_dict()})
        start_equity = part[-1].equity
    return out


def build_job_strategy(
    job: ReplayJob, on_outputs: Callable[[list[OutputRecord]], None]
) -> Strategy:
    """The job's strategy: a rule baseline by name, or a model from its checkpoint."""
    settings, variant = job.settings, job.variant
    if variant.kind in ("ema_cross", "buy_hold"):
        return build_strategy(
            variant.kind,
            seed=settings.strategy.seed,
            ema_fast=settings.strategy.ema_fast,
            ema_slow=settings.strategy.ema_slow,
        )
    if job.checkpoint is None or variant.kind not in ("hrm", "flat"):
        raise ValueError(f"{variant.name} needs a checkpoint")
    kind: ModelKind = "hrm" if variant.kind == "hrm" else "flat"
    loaded = load_checkpoint(
        job.checkpoint,
        expected_kind=kind,
        expected_schema_hash=schema_hash_of(settings.features),
    )
    ablated = ablate(loaded, variant)
    return HRMStrategy(
        ablated,
        device=settings.model.device,
        strategic_every=settings.model.strategic_every,
        # The replay charges `broker.taker_fee`; the rule weighs its forecasts against the same.
        policy=ablated.meta.policy.at_fee(settings.broker.taker_fee),
        num_threads=1,
        on_outputs=on_outputs,
    )


def ablate(loaded: LoadedModel, variant: Variant) -> LoadedModel:
    """The model with the variant's inference-time changes (same weights)."""
    model = loaded.model
    if not isinstance(model, HRM):
        return loaded
    config = model.config
    if not variant.act:
        config = dataclasses.replace(
            config, act_min_segments=1, act_max_segments=1, act_max_segments_scaled=1
        )
    if variant.cycles is not None or variant.tactical_steps is not None:
        config = dataclasses.replace(
            config,
            cycles=variant.cycles or config.cycles,
            tactical_steps=variant.tactical_steps or config.tactical_steps,
        )
    model.config = config
    return loaded

"""`trader replay`: the engine over recorded input, resumable by run name.

Owns the replay lifecycle: migrate the database, create or resume the named run, merge the
sources into slices, warm the features over slices a previous attempt already committed, run
the rest through the same engine as live trading, pace it (`--speed`), flush, and produce the
summary and report. It must not contain trading logic (the engine and its stages do) or parse
input itself (the sources do).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from strategies.base import Strategy
from trader.config import Settings
from trader.domain import Bar
from trader.errors import ConfigError
from trader.persistence import repository
from trader.persistence.database import make_engine
from trader.persistence.migrate import ensure_schema
from trader.persistence.models import MAX_RUN_ID_CHARS
from trader.pipeline import build_engine, build_writer
from trader.replay.merge import iter_slices
from trader.replay.rejections import RejectionCounter
from trader.replay.sources import open_source
from trader.run_report import (
    RunResults,
    load_run_results,
    store_rejections,
    write_run_report,
)

if TYPE_CHECKING:
    from trader.report import ReportPaths

log = structlog.get_logger()

#: While the writer has batches in flight, the replay loop gives it a turn this often.
_YIELD_EVERY_SLICES = 32

#: Settings sections whose values change a run's results; a resumed run must match them.
RESULT_SECTIONS = ("broker", "risk", "strategy", "model", "features", "rewards")


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """What `trader replay` was asked to do."""

    sources: tuple[Path, ...]
    speed: float = 0.0
    from_ms: int | None = None
    to_ms: int | None = None
    run_name: str | None = None
    report_dir: Path | None = None
    symbol: str | None = None
    interval: str | None = None

    def __post_init__(self) -> None:
        # Checked here, at the edge, so that no caller reaches the database with a bad name.
        if self.run_name is not None:
            check_run_name(self.run_name)


def check_run_name(name: str) -> None:
    """Refuse a run name the database or the one-line outputs cannot hold.

    `runs.id` holds `MAX_RUN_ID_CHARS` characters: PostgreSQL refuses a longer name in the
    middle of the run's creation, while SQLite would store it, so a run could not move between
    them. An empty name would silently start a fresh run on every attempt instead of resuming.

    Raises:
        ConfigError: the name is empty, too long, or holds control characters (line breaks).
    """
    if not name:
        raise ConfigError("--run must not be empty", key="--run")
    if len(name) > MAX_RUN_ID_CHARS:
        raise ConfigError(
            f"--run {name[:16]!r}... is {len(name)} characters long; a run name has at most "
            f"{MAX_RUN_ID_CHARS}",
            key="--run",
        )
    if not name.isprintable():
        raise ConfigError(f"--run {name!r} holds control characters", key="--run")


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """The finished run's results, whether it resumed, and where its report went."""

    results: RunResults
    resumed: bool
    already_complete: bool
    report: ReportPaths | None


def default_run_name(now: datetime | None = None) -> str:
    """A fresh run id such as `replay-20261121T150302Z`."""
    moment = now if now is not None else datetime.now(UTC)
    return moment.strftime("replay-%Y%m%dT%H%M%SZ")


def run_config(settings: Settings, options: ReplayOptions) -> dict[str, Any]:
    """The JSON stored in `runs.config` (secrets removed) and compared on resume."""
    return {
        "settings": settings.redacted(),
        "replay": {
            "sources": [str(path) for path in options.sources],
            "from_ms": options.from_ms,
            "to_ms": options.to_ms,
            "symbol": options.symbol,
            "interval": options.interval,
        },
    }


def _check_same_run(stored: dict[str, Any], wanted: dict[str, Any], run_id: str) -> None:
    for section in RESULT_SECTIONS:
        if stored["settings"].get(section) != wanted["settings"][section]:
            raise ConfigError(
                f"run {run_id!r} was started with different {section} settings; "
                "resume it with the same configuration or choose another --run",
                key=section,
            )
    if stored.get("replay") != wanted["replay"]:
        raise ConfigError(
            f"run {run_id!r} was started on different input; resume it with the same "
            "sources and --from/--to or choose another --run",
            key="SOURCE",
        )


async def replay(
    settings: Settings,
    options: ReplayOptions,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_slice: Callable[[int], None] | None = None,
    strategy: Strategy | None = None,
) -> ReplayOutcome:
    """Replay `options.sources` through the engine and return the run's results.

    Running the same command again after a crash resumes after the last committed slice and
    ends exactly where an uninterrupted run ends; running it after completion only reports.

    Args:
        settings: the validated configuration.
        options: sources, pacing, time range, run name and report directory.
        sleep: pacing hook for `--speed N` (tests inject a fake).
        on_slice: progress callback receiving the number of slices handled so far.
        strategy: a strategy to run instead of the one `strategy.name` builds (tests use it
            for strategies the settings cannot name, `trader evaluate` for models with an
            ablation and an output recorder; a resumed run must be given the same).
    """
    db = make_engine(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
    try:
        await ensure_schema(db)
        run_id = options.run_name or default_run_name()
        config = run_config(settings, options)
        run = await repository.get_run(db, run_id)
        if run is not None:
            _check_same_run(run.config, config, run_id)
        rejections = RejectionCounter()
        if run is not None and run.ended_at is not None:
            log.info("replay_already_complete", run_id=run_id)
            results = await _results_with_rejections(db, run_id, options, rejections)
            resumed, already_complete = False, True
        else:
            already_complete = False
            snapshot = await repository.load_run_state(db, run_id)
            resumed = snapshot is not None
            await _run(
                settings,
                options,
                db,
                run_id,
                config,
                snapshot,
                rejections,
                sleep,
                on_slice,
                strategy,
            )
            results = await load_run_results(db, run_id, rejected=rejections.as_dict())
        report = (
            await write_run_report(db, results, options.report_dir) if options.report_dir else None
        )
        return ReplayOutcome(
            results=results, resumed=resumed, already_complete=already_complete, report=report
        )
    finally:
        await db.dispose()


async def _results_with_rejections(
    db: Any, run_id: str, options: ReplayOptions, rejections: RejectionCounter
) -> RunResults:
    """A completed run's results, with the rejection counts stored when it ended.

    A run finished before those were stored has its input re-read quietly to count them.
    """
    results = await load_run_results(db, run_id)
    if results.rejected is not None:
        return results
    rejections.quiet = True
    for _ in _slices(options, rejections):
        pass
    return dataclasses.replace(results, rejected=rejections.as_dict())


def _slices(options: ReplayOptions, rejections: RejectionCounter) -> Iterator[list[Bar]]:
    """The replay's slices, from every source, within --from/--to."""
    sources = [
        open_source(path, symbol=options.symbol, interval=options.interval)
        for path in options.sources
    ]
    return iter_slices(
        sources,
        rejections=rejections,
        from_ms=options.from_ms,
        to_ms=options.to_ms,
        names=[str(path) for path in options.sources],
    )


async def _run(
    settings: Settings,
    options: ReplayOptions,
    db: Any,
    run_id: str,
    config: dict[str, Any],
    snapshot: Any,
    rejections: RejectionCounter,
    sleep: Callable[[float], Awaitable[None]],
    on_slice: Callable[[int], None] | None,
    strategy: Strategy | None,
) -> None:
    async with build_writer(db, settings.database, replay=True) as writer:
        engine = build_engine(settings, run_id=run_id, sink=writer, strategy=strategy)
        resume_after = -1
        if snapshot is not None:
            engine.load_state_dict(snapshot.state)
            resume_after = snapshot.last_slice_start_ms
            log.info("replay_resumed", run_id=run_id, after_start_ms=resume_after)
        created = snapshot is not None
        previous_start: int | None = None
        handled = 0
        rejections.quiet = resume_after >= 0
        for bars in _slices(options, rejections):
            start_ms = bars[0].start_ms
            handled += 1
            if start_ms <= resume_after:
                engine.warm(bars)
                continue
            rejections.quiet = False
            if not created:
                await repository.create_run(
                    db,
                    run_id=run_id,
                    mode="replay",
                    config=config,
                    strategy=engine.strategy.name,
                    interval=bars[0].interval,
                    symbols=sorted({bar.symbol for bar in bars}),
                    started_at=datetime.now(UTC),
                )
                created = True
            if options.speed > 0 and previous_start is not None:
                await sleep((start_ms - previous_start) / 1_000 / options.speed)
            previous_start = start_ms
            await engine.process_slice(bars, received_ns=time.perf_counter_ns())
            if engine.should_flush():
                await engine.flush()
            if writer.pending_batches and handled % _YIELD_EVERY_SLICES == 0:
                # Nothing in a replayed slice really waits, so without this loop turn the writer
                # task would only run at the end and batches would pile up in its queue; with
                # it, each batch is committed soon after it is cut (a SQLite file on this very
                # thread, see `build_writer`; PostgreSQL while the engine goes on).
                await asyncio.sleep(0)
            if on_slice is not None:
                on_slice(handled)
        if not created:
            raise ConfigError("the replay sources hold no valid bars", key="SOURCE")
        await engine.flush(wait=True)
        # One transaction: a run marked ended always has its rejection counts for `trader report`.
        async with db.begin() as conn:
            await store_rejections(conn, run_id, rejections.as_dict())
            await repository.end_run(conn, run_id, datetime.now(UTC), symbols=engine.symbols())

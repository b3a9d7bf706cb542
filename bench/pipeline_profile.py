"""Where a replay's time goes: per-stage cost, and the loop with its SQLite commits.

Two measurements on the full real BTCUSDT 5m series (25,920 bars, bars already in memory):

1. Stage timing, in-memory sink: the engine's collaborators are wrapped with timers, so each line
   is microseconds per bar spent inside that stage (the wrappers add ~0.2 us per call; "other" is
   the engine's own glue: coroutines, lists, context objects).
2. Loop and commits, real SQLite writer as a replay builds it (commits on the loop's thread, so
   the loop's wall and CPU time include the SQLite inserts and commits): wall and thread CPU
   time of the loop per bar, and how long the final flush took. Loop wall well above loop CPU
   means the thread was stalled (host steal).

    PYTHONPATH=. .venv/bin/python bench/pipeline_profile.py [--strategy ema_cross] [--runs 3]

It prints medians over the runs. It is a diagnostic, not a benchmark of record (that is
bench/replay_throughput.py).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _pipeline import drive, load_bars, sqlite_pipeline


def _timed(target: Any, name: str, label: str, totals: dict[str, int]) -> None:
    """Replace `target.name` by a wrapper that adds its time to `totals[label]`."""
    original: Callable[..., Any] = getattr(target, name)
    clock = time.perf_counter_ns
    if asyncio.iscoroutinefunction(original):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            result = await original(*args, **kwargs)
            totals[label] += clock() - started
            return result

        setattr(target, name, async_wrapper)
    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            result = original(*args, **kwargs)
            totals[label] += clock() - started
            return result

        setattr(target, name, wrapper)


async def _stages(bars: list[Any], strategy: str) -> dict[str, float]:
    """Microseconds per bar per stage, engine with an in-memory sink."""
    from tests.support.engine_harness import ListSink, settings_for
    from trader.pipeline import build_engine

    engine = build_engine(settings_for(strategy), run_id="profile", sink=ListSink())
    totals: dict[str, int] = defaultdict(int)
    stages = [
        (engine._broker, "on_bar", "broker.on_bar"),
        (engine._portfolio, "mark", "portfolio.mark"),
        (engine._portfolio, "totals", "portfolio.totals"),
        (engine._rewards, "close", "rewards.close"),
        (engine._rewards, "open", "rewards.open"),
        (engine._features, "update", "features.update"),
        (engine._strategy, "decide", "strategy.decide"),
        (engine._risk, "on_bar", "risk.on_bar"),
        (engine._risk, "on_mark", "risk.on_mark"),
        (engine._risk, "review", "risk.review"),
        (engine, "_record_equity", "engine.equity_row"),
        (engine, "_account", "engine.account_view"),
    ]
    for target, name, label in stages:
        _timed(target, name, label, totals)
    started = time.perf_counter_ns()
    for bar in bars:
        await engine.process_slice([bar])
        if engine.should_flush():
            await engine.flush()
    await engine.flush(wait=True)
    elapsed = time.perf_counter_ns() - started
    per_bar = {label: value / len(bars) / 1_000 for label, value in totals.items()}
    per_bar["other"] = elapsed / len(bars) / 1_000 - sum(per_bar.values())
    per_bar["total"] = elapsed / len(bars) / 1_000
    return per_bar


async def _loop_versus_writer(bars: list[Any], strategy: str, db_path: Path) -> dict[str, float]:
    """Loop wall/CPU per bar (commits included) and the final flush, real SQLite writer."""
    async with sqlite_pipeline(db_path, strategy, "profile") as (engine, writer):
        wall, cpu = time.perf_counter(), time.thread_time()
        await drive(engine, writer, ([bar] for bar in bars))
        loop_wall, loop_cpu = time.perf_counter() - wall, time.thread_time() - cpu
        await engine.flush(wait=True)
        total = time.perf_counter() - wall
    n = len(bars)
    return {
        "bars/s": n / total,
        "loop wall us/bar": loop_wall / n * 1e6,
        "loop cpu us/bar": loop_cpu / n * 1e6,
        "final flush ms": (total - loop_wall) * 1e3,
    }


def main() -> None:
    """Run both measurements and print medians."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--strategy", default="ema_cross")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from trader.logs import configure_logging

    configure_logging("WARNING", "json")
    bars = load_bars()
    stage_runs = [asyncio.run(_stages(bars, args.strategy)) for _ in range(args.runs)]
    print(f"stages, {args.strategy}, in-memory sink, us/bar (median of {args.runs}):")
    for label in sorted(stage_runs[0], key=lambda key: -stage_runs[0][key]):
        print(f"  {label:<20} {statistics.median(run[label] for run in stage_runs):7.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        writer_runs = [
            asyncio.run(_loop_versus_writer(bars, args.strategy, Path(tmp) / f"p{i}.db"))
            for i in range(args.runs)
        ]
    print(f"loop with its commits, {args.strategy}, SQLite (median of {args.runs}):")
    for label in writer_runs[0]:
        print(f"  {label:<20} {statistics.median(run[label] for run in writer_runs):10.1f}")


if __name__ == "__main__":
    main()

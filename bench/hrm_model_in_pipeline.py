"""How much slower the HRM's own forward runs inside a replay than back to back (issue 4).

`bench/hrm_replay_throughput.py` compares a whole replay against the bare model calls, each in
its own process. This one asks what part of the gap is the model itself: in ONE process, on the
real BTCUSDT 5m series with the shipped `small` HRM and the real SQLite writer, it alternates

  inside        a chunk of bars through the full pipeline, each `HRM.infer` call timed where
                the strategy makes it (the rest of the pipeline runs between calls);
  back to back  the very calls of that chunk (same carries, same batches) again at once, under
                `torch.inference_mode`, nothing else running between them.

Alternating chunk by chunk in one process means a drift of the shared host's speed hits both
sides of each ratio. Prints, per chunk and as medians: mean microseconds per call inside and
back to back, their ratio, and the pipeline's microseconds per bar. `1 / (inside / back to
back)` is what the replay-to-model ratio would be if every other stage cost nothing: the ceiling
a faster pipeline can approach. A diagnostic; it must not assert on speed or run in the tests.

    PYTHONPATH=. .venv/bin/python bench/hrm_model_in_pipeline.py [--bars 6000] [--chunk 400]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _pipeline import DEFAULT_DATA, load_bars, sqlite_pipeline

#: Bars replayed before the first chunk: the feature warm-up and a few hundred model calls.
WARMUP_BARS = 1_200


def _timed_calls(model: Any, calls: list[tuple[int, Any, Any]]) -> Callable[[Any, Any], Any]:
    """`model.infer` that appends (nanoseconds, carry, batch) of every call to `calls`."""
    inner = model.infer
    clock = time.perf_counter_ns

    def infer(carry: Any, batch: Any) -> Any:
        started = clock()
        result = inner(carry, batch)
        calls.append((clock() - started, carry, batch))
        return result

    return infer


def _back_to_back(infer: Callable[[Any, Any], Any], calls: list[tuple[int, Any, Any]]) -> float:
    """Mean nanoseconds per call for the recorded calls made again, one after the other."""
    import torch

    clock = time.perf_counter_ns
    total = 0
    with torch.inference_mode():  # as the strategy runs them (CPU: no autocast)
        for _, carry, batch in calls:
            started = clock()
            infer(carry, batch)
            total += clock() - started
    return total / len(calls)


async def measure(bars: list[Any], chunk: int, db_path: Path) -> list[dict[str, float]]:
    """One row per chunk: us per call inside and back to back, and us per bar of the pipeline."""
    from trader.config import Settings
    from trader.pipeline import build_strategy_from

    strategy = build_strategy_from(Settings(strategy={"name": "hrm"}))
    model = strategy.model
    inner = model.infer
    calls: list[tuple[int, Any, Any]] = []
    model.infer = _timed_calls(model, calls)  # an instance attribute: the strategy calls it
    rows = []
    async with sqlite_pipeline(db_path, "hrm", "in-pipeline", instance=strategy) as (engine, _):
        for bar in bars[:WARMUP_BARS]:
            await engine.process_slice([bar])
        for start in range(WARMUP_BARS, len(bars) - chunk + 1, chunk):
            calls.clear()
            await engine.flush(wait=True)  # the previous chunk's commits stay out of this one
            started = time.perf_counter_ns()
            for bar in bars[start : start + chunk]:
                await engine.process_slice([bar])
                if engine.should_flush():
                    await engine.flush()
            per_bar = (time.perf_counter_ns() - started) / chunk
            inside = sum(ns for ns, _, _ in calls) / len(calls)
            rows.append(
                {
                    "inside_us": inside / 1e3,
                    "back_to_back_us": _back_to_back(inner, calls) / 1e3,
                    "pipeline_us_per_bar": per_bar / 1e3,
                }
            )
        await engine.flush(wait=True)
    return rows


def main() -> None:
    """Measure and print per-chunk figures and their medians."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bars", type=int, default=6_000, help="first N bars (0: all)")
    parser.add_argument("--chunk", type=int, default=400, help="bars per alternation")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    from trader.logs import configure_logging

    configure_logging("WARNING", "json")
    bars = load_bars(args.data, args.bars)
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(measure(bars, args.chunk, Path(tmp) / "bench.db"))
    if not rows:
        raise SystemExit(f"need more than {WARMUP_BARS + args.chunk} bars")
    slowdown = [r["inside_us"] / r["back_to_back_us"] for r in rows]
    print(f"HRM.infer inside the replay vs back to back, {len(rows)} chunks of {args.chunk} bars")
    print(f"{'chunk':>5} {'inside us':>10} {'b2b us':>8} {'ratio':>6} {'pipeline us/bar':>16}")
    for k, (row, ratio) in enumerate(zip(rows, slowdown, strict=True)):
        print(
            f"{k:>5} {row['inside_us']:>10.0f} {row['back_to_back_us']:>8.0f} {ratio:>6.3f} "
            f"{row['pipeline_us_per_bar']:>16.0f}"
        )
    median = statistics.median(slowdown)
    share = statistics.median(r["back_to_back_us"] / r["pipeline_us_per_bar"] for r in rows)
    print(f"median inside / back to back: {median:.3f}")
    print(f"ceiling of replay / model-only with a zero-cost pipeline: {1 / median:.3f}")
    print(f"back-to-back model time / pipeline time per bar (median): {share:.3f}")


if __name__ == "__main__":
    main()

"""Replay throughput on the full real BTCUSDT 5m series (25,920 bars).

Modes, each measured in its own process (so peak RSS belongs to that mode). From bars already in
memory:
  features       the rolling feature buffer alone (raw features, O(1) per bar)
  noop           the full pipeline with a strategy that always HOLDs, SQLite persistence on
  ema_cross      the full pipeline with the EMA-cross strategy, SQLite persistence on
The same three through the replay input path (CSV.GZ parsing, validation, merge into slices):
  file_features, file_noop, file_ema_cross
And `trader replay`'s own function end to end, start-up and the closing summary included:
  replay         ema_cross

Start-up (imports, creating and migrating the database) is excluded from all but `replay`; a
pipeline run's clock stops when the writer has committed the last batch. Prints the median of N
runs, the ratios of each pipeline to its features-only loop, and peak RSS.

    .venv/bin/python bench/replay_throughput.py [--runs 5] [--data bench/data/BTCUSDT_5m.csv.gz]
        [--modes features,noop,ema_cross]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _pipeline import DEFAULT_DATA, load_bars, run_child, timed_run

MODES = ("features", "noop", "ema_cross", "file_features", "file_noop", "file_ema_cross", "replay")


def _memory_slices(bars: list) -> Iterator[list]:
    return ([bar] for bar in bars)


def _file_slices(data: Path) -> Iterator[list]:
    from trader.replay.merge import iter_slices
    from trader.replay.rejections import RejectionCounter
    from trader.replay.sources import open_source

    return iter_slices([open_source(data)], rejections=RejectionCounter())


def _features_run(slices: Iterator[list]) -> float:
    from trader.features.buffer import FeatureBook

    book = FeatureBook(tactical_window=64, strategic_window=256, scale_window=256, clip=5.0)
    started = time.perf_counter()
    for bars in slices:
        for bar in bars:
            book.update(bar)
    return time.perf_counter() - started


def _replay_run(data: Path, db_path: Path) -> float:
    from trader.config import Settings
    from trader.replay.runner import ReplayOptions, replay

    settings = Settings(
        database={"url": f"sqlite+aiosqlite:///{db_path}"}, strategy={"name": "ema_cross"}
    )
    started = time.perf_counter()
    asyncio.run(replay(settings, ReplayOptions(sources=(data,), run_name="bench")))
    return time.perf_counter() - started


def child(mode: str, runs: int, data: Path) -> None:
    """Measure one mode `runs` times and print a JSON line."""
    from trader.logs import configure_logging

    configure_logging("WARNING", "json")
    bars = load_bars(data)
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(runs):
            db_path = Path(tmp) / f"bench-{index}.db"
            slices = _file_slices(data) if mode.startswith("file_") else _memory_slices(bars)
            kind = mode.removeprefix("file_")
            if kind == "features":
                seconds.append(_features_run(slices))
            elif kind == "replay":
                seconds.append(_replay_run(data, db_path))
            else:
                seconds.append(asyncio.run(timed_run(db_path, kind, slices)))
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"mode": mode, "bars": len(bars), "seconds": seconds, "peak_rss_mb": peak_rss_mb}
        )
    )


def main() -> None:
    """Run every mode in a subprocess and print medians and ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated subset of the modes (default: all); ratios need the features modes",
    )
    args = parser.parse_args()
    if args.mode:
        child(args.mode, args.runs, args.data)
        return
    modes = [mode for mode in args.modes.split(",") if mode]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes: {', '.join(unknown)} (choose from {', '.join(MODES)})")
    results = {}
    for mode in modes:
        results[mode] = run_child(
            __file__, "--mode", mode, "--runs", str(args.runs), "--data", str(args.data)
        )
    bars = next(iter(results.values()))["bars"]
    print(f"replay throughput, {args.runs} runs each, {bars:,} bars of {args.data.name}")
    print(f"{'mode':<15} {'median s':>9} {'bars/s':>10} {'peak RSS MB':>12}")
    rates = {}
    for mode, result in results.items():
        median = statistics.median(result["seconds"])
        rates[mode] = result["bars"] / median
        print(f"{mode:<15} {median:>9.3f} {rates[mode]:>10,.0f} {result['peak_rss_mb']:>12.0f}")
    for prefix in ("", "file_"):
        for mode in ("noop", "ema_cross"):
            if f"{prefix}features" not in rates or f"{prefix}{mode}" not in rates:
                continue
            ratio = rates[f"{prefix}features"] / rates[f"{prefix}{mode}"]
            print(f"{prefix}{mode} pipeline time / {prefix}features-only time: {ratio:.2f}x")


if __name__ == "__main__":
    main()

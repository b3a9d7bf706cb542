"""Micro-benchmark of the rolling feature buffer on the 25,920-bar BTCUSDT 5m series.

Owns timing the feature paths and printing median microseconds per bar over several runs:
the raw kernel alone, `FeatureBuffer.update` (what every strategy pays), the same plus a
tactical window per ready bar (what the HRM pays), and whole-history `build_feature_matrix`.
It must not assert on speed or run as part of the test suite.

Run from the repository root: `.venv/bin/python -m bench.bench_features [--runs 7]`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.support.candles import load_candles
from trader.domain import Bar
from trader.features.buffer import FeatureBuffer
from trader.features.dataset import build_feature_matrix
from trader.features.kernel import FeatureKernel

DATA = Path(__file__).parent / "data" / "BTCUSDT_5m.csv.gz"


def _kernel_only(bars: Sequence[Bar]) -> None:
    kernel = FeatureKernel(interval="5")
    for bar in bars:
        kernel.update(bar)


def _buffer_update(bars: Sequence[Bar]) -> None:
    buffer = FeatureBuffer(interval="5")
    for bar in bars:
        buffer.update(bar)


def _buffer_with_windows(bars: Sequence[Bar]) -> None:
    buffer = FeatureBuffer(interval="5")
    for bar in bars:
        buffer.update(bar)
        if buffer.ready:
            buffer.tactical_window()


def _matrix(bars: Sequence[Bar]) -> None:
    build_feature_matrix(bars)


def _median_us_per_bar(
    run: Callable[[Sequence[Bar]], None], bars: Sequence[Bar], runs: int
) -> float:
    timings = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        run(bars)
        timings.append((time.perf_counter_ns() - start) / 1_000 / len(bars))
    return statistics.median(timings)


def main() -> None:
    """Time each path `--runs` times and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per path (>= 5)")
    runs = max(parser.parse_args().runs, 5)
    bars = load_candles(DATA, "BTCUSDT", "5")
    print(f"{len(bars)} bars, median of {runs} runs")
    paths: list[tuple[str, Callable[[Sequence[Bar]], None]]] = [
        ("kernel.update (raw row only)", _kernel_only),
        ("FeatureBuffer.update", _buffer_update),
        ("update + tactical_window when ready", _buffer_with_windows),
        ("build_feature_matrix (raw + scaled)", _matrix),
    ]
    for label, run in paths:
        us = _median_us_per_bar(run, bars, runs)
        print(f"{label:40s} {us:8.2f} us/bar  {1e6 / us:10,.0f} bars/s")


if __name__ == "__main__":
    main()

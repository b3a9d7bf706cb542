"""Replay read throughput: candle files, recordings and the slice merge (not part of the tests).

Owns the measurement behind the replay throughput target (>= 150,000 candle rows/s on
bench/data/BTCUSDT_5m.csv.gz). It reports best and median over several passes, since other
processes share the machine; it must not assert anything about speed.

    .venv/bin/python -m bench.bench_sources [--repeat 7] [--data bench/data/BTCUSDT_5m.csv.gz]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from trader.domain import Bar
from trader.replay.merge import iter_slices
from trader.replay.rejections import RejectionCounter
from trader.replay.sources import open_source
from trader.replay.to_frames import candles_to_frames, write_recording

DEFAULT_DATA = Path(__file__).parent / "data" / "BTCUSDT_5m.csv.gz"


def _measure(name: str, unit: str, repeat: int, run: Callable[[], int]) -> None:
    """Run `run` `repeat` times; it returns how many units it processed."""
    rates = []
    count = 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = run()
        rates.append(count / (time.perf_counter() - started))
    sys.stdout.write(
        f"{name:<34} {count:>7} {unit:<7} best {max(rates):>9,.0f}/s"
        f"  median {statistics.median(rates):>9,.0f}/s\n"
    )


def main() -> None:
    """Parse arguments and print one line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    data: Path = args.data

    def candles() -> int:
        return sum(1 for _ in open_source(data))

    _measure(f"candles ({data.name})", "rows", args.repeat, candles)

    bars = [item for item in open_source(data) if isinstance(item, Bar)]
    with tempfile.TemporaryDirectory() as tmp:
        recording = Path(tmp) / "frames.jsonl.gz"
        lines = write_recording(candles_to_frames(bars), recording)

        def frames() -> int:
            for _ in open_source(recording):
                pass
            return lines

        _measure("recording (2 updates + confirm/bar)", "frames", args.repeat, frames)

        def merged() -> int:
            sources = [open_source(data), open_source(recording)]
            counter = RejectionCounter(quiet=True)
            emitted = sum(len(bars) for bars in iter_slices(sources, rejections=counter))
            # Every bar of the second source is a counted duplicate: both were read and merged.
            return emitted + counter.total

        _measure("merge candles + recording", "bars in", args.repeat, merged)


if __name__ == "__main__":
    main()

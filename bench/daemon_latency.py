"""Live latency of `trader run`: a bar's confirm frame received -> its decision committed.

Runs the real daemon (`run_daemon`: websocket feed, slice assembly, engine with `ema_cross`,
SQLite writer) against the local fake exchange on 127.0.0.1, with 1, 10 and 50 symbols whose
bars close together. For each live slice the daemon measures from the moment the last of its
confirm frames was read off the socket to the moment its rows (bars, decision, equity, run
state) are committed; this prints p50, p99 and max per symbol count and the ratio to one symbol.

The fake exchange pushes from the same event loop, so a slice's confirms arrive one after the
other as they would from one Bybit connection; the clock starts at the last of them. Each bar
is pushed only after the previous slice was committed, so slices are measured one at a time.

    PYTHONPATH=. .venv/bin/python bench/daemon_latency.py [--bars 200] [--symbols 1,10,50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path


def _percentile(values: list[int], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return float(ordered[index])


async def _measure(symbols: int, bars: int, workdir: Path) -> list[int]:
    from tests.support.candles import random_walk_bars
    from tests.support.daemon_harness import WARMUP_BARS, DaemonDb, daemon_settings
    from tests.support.daemon_harness import start_daemon_task as start
    from tests.support.fake_bybit import FakeBybit

    names = [f"S{index:03d}USDT" for index in range(symbols)]
    start_ms = 1_750_000_000_000 - 1_750_000_000_000 % 300_000
    history = WARMUP_BARS + 5
    candles = [
        bar
        for index, name in enumerate(names)
        for bar in random_walk_bars(history + bars + 2, seed=index, symbol=name, start_ms=start_ms)
    ]
    db = DaemonDb(workdir / f"latency-{symbols}.db")
    stop = asyncio.Event()
    first = min(bar.start_ms for bar in candles)
    async with FakeBybit(candles, start_ms=first + history * 300_000, updates_per_bar=1) as fake:
        settings = daemon_settings(fake, db.path, ",".join(names))
        async with asyncio.TaskGroup() as group:
            task = start(group, settings, stop)
            for _ in range(bars + 1):
                target = fake.market.forming_start_ms - 300_000
                async with asyncio.timeout(120):
                    # Off the loop, and not too often: the daemon shares this loop.
                    while await asyncio.to_thread(db.last_start) != target:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                if _ < bars:
                    await fake.advance_bars(1)
            stop.set()
        summary = task.result()
    return list(summary.commit_latency_us)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=200, help="live bars per symbol count")
    parser.add_argument("--symbols", default="1,10,50", help="comma-separated symbol counts")
    args = parser.parse_args()
    for key in [key for key in os.environ if key.startswith("TRADER_")]:
        del os.environ[key]
    from trader.logs import configure_logging

    configure_logging("WARNING", "json")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (int(part) for part in args.symbols.split(",")):
            latencies = asyncio.run(_measure(count, args.bars, Path(tmp)))
            rows.append(
                (
                    count,
                    len(latencies),
                    statistics.median(latencies) / 1_000,
                    _percentile(latencies, 0.99) / 1_000,
                    max(latencies) / 1_000,
                )
            )
    base_p50 = rows[0][2]
    print(f"{'symbols':>8} {'slices':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p50/1sym':>9}")
    for count, slices, p50, p99, worst in rows:
        print(
            f"{count:>8} {slices:>7} {p50:>8.2f} {p99:>8.2f} {worst:>8.2f} {p50 / base_p50:>9.1f}"
        )


if __name__ == "__main__":
    main()

"""Live latency of `trader run`: a bar's confirm frame received -> its decision committed.

Runs the real daemon as its own process (`python -m trader run`: websocket feed, slice
assembly, engine with `ema_cross`, SQLite writer) against the local fake exchange on 127.0.0.1,
with 1, 10 and 50 symbols whose bars close together. For each live slice the daemon measures
from the moment the last of its confirm frames was read off the socket to the moment its rows
(bars, decisions, equity, run state) are committed, and logs p50/p99/max when it stops; this
prints them per symbol count with the ratio of p50 to one symbol's.

The fake exchange runs in this process, so the daemon's process holds only the daemon. Each bar
is pushed only after the previous slice was committed, so slices are measured one at a time.

    PYTHONPATH=. .venv/bin/python bench/daemon_latency.py [--bars 200] [--symbols 1,10,50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
from pathlib import Path


async def _measure(symbols: int, bars: int, workdir: Path) -> dict[str, int]:
    from tests.support.candles import random_walk_bars
    from tests.support.daemon_harness import WARMUP_BARS, DaemonDb, start_daemon_process
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
    first = min(bar.start_ms for bar in candles)
    async with FakeBybit(candles, start_ms=first + history * 300_000, updates_per_bar=1) as fake:
        process = await start_daemon_process(
            fake,
            workdir=workdir,
            db_path=db.path,
            symbols=",".join(names),
            env={"TRADER_FEED__STALENESS_S": "60", "TRADER_LOGGING__FORMAT": "json"},
        )
        try:
            for index in range(bars + 1):
                target = fake.market.forming_start_ms - 300_000
                async with asyncio.timeout(300):
                    # Off the loop and not too often: the fake exchange shares this loop.
                    while await asyncio.to_thread(db.last_start) != target:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                if index < bars:
                    await fake.advance_bars(1)
            process.send_signal(signal.SIGTERM)
            _, stderr = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    for line in stderr.decode().splitlines():
        if '"session_stopped"' in line:
            return {k: v for k, v in json.loads(line).items() if k.startswith(("commit", "live"))}
    raise RuntimeError("the daemon did not report its latencies")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=200, help="live bars per symbol count")
    parser.add_argument("--symbols", default="1,10,50", help="comma-separated symbol counts")
    args = parser.parse_args()
    for key in [key for key in os.environ if key.startswith("TRADER_")]:
        del os.environ[key]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (int(part) for part in args.symbols.split(",")):
            stats = asyncio.run(_measure(count, args.bars, Path(tmp)))
            rows.append(
                (
                    count,
                    stats["live_slices"],
                    stats["commit_latency_p50_us"] / 1_000,
                    stats["commit_latency_p99_us"] / 1_000,
                    stats["commit_latency_max_us"] / 1_000,
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

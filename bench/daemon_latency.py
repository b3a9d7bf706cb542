"""Live latency of `trader run`: a bar's confirm frame received -> its decision committed.

Runs the real daemon as its own process (`python -m trader run`: websocket feed, slice
assembly, engine with the chosen strategy, `ema_cross` by default, SQLite writer) against the
local fake exchange on 127.0.0.1, with 1, 10 and 50 symbols whose bars close together. For each
live slice the daemon measures from the moment the last of its confirm frames was read off the
socket to the moment its rows (bars, decisions, equity, run state) are committed, and logs
p50/p99/max when it stops; this prints them per symbol count with the ratio of p50 to one
symbol's, and the daemon process's peak RSS (VmHWM from /proc, read just before SIGTERM).

`ema_cross` runs with the daemon tests' short feature windows (fast warm-up); `hrm` and `flat`
run with the default windows their shipped checkpoints were trained on (64/256/256), so the
daemon first catches up ~790 warm-up bars per symbol over REST. A model strategy decides for a
symbol only from its first strategic bar on (within 16 bars), so give it `--bars` >= 30.

The fake exchange runs in this process, so the daemon's process holds only the daemon. Each bar
is pushed only after the previous slice was committed, so slices are measured one at a time.

    PYTHONPATH=. .venv/bin/python bench/daemon_latency.py [--bars 200] [--symbols 1,10,50]
        [--strategy ema_cross]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
from pathlib import Path

MODEL_STRATEGIES = ("hrm", "flat")


def _strategy_env(strategy: str) -> tuple[dict[str, str], int]:
    """TRADER_* overrides for a strategy and the warm-up bars the daemon then fetches."""
    from tests.support.daemon_harness import WARMUP_BARS
    from trader.config import FeatureSettings
    from trader.features.buffer import warmup_bars

    env = {"TRADER_STRATEGY__NAME": strategy}
    if strategy not in MODEL_STRATEGIES:
        return env, WARMUP_BARS
    # The harness's short test windows would make the checkpoint refuse the features.
    windows = FeatureSettings()
    env |= {
        "TRADER_FEATURES__TACTICAL_WINDOW": str(windows.tactical_window),
        "TRADER_FEATURES__STRATEGIC_WINDOW": str(windows.strategic_window),
        "TRADER_FEATURES__SCALE_WINDOW": str(windows.scale_window),
    }
    warmup = warmup_bars(
        strategic_window=windows.strategic_window, scale_window=windows.scale_window
    )
    return env, warmup


def _peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # reported in kB
    raise RuntimeError(f"no VmHWM for process {pid}")


async def _measure(symbols: int, bars: int, workdir: Path, strategy: str) -> dict[str, float]:
    from tests.support.candles import random_walk_bars
    from tests.support.daemon_harness import DaemonDb, start_daemon_process
    from tests.support.fake_bybit import FakeBybit

    names = [f"S{index:03d}USDT" for index in range(symbols)]
    start_ms = 1_750_000_000_000 - 1_750_000_000_000 % 300_000
    strategy_env, warmup = _strategy_env(strategy)
    history = warmup + 5
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
            env={"TRADER_FEED__STALENESS_S": "60", "TRADER_LOGGING__FORMAT": "json"} | strategy_env,
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
            peak_rss_mb = _peak_rss_mb(process.pid)  # shutdown allocates nothing worth adding
            process.send_signal(signal.SIGTERM)
            _, stderr = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    for line in stderr.decode().splitlines():
        if '"session_stopped"' in line:
            stats = {k: v for k, v in json.loads(line).items() if k.startswith(("commit", "live"))}
            return stats | {"peak_rss_mb": peak_rss_mb}
    raise RuntimeError(f"the daemon did not report its latencies: {stderr.decode()[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=200, help="live bars per symbol count")
    parser.add_argument("--symbols", default="1,10,50", help="comma-separated symbol counts")
    parser.add_argument("--strategy", default="ema_cross", help="strategy.name of the daemon")
    args = parser.parse_args()
    for key in [key for key in os.environ if key.startswith("TRADER_")]:
        del os.environ[key]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (int(part) for part in args.symbols.split(",")):
            stats = asyncio.run(_measure(count, args.bars, Path(tmp), args.strategy))
            rows.append(
                (
                    count,
                    stats["live_slices"],
                    stats["commit_latency_p50_us"] / 1_000,
                    stats["commit_latency_p99_us"] / 1_000,
                    stats["commit_latency_max_us"] / 1_000,
                    stats["peak_rss_mb"],
                )
            )
    base_p50 = rows[0][2]
    print(f"strategy {args.strategy}")
    print(
        f"{'symbols':>8} {'slices':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p50/1sym':>9} "
        f"{'peak RSS MB':>12}"
    )
    for count, slices, p50, p99, worst, rss in rows:
        print(
            f"{count:>8} {slices:>7} {p50:>8.2f} {p99:>8.2f} {worst:>8.2f} {p50 / base_p50:>9.1f} "
            f"{rss:>12.0f}"
        )


if __name__ == "__main__":
    main()

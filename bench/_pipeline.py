"""Shared by the benchmarks: the data, a child process per mode, and a real engine and SQLite
writer driven as the replay runner does."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: The full real BTCUSDT 5m series (25,920 bars) the replay benchmarks run on.
DEFAULT_DATA = ROOT / "bench" / "data" / "BTCUSDT_5m.csv.gz"


def load_bars(path: Path = DEFAULT_DATA, limit: int = 0) -> list[Any]:
    """A candle file's valid bars, read by the replay's own parser (the first `limit` if > 0)."""
    from trader.domain import Bar
    from trader.replay.candles import iter_candles

    bars = [item for item in iter_candles(path) if isinstance(item, Bar)]
    return bars[:limit] if limit > 0 else bars


def run_child(script: str, *args: str) -> dict[str, Any]:
    """Run `script args` in a fresh interpreter from the repository root; its last JSON line.

    Each measured mode runs in its own process, so its peak RSS and warm caches are its own.
    """
    done = subprocess.run(
        [sys.executable, script, *args], check=True, capture_output=True, text=True, cwd=ROOT
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@asynccontextmanager
async def sqlite_pipeline(
    db_path: Path, strategy: str, run_id: str, *, instance: Any = None
) -> AsyncIterator[Any]:
    """Yield (engine, writer) on a fresh, migrated SQLite file holding the run `run_id`.

    `instance`, when given, is the strategy object the engine uses (already built for the
    strategy named `strategy`, e.g. with a hook on it); by default the engine builds its own.
    """
    from trader.config import Settings
    from trader.persistence.database import make_engine
    from trader.persistence.migrate import ensure_schema
    from trader.persistence.repository import create_run
    from trader.pipeline import build_engine, build_writer

    settings = Settings(
        database={"url": f"sqlite+aiosqlite:///{db_path}"}, strategy={"name": strategy}
    )
    db = make_engine(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
    try:
        await ensure_schema(db)
        await create_run(
            db,
            run_id=run_id,
            mode="replay",
            config={"settings": settings.redacted()},
            strategy=strategy,
            interval="5",
            symbols=["BTCUSDT"],
            started_at=datetime.now(UTC),
        )
        async with build_writer(db, settings.database, replay=True) as writer:
            engine = build_engine(settings, run_id=run_id, sink=writer, strategy=instance)
            yield engine, writer
    finally:
        await db.dispose()


async def timed_run(
    db_path: Path, strategy: str, slices: Iterable[Sequence[Any]], *, instance: Any = None
) -> float:
    """Seconds for `slices` through a fresh `sqlite_pipeline` until the writer has committed
    them all (start-up excluded)."""
    async with sqlite_pipeline(db_path, strategy, "bench", instance=instance) as (engine, writer):
        started = time.perf_counter()
        await drive(engine, writer, slices)
        await engine.flush(wait=True)
        return time.perf_counter() - started


async def drive(engine: Any, writer: Any, slices: Iterable[Sequence[Any]]) -> None:
    """The replay runner's loop without its I/O: process, flush, give the writer a turn."""
    for index, bars in enumerate(slices):
        await engine.process_slice(bars)
        if engine.should_flush():
            await engine.flush()
        if writer.pending_batches and index % 32 == 0:
            await asyncio.sleep(0)

"""Shared by the benchmarks: a real engine and SQLite writer, driven as the replay runner does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


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


async def drive(engine: Any, writer: Any, slices: Iterable[Sequence[Any]]) -> None:
    """The replay runner's loop without its I/O: process, flush, give the writer a turn."""
    for index, bars in enumerate(slices):
        await engine.process_slice(bars)
        if engine.should_flush():
            await engine.flush()
        if writer.pending_batches and index % 32 == 0:
            await asyncio.sleep(0)

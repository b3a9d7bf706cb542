"""Batch-writer throughput (rows/s) into SQLite, or PostgreSQL with --url; not part of the tests.

Workload: the engine's per-bar mix, 1 bar + 1 decision + 1 reward + 1 equity row per bar, cut
into batches of about `--batch-rows` rows that each carry a run-state snapshot, submitted through
`BatchWriter` and timed from the first submit to the `flush` that returns after the last commit.
The rows are built before the clock starts (the engine builds them on its own hot path). Each run
writes into a fresh SQLite file (or fresh keys on PostgreSQL). `--baseline` also times the same
batches through plain SQLAlchemy Core `execute(insert, list_of_dicts)` in one transaction per
batch, the straightforward way the writer avoids.

    PYTHONPATH=. .venv/bin/python bench/bench_writer.py [--bars 100000] [--batch-rows 20000]
        [--runs 3] [--url postgresql+asyncpg://postgres@127.0.0.1/test] [--baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from trader.persistence import repository
from trader.persistence._statements import WRITE_ORDER
from trader.persistence.batch import RunStateSnapshot, WriteBatch
from trader.persistence.database import insert_for, make_engine
from trader.persistence.migrate import upgrade
from trader.persistence.models import Base
from trader.persistence.writer import BatchWriter

STEP_MS = 300_000
T0_MS = 1_700_000_000_000
ROWS_PER_BAR = 4


def build_batches(run_id: str, symbol: str, bars: int, batch_rows: int) -> list[WriteBatch]:
    """The workload: `bars` bars of the per-bar mix, `batch_rows // 4` bars per batch."""
    per_batch = max(1, batch_rows // ROWS_PER_BAR)
    batches = []
    for first in range(0, bars, per_batch):
        batch = WriteBatch()
        for index in range(first, min(first + per_batch, bars)):
            start_ms = T0_MS + index * STEP_MS
            decision_id = f"{run_id}:{symbol}:{start_ms}"
            price = 60_000.0 + index % 500
            batch.bars.append(
                {
                    "symbol": symbol,
                    "interval": "5",
                    "start_ms": start_ms,
                    "open": price,
                    "high": price + 25.0,
                    "low": price - 25.0,
                    "close": price + 5.0,
                    "volume": 12.5,
                    "turnover": 12.5 * price,
                    "source": "replay",
                }
            )
            batch.decisions.append(
                {
                    "id": decision_id,
                    "run_id": run_id,
                    "symbol": symbol,
                    "bar_start_ms": start_ms,
                    "action": "HOLD",
                    "size": 0.0,
                    "confidence": 0.42,
                    "stop_loss": None,
                    "take_profit": None,
                    "strategic": index % 16 == 0,
                    "act_steps": 3,
                    "decision_type": "procedural",
                    "model_version": "bench",
                    "latency_us": 180,
                }
            )
            batch.rewards.append(
                {
                    "decision_id": decision_id,
                    "run_id": run_id,
                    "symbol": symbol,
                    "bar_start_ms": start_ms,
                    "raw_reward": 0.5,
                    "raw_return": 0.0001,
                    "shaped_reward": 0.25,
                    "decision_type": "procedural",
                    "weight": 0.5,
                }
            )
            batch.equity.append(
                {
                    "run_id": run_id,
                    "ts_ms": start_ms + STEP_MS,
                    "equity": 10_000.0 + index % 97,
                    "cash": 10_000.0,
                    "unrealized_pnl": float(index % 97),
                    "drawdown": 0.0,
                    "peak_equity": 10_100.0,
                }
            )
        last_ms = batch.bars[-1]["start_ms"]
        batch.snapshot = RunStateSnapshot(run_id, last_ms, {"slices": index + 1})
        batches.append(batch)
    return batches


async def _create_run(engine: AsyncEngine, run_id: str, symbol: str) -> None:
    await repository.create_run(
        engine,
        run_id=run_id,
        mode="replay",
        config={},
        strategy="bench",
        interval="5",
        symbols=[symbol],
        started_at=datetime.now(UTC),
    )


async def time_writer(engine: AsyncEngine, batches: list[WriteBatch]) -> float:
    """Seconds from the first submit until everything is committed through `BatchWriter`."""
    async with BatchWriter(
        engine,
        queue_max_batches=8,
        retry_attempts=1,
        retry_backoff_s=0.1,
        enqueue_timeout_s=600.0,
    ) as writer:
        started = time.perf_counter()
        for batch in batches:
            await writer.submit(batch)
        await writer.flush()
        return time.perf_counter() - started


async def time_core_dicts(engine: AsyncEngine, batches: list[WriteBatch]) -> float:
    """Seconds for the same batches through Core `execute(insert, list_of_dicts)`."""
    tables = Base.metadata.tables
    dialect = engine.dialect.name
    started = time.perf_counter()
    for batch in batches:
        async with engine.begin() as conn:
            for name in WRITE_ORDER:
                rows = getattr(batch, name)
                if rows:
                    stmt = insert_for(dialect, tables[name]).on_conflict_do_nothing()
                    await conn.execute(stmt, rows)
            assert batch.snapshot is not None
            snapshot = batch.snapshot
            run_state = tables["run_state"]
            stmt = insert_for(dialect, run_state)
            upsert = stmt.on_conflict_do_update(
                index_elements=[run_state.c.run_id],
                set_={"last_slice_start_ms": stmt.excluded.last_slice_start_ms},
            )
            await conn.execute(
                upsert,
                {
                    "run_id": snapshot.run_id,
                    "last_slice_start_ms": snapshot.last_slice_start_ms,
                    "state": snapshot.state,
                    "updated_at": datetime.now(UTC),
                },
            )
    return time.perf_counter() - started


async def one_run(mode: str, url: str | None, run: int, bars: int, batch_rows: int) -> float:
    """Rows per second of one timed run on a fresh database (or fresh keys)."""
    with tempfile.TemporaryDirectory(prefix="bench_writer_") as tmp:
        engine = make_engine(url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        try:
            await upgrade(engine)
            run_id = f"bench-{mode}-{run}-{time.time_ns()}"
            symbol = f"B{time.time_ns() % 10**12}"
            await _create_run(engine, run_id, symbol)
            batches = build_batches(run_id, symbol, bars, batch_rows)
            timer = time_writer if mode == "writer" else time_core_dicts
            elapsed_s = await timer(engine, batches)
        finally:
            await engine.dispose()
    return bars * ROWS_PER_BAR / elapsed_s


async def main() -> None:
    """Parse arguments, run each mode `--runs` times, print median and best rows/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--batch-rows", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url", default=None, help="database URL (default: a temp SQLite file)")
    parser.add_argument("--baseline", action="store_true", help="also time Core dict inserts")
    args = parser.parse_args()
    modes = ["writer", "core_dicts"] if args.baseline else ["writer"]
    target = args.url or "SQLite file (WAL, synchronous=NORMAL)"
    rows = args.bars * ROWS_PER_BAR
    print(f"{rows:,} rows ({args.bars:,} bars x 4) in batches of ~{args.batch_rows:,} rows")
    print(f"into {target}")
    for mode in modes:
        rates = [
            await one_run(mode, args.url, run, args.bars, args.batch_rows)
            for run in range(args.runs)
        ]
        print(
            f"{mode:>10}: median {statistics.median(rates):>10,.0f} rows/s   "
            f"best {max(rates):>10,.0f} rows/s   ({args.runs} runs)"
        )


if __name__ == "__main__":
    asyncio.run(main())

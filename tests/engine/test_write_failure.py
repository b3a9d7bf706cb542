"""A database that keeps refusing writes stops the replay without losing or half-writing data."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from tests.support.candles import load_candles
from tests.support.engine_harness import ListSink, run_engine, slices
from tests.support.tables import dump_tables
from trader.config import Settings
from trader.errors import FatalError
from trader.persistence.batch import WriteBatch
from trader.pipeline import build_engine
from trader.replay.runner import ReplayOptions, replay

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "BTCUSDT_5m.csv.gz"
LOCK_AT_SLICE = 1_000


@pytest.fixture(autouse=True)
def _no_trader_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's TRADER_* variables must not redirect these runs."""
    for key in list(os.environ):
        if key.startswith("TRADER_"):
            monkeypatch.delenv(key)


def _settings(db: Path) -> Settings:
    return Settings(
        database={
            "url": f"sqlite+aiosqlite:///{db}",
            "busy_timeout_ms": 20,
            "write_retry_attempts": 2,
            "write_retry_backoff_s": 0.01,
            "flush_max_rows": 400,
        },
        strategy={"name": "random"},
    )


async def test_locked_database_stops_replay_then_rerun_completes_when_released(
    tmp_path: Path,
) -> None:
    """Writes that keep failing end the run with FatalError; after release, a rerun ends intact."""
    options = ReplayOptions(sources=(FIXTURE,), run_name="r")
    whole_db = tmp_path / "whole.db"
    await replay(_settings(whole_db), options)

    db = tmp_path / "locked.db"
    holder: list[sqlite3.Connection] = []

    def lock_mid_run(slices: int) -> None:
        if slices == LOCK_AT_SLICE and not holder:
            connection = sqlite3.connect(db, isolation_level=None)
            connection.execute("BEGIN EXCLUSIVE")  # no other writer until it ends
            holder.append(connection)

    try:
        with pytest.raises(FatalError, match="locked"):
            await replay(_settings(db), options, on_slice=lock_mid_run)
    finally:
        for connection in holder:
            connection.rollback()
            connection.close()
    assert holder, "the lock was never taken"

    with sqlite3.connect(db) as conn:
        (committed,) = conn.execute("SELECT last_slice_start_ms FROM run_state").fetchone()
        decisions = conn.execute("SELECT count(*), max(bar_start_ms) FROM decisions").fetchone()
    # A consistent prefix: every committed decision is covered by the committed snapshot.
    assert decisions[1] == committed
    assert 0 < decisions[0] < LOCK_AT_SLICE + 1

    outcome = await replay(_settings(db), options)
    assert outcome.resumed
    assert dump_tables(db) == dump_tables(whole_db)


class _StuckSink(ListSink):
    """A writer whose queue is full: `submit` waits until cancelled, then works again."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck = True

    async def submit(self, batch: WriteBatch) -> None:
        if self.stuck:
            await asyncio.Event().wait()
        await super().submit(batch)


async def test_flush_cancelled_while_writer_is_full_loses_no_row() -> None:
    """A stop that cancels a flush waiting on a full writer puts the rows back: the next
    flush writes every bar and decision before a snapshot that counts them."""
    btc = load_candles(FIXTURE, "BTCUSDT", "5")  # 1,500 bars: trades after the warm-up
    settings = Settings(strategy={"name": "random"})
    whole_engine, whole = await run_engine(settings, slices(btc))
    sink = _StuckSink()
    engine = build_engine(settings, run_id="t", sink=sink)
    for bar_slice in slices(btc)[:1_100]:
        await engine.process_slice(bar_slice)
    flush = asyncio.ensure_future(engine.flush())
    await asyncio.sleep(0.01)
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    sink.stuck = False
    await run_engine(settings, slices(btc)[1_100:], engine=engine, sink=sink)
    for table in ("bars", "decisions", "orders", "fills", "equity", "rewards"):
        assert sink.rows(table) == whole.rows(table), table
    # Positions are upserts written per flush: the last row per symbol is what the table holds.
    final = {row["symbol"]: row for row in sink.rows("positions")}
    assert final == {row["symbol"]: row for row in whole.rows("positions")}
    assert sink.batches[-1].snapshot is not None
    assert engine.state_dict() == whole_engine.state_dict()

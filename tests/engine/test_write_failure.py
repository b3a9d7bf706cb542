"""A database that keeps refusing writes stops the replay without losing or half-writing data."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tests.support.tables import dump_tables
from trader.config import Settings
from trader.errors import FatalError
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

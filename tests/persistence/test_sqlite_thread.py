"""The SQLite writer thread checkpoints the WAL itself, after commits, never inside them."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from trader.persistence import _sqlite_thread
from trader.persistence._sqlite_thread import SqliteThreadTransactor
from trader.persistence.database import make_engine


@pytest.mark.parametrize("on_loop_thread", [False, True], ids=["writer_thread", "loop_thread"])
async def test_wal_is_checkpointed_after_every_n_transactions_not_by_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_loop_thread: bool
) -> None:
    """Live (own thread) and replay (the loop's thread) alike: commits never checkpoint, the
    transactor does every N transactions, and each transaction runs on the thread it should."""
    monkeypatch.setattr(_sqlite_thread, "CHECKPOINT_EVERY_TRANSACTIONS", 3)
    path = tmp_path / "t.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    transactor = SqliteThreadTransactor(
        engine, busy_timeout_ms=1_000, on_loop_thread=on_loop_thread
    )
    threads: set[int] = set()
    try:
        await transactor.transact(lambda c: threads.add(threading.get_ident()))
        await transactor.transact(lambda c: c.exec_driver_sql("CREATE TABLE t (x TEXT)"))
        for _ in range(4):
            await transactor.transact(
                lambda c: c.exec_driver_sql("INSERT INTO t VALUES (?)", ("x" * 5_000,))
            )
        autocheckpoint = []
        await transactor.transact(
            lambda c: autocheckpoint.append(c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar())
        )
    finally:
        await transactor.close()
        await engine.dispose()
    assert autocheckpoint == [0]
    assert (threads == {threading.get_ident()}) is on_loop_thread
    # After the checkpoint at the third transaction, the database file holds the rows written
    # before it without reading the WAL.
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")  # folds the rest of the WAL in
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (4,)


async def test_a_failed_checkpoint_is_logged_and_the_writer_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint that raises is logged once, and later transactions still run."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    transactor = SqliteThreadTransactor(engine, busy_timeout_ms=1_000)
    logged: list[str] = []
    monkeypatch.setattr(_sqlite_thread.log, "exception", lambda event, **_: logged.append(event))
    try:
        await transactor.transact(lambda c: c.exec_driver_sql("CREATE TABLE t (x INT)"))
        real = transactor._connectable

        def broken() -> Any:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(transactor, "_connectable", broken)
        transactor._checkpoint()
        monkeypatch.setattr(transactor, "_connectable", real)
        await transactor.transact(lambda c: c.exec_driver_sql("INSERT INTO t VALUES (1)"))
    finally:
        await transactor.close()
        await engine.dispose()
    assert logged == ["sqlite_checkpoint_failed"]

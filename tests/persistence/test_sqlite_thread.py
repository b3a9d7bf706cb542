"""The SQLite writer thread checkpoints the WAL itself, after commits, never inside them."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from trader.persistence import _sqlite_thread
from trader.persistence._sqlite_thread import SqliteThreadTransactor
from trader.persistence.database import make_engine


def _rows_without_wal(path: Path, copy: Path) -> int:
    """Rows of `t` in the database file alone: a copy of it without its WAL, as a checkpoint
    left it (0 before the table itself reached the file)."""
    shutil.copyfile(path, copy)
    with closing(sqlite3.connect(copy)) as conn:
        if conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone() == (0,):
            return 0
        (count,) = conn.execute("SELECT count(*) FROM t").fetchone()
    copy.unlink()
    return int(count)


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
    in_file: list[int] = []
    try:
        await transactor.transact(lambda c: threads.add(threading.get_ident()))
        await transactor.transact(lambda c: c.exec_driver_sql("CREATE TABLE t (x TEXT)"))
        for _ in range(4):  # transactions 3 to 6; checkpoints follow the 3rd and the 6th
            await transactor.transact(
                lambda c: c.exec_driver_sql("INSERT INTO t VALUES (?)", ("x" * 5_000,))
            )
            in_file.append(_rows_without_wal(path, tmp_path / "copy.db"))
        autocheckpoint = []
        await transactor.transact(
            lambda c: autocheckpoint.append(c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar())
        )
        # On the writer thread the 6th transaction's checkpoint ran before this 7th one did.
        in_file.append(_rows_without_wal(path, tmp_path / "copy.db"))
    finally:
        await transactor.close()
        await engine.dispose()
    assert autocheckpoint == [0]
    assert (threads == {threading.get_ident()}) is on_loop_thread
    # Copies taken after transactions 3, 4, 5, 6 and 7: the file holds the first row from the
    # 3rd transaction's checkpoint on, no more until the 6th's, then all four. On the writer
    # thread a checkpoint runs after its transaction returned, so the copies right after the
    # 3rd and the 6th may precede it.
    if on_loop_thread:
        assert in_file == [1, 1, 1, 4, 4]
    else:
        assert in_file[0] in (0, 1)
        assert in_file[1:3] == [1, 1]
        assert in_file[3] in (1, 4)
        assert in_file[4] == 4


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

"""Whole SQLite write transactions through one synchronous connection, on one thread.

Owns the synchronous SQLite engine the batching writer uses for file databases, the thread its
transactions run on, and WAL checkpoints. Why synchronous: through aiosqlite every statement is
a round trip between the event loop and aiosqlite's thread, and each return needs the GIL back
from an engine loop that is busy computing; under a fast replay that serialised the writer
behind the engine. Here a batch's whole transaction is one call.

Live, that call runs on a dedicated writer thread, so the loop serves the websocket while a
slice commits (SQLite's own work releases the GIL). A replay runs it on the event loop's thread
instead (`on_loop_thread`): nothing else needs the loop, and on the project's 2-vCPU VM SQLite
busy on the second vCPU slowed the engine on the first more than the overlap saved. It must not
decide what to write or retry: the writer does.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import structlog
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from trader.persistence.database import make_sync_sqlite_engine

log = structlog.get_logger()

#: The writer's connection does not checkpoint inside commits (an fsync of the database file
#: in the middle of a live slice's commit is the slowest thing that can happen to it); the
#: thread does it after every this many transactions instead.
CHECKPOINT_EVERY_TRANSACTIONS = 100

# Money from the portfolio may arrive as Decimal; SQLite stores it as a double (the column type),
# and letting sqlite3 adapt it spares the writer a Python converter call per cell.
sqlite3.register_adapter(Decimal, float)


async def busy_timeout_ms_of(engine: AsyncEngine) -> int:
    """The busy timeout `make_engine` configured, read back from one of its connections."""
    async with engine.connect() as connection:
        value = (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar()
    return int(value or 0)


class SqliteThreadTransactor:
    """Runs `fn(connection)` inside one transaction, on the writer thread or the loop's."""

    def __init__(
        self, engine: AsyncEngine, *, busy_timeout_ms: int, on_loop_thread: bool = False
    ) -> None:
        """Prepare (nothing connects before the first transaction).

        Args:
            engine: the database (a SQLite file); its URL is reused for a synchronous engine.
            busy_timeout_ms: how long a statement waits for another process's lock.
            on_loop_thread: run each transaction on the calling (event loop) thread instead.
                For a replay, which has nothing else to do while a batch commits: on the
                project's 2-vCPU VM the writer thread's SQLite work slowed the engine's loop
                more than it overlapped with it (ema_cross, full series: 65.5 us per bar with
                the thread, 54.5 without; medians of 18 interleaved runs each).
        """
        self._url = engine.url
        self._busy_timeout_ms = busy_timeout_ms
        # One thread (or none), so the sqlite3 connection never crosses threads.
        self._executor = (
            None
            if on_loop_thread
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix="persistence.writer")
        )
        self._engine: Engine | None = None
        self._transactions = 0

    async def transact(self, fn: Callable[[Connection], None]) -> None:
        """Run `fn` in a transaction that commits when it returns and rolls back if it raises."""
        executor = self._executor
        if executor is None:
            self._transact(fn)
        else:
            await asyncio.get_running_loop().run_in_executor(executor, self._transact, fn)
        self._transactions += 1
        if self._transactions % CHECKPOINT_EVERY_TRANSACTIONS == 0:
            if executor is None:
                self._checkpoint()
            else:
                # Queued behind nothing and awaited by no one: the thread checkpoints right
                # after this commit was reported, while the engine waits for its next bar.
                executor.submit(self._checkpoint)

    def _transact(self, fn: Callable[[Connection], None]) -> None:
        with self._connectable().begin() as connection:
            fn(connection)

    def _connectable(self) -> Engine:
        if self._engine is None:
            self._engine = make_sync_sqlite_engine(
                self._url, busy_timeout_ms=self._busy_timeout_ms, auto_checkpoint=False
            )
        return self._engine

    def _checkpoint(self) -> None:
        """Copy the WAL back into the database (PASSIVE: never waits for readers)."""
        try:
            with self._connectable().connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:
            # A failed checkpoint loses nothing (the WAL keeps every commit) and the next
            # one retries; the thread must not die of it.
            log.exception("sqlite_checkpoint_failed")

    async def close(self) -> None:
        """Dispose of the engine on its thread (after any transaction still running), then stop."""
        executor = self._executor
        if executor is None:
            self._dispose()
            return
        await asyncio.get_running_loop().run_in_executor(executor, self._dispose)
        executor.shutdown(wait=False)

    def _dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

"""The single batching database writer.

Owns the one task that writes (`"persistence.writer"`), its bounded queue of `WriteBatch`es, and
how a batch becomes one transaction: every table's rows in foreign-key order, then the run-state
snapshot, committed together or not at all. It must not decide what goes into a batch or when
to cut one (the engine does), and it must not drop a batch: the queue applies backpressure, and
a write that cannot succeed stops the writer for good.

Speed: rows are written with pre-compiled `INSERT .. ON CONFLICT` statements (compiled once per
table and column set by the engine's own dialect) and executed with `exec_driver_sql` over
tuples, so the driver's `executemany` does the per-row work. Building the tuples column by column
with `map` keeps Python's share small; bench/bench_writer.py measures the result.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self

import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trader.errors import FatalError
from trader.persistence._sqlite_thread import SqliteThreadTransactor, busy_timeout_ms_of
from trader.persistence._statements import Statements, Work, compile_batch, write_sync
from trader.persistence.batch import WriteBatch
from trader.persistence.database import is_file_sqlite

log = structlog.get_logger(__name__)

#: SQLSTATE classes worth retrying: connection trouble, serialization/deadlock, resources,
#: operator intervention (a server restart).
_TRANSIENT_SQLSTATES: Final = ("08", "40001", "40P01", "53", "57P")
_MAX_BACKOFF_S: Final = 10.0


def is_transient(exc: BaseException) -> bool:
    """True for failures a retry may cure: a locked database, a lost or refused connection."""
    if isinstance(exc, sa_exc.OperationalError | sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    sqlstate = getattr(getattr(exc, "orig", exc), "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_TRANSIENT_SQLSTATES):
        return True
    # Raised before a DBAPI connection exists (connection refused, reset, timed out).
    return isinstance(exc, OSError)


class BatchWriter:
    """Writes `WriteBatch`es, one transaction each, from a single named task.

    Queue policy (bounded, `queue_max_batches`): never drop. When the queue is full the producer
    waits; a wait longer than `enqueue_timeout_s` is fatal (`FatalError`, the writer is marked
    failed) because a database that far behind means the engine must halt rather than buffer
    without bound.

    Failures: transient errors (locked database, lost or refused connection) are retried with
    exponential backoff, `retry_attempts` attempts in all. Retrying a whole batch is safe even
    when a lost connection leaves its COMMIT's outcome unknown, because every statement is
    idempotent: inserts skip rows whose natural key exists, upserts set the same values again.
    After the last attempt, or at once for any other error, the writer marks itself failed,
    calls `on_fatal`, stops writing (later batches must not commit past a missing one), and
    every later `submit`/`flush` raises `FatalError`. The failed batch is kept out of the
    database as a whole, never half-written and never silently skipped: its run-state snapshot
    was in the same rolled-back transaction, so the database still ends at the last committed
    batch and its snapshot, and a restart resumes from exactly there. Nothing is lost; the
    engine halts and the process exits non-zero.

    Use as an async context manager; `__aexit__` drains the queue (bounded by `drain_timeout_s`)
    and then stops the task. The writer can be reused after exit but not re-entered.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        queue_max_batches: int,
        retry_attempts: int,
        retry_backoff_s: float,
        enqueue_timeout_s: float,
        drain_timeout_s: float = 30.0,
        on_fatal: Callable[[BaseException], None] | None = None,
        sqlite_on_loop_thread: bool = False,
    ) -> None:
        """Configure the writer; nothing starts before `async with`.

        Args:
            engine: the database; the caller owns and disposes it.
            queue_max_batches: batches that may wait for the writer before `submit` blocks.
            retry_attempts: attempts per batch (1 = no retry) for transient failures.
            retry_backoff_s: wait before the first retry; doubles per retry, capped.
            enqueue_timeout_s: longest `submit` waits for queue space before it is fatal.
            drain_timeout_s: longest `__aexit__` waits for queued batches to commit.
            on_fatal: called once, with the cause, when the writer fails.
            sqlite_on_loop_thread: a SQLite file commits on the event loop's thread rather
                than on the writer's own thread (replay; see `SqliteThreadTransactor`).
        """
        if queue_max_batches < 1 or retry_attempts < 1:
            raise ValueError("queue_max_batches and retry_attempts must be at least 1")
        self._engine = engine
        self._queue_max_batches = queue_max_batches
        self._retry_attempts = retry_attempts
        self._retry_backoff_s = retry_backoff_s
        self._enqueue_timeout_s = enqueue_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._on_fatal = on_fatal
        self._statements = Statements(engine.dialect)
        # SQLite only: asyncpg numbers its placeholders and PostgreSQL refuses an upsert that
        # touches one row twice in a statement, so it keeps executemany.
        self._multi_row = engine.dialect.name == "sqlite"
        self._snapshot_stmt = self._statements.snapshot()
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._queue: asyncio.Queue[WriteBatch] | None = None
        self._task: asyncio.Task[None] | None = None
        self._submitted = 0
        self._committed = 0
        self._committed_rows = 0
        self._failed: BaseException | None = None
        # File SQLite: whole transactions through one synchronous connection, on the writer's
        # own thread live and on the loop's thread in a replay (see _sqlite_thread).
        self._thread: SqliteThreadTransactor | None = None
        self._sqlite_on_loop_thread = sqlite_on_loop_thread
        self._failed_attempts = 0

    @property
    def committed_batches(self) -> int:
        """Batches committed since the writer was created."""
        return self._committed

    @property
    def committed_rows(self) -> int:
        """Table rows (snapshots excluded) in the committed batches."""
        return self._committed_rows

    @property
    def failed_attempts(self) -> int:
        """Transaction attempts that raised (each retry counts), since creation."""
        return self._failed_attempts

    @property
    def pending_batches(self) -> int:
        """Batches submitted but not yet committed."""
        return self._submitted - self._committed

    @property
    def failed(self) -> BaseException | None:
        """The cause of the writer's failure, or None while it is healthy."""
        return self._failed

    async def __aenter__(self) -> Self:
        if self._lock.locked():
            raise RuntimeError("BatchWriter is already entered; it cannot be re-entered")
        await self._lock.acquire()
        if self._failed is not None:
            self._lock.release()
            raise FatalError("the database writer has failed; build a new one") from self._failed
        self._queue = asyncio.Queue(maxsize=self._queue_max_batches)
        if is_file_sqlite(self._engine):
            self._thread = SqliteThreadTransactor(
                self._engine,
                busy_timeout_ms=await busy_timeout_ms_of(self._engine),
                on_loop_thread=self._sqlite_on_loop_thread,
            )
        self._task = asyncio.create_task(self._write_loop(self._queue), name="persistence.writer")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._drain()
        except FatalError:
            if exc_type is None:
                raise
        finally:
            try:
                await self._stop_task()
            finally:
                thread, self._thread = self._thread, None
                try:
                    if thread is not None:
                        await thread.close()
                finally:
                    self._lock.release()
        if exc_type is None and self._failed is not None:
            # The engine may have stopped without submitting again; never exit as if all is well.
            raise FatalError("the database writer failed; see the logged cause") from self._failed

    async def submit(self, batch: WriteBatch) -> None:
        """Queue a batch for its own transaction; waits while the queue is full.

        Raises:
            FatalError: the writer has failed, or the queue stayed full past `enqueue_timeout_s`.
            RuntimeError: called outside `async with`.
        """
        self._raise_if_failed()
        queue = self._queue
        if queue is None or self._task is None:
            raise RuntimeError("BatchWriter.submit called outside `async with`")
        if batch.is_empty():
            return
        try:
            async with asyncio.timeout(self._enqueue_timeout_s), self._changed:
                await self._changed.wait_for(lambda: not queue.full() or self._failed is not None)
                self._raise_if_failed()
                queue.put_nowait(batch)
                self._submitted += 1
        except TimeoutError as exc:
            error = FatalError(
                f"the database writer fell behind: its queue of {self._queue_max_batches} "
                f"batches stayed full for {self._enqueue_timeout_s} s"
            )
            self._fail(error)
            raise error from exc

    async def flush(self) -> None:
        """Return once every batch submitted before this call is committed.

        Raises:
            FatalError: the writer has failed (before or while waiting).
        """
        target = self._submitted
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._committed >= target or self._failed is not None
            )
        self._raise_if_failed()

    # -- the task ---------------------------------------------------------------------------

    async def _write_loop(self, queue: asyncio.Queue[WriteBatch]) -> None:
        while True:
            batch = await queue.get()
            async with self._changed:
                self._changed.notify_all()  # room in the queue for a waiting producer
            try:
                await self._write_with_retry(batch)
            except Exception as exc:
                # Task boundary: the cause is logged and the writer changes state to failed.
                log.exception("database_write_failed", rows=batch.row_count())
                self._fail(exc)
                async with self._changed:
                    self._changed.notify_all()
                return
            self._committed += 1
            self._committed_rows += batch.row_count()
            async with self._changed:
                self._changed.notify_all()

    async def _write_with_retry(self, batch: WriteBatch) -> None:
        work: Work = compile_batch(self._statements, batch, multi_row=self._multi_row)
        for attempt in range(1, self._retry_attempts + 1):
            try:
                if self._thread is not None:
                    await self._thread.transact(
                        functools.partial(write_sync, work=work, snapshot_stmt=self._snapshot_stmt)
                    )
                else:
                    async with self._engine.begin() as conn:
                        await self._write(conn, work)
                return
            except (sa_exc.SQLAlchemyError, OSError) as exc:
                self._failed_attempts += 1
                if attempt == self._retry_attempts or not is_transient(exc):
                    raise
                # One writer, so no herd to spread out: plain capped doubling, no jitter.
                delay_s = min(self._retry_backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
                log.warning(
                    "database_write_retried", attempt=attempt, delay_s=delay_s, error=str(exc)
                )
                await asyncio.sleep(delay_s)

    async def _write(self, conn: AsyncConnection, work: Work) -> None:
        for sql, params in work.inserts:
            await conn.exec_driver_sql(sql, params)
        if work.snapshot is not None:
            await conn.execute(self._snapshot_stmt, work.snapshot)

    # -- state ------------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self._failed is not None:
            return
        self._failed = exc
        if self._on_fatal is not None:
            self._on_fatal(exc)

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise FatalError(f"the database writer failed: {self._failed}") from self._failed

    async def _drain(self) -> None:
        if self._task is None or self._task.done():
            return
        try:
            async with asyncio.timeout(self._drain_timeout_s), self._changed:
                await self._changed.wait_for(
                    lambda: self._committed >= self._submitted or self._failed is not None
                )
        except TimeoutError as exc:
            error = FatalError(
                f"the database writer did not drain within {self._drain_timeout_s} s; "
                f"{self.pending_batches} batches are not committed (a restart resumes)"
            )
            log.error("database_writer_drain_timed_out", pending_batches=self.pending_batches)
            self._fail(error)
            raise error from exc

    async def _stop_task(self) -> None:
        task, self._task, self._queue = self._task, None, None
        if task is None:
            return
        task.cancel()
        # asyncio.wait does not raise the task's cancellation into us; our own cancellation
        # still propagates from here.
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            raise FatalError("the database writer task crashed") from task.exception()

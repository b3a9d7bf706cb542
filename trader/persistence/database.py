"""Engine construction and the few dialect differences the rest of persistence needs.

Owns `make_engine` (one async engine per process, with SQLite tuned for a single batching writer
and concurrent readers: WAL, `synchronous=NORMAL`, enforced foreign keys, a busy timeout, and
real `BEGIN` transactions) and the choice between the SQLite and PostgreSQL `INSERT` constructs
that provide `ON CONFLICT`. It must not create tables (Alembic does), hold engines in globals, or
run queries of its own.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

#: How long a SQLite connection waits for another writer's lock before "database is locked".
DEFAULT_BUSY_TIMEOUT_MS: Final = 5_000

SQLITE: Final = "sqlite"
POSTGRESQL: Final = "postgresql"


def make_engine(url: str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> AsyncEngine:
    """Build the async engine for a database URL.

    `sqlite+aiosqlite:///trader.db` is relative to the working directory (four slashes make an
    absolute path); PostgreSQL is reached with `postgresql+asyncpg://user@host/db`.

    Args:
        url: an SQLAlchemy async URL (`sqlite+aiosqlite` or `postgresql+asyncpg`).
        busy_timeout_ms: SQLite only; how long a statement waits on another connection's lock.

    Returns:
        The engine; the caller owns it and must `await engine.dispose()`.
    """
    engine = create_async_engine(url)
    if engine.dialect.name == SQLITE:
        _tune_sqlite(engine.sync_engine, busy_timeout_ms)
    return engine


def make_sync_sqlite_engine(
    url: URL, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, auto_checkpoint: bool = True
) -> Engine:
    """A synchronous engine on the same SQLite file, tuned like `make_engine`'s.

    The batching writer runs whole transactions through it on one thread, its own or the event
    loop's (see `trader.persistence._sqlite_thread`); the caller owns it and must dispose of it
    on that thread.
    `auto_checkpoint=False` leaves WAL checkpoints to the caller.
    """
    engine = create_engine(url.set(drivername="sqlite"))
    _tune_sqlite(engine, busy_timeout_ms, auto_checkpoint=auto_checkpoint)
    return engine


def is_file_sqlite(engine: AsyncEngine) -> bool:
    """True for a SQLite database in a file (not `:memory:`, which one connection owns)."""
    return is_file_sqlite_url(engine.url)


def is_file_sqlite_url(url: URL) -> bool:
    """`is_file_sqlite` for a parsed URL, before any engine exists."""
    database = url.database
    return url.get_backend_name() == SQLITE and bool(database) and database != ":memory:"


def _tune_sqlite(engine: Engine, busy_timeout_ms: int, *, auto_checkpoint: bool = True) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take BEGIN away from the sqlite3 module, which would only start a transaction at the
        # first DML statement and leave DDL and reads outside it; `_on_begin` issues it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # WAL lets readers (status, report) run while the writer commits; NORMAL is durable
            # across a process crash in WAL mode, which is the failure resume is built for.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            if not auto_checkpoint:
                cursor.execute("PRAGMA wal_autocheckpoint=0")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")


def dialect_name(bind: AsyncEngine | AsyncConnection) -> str:
    """The dialect's name: `"sqlite"` or `"postgresql"`."""
    return bind.dialect.name


def insert_for(dialect: str, table: Table) -> sqlite.Insert | postgresql.Insert:
    """An `INSERT` for `table` that supports `on_conflict_do_nothing` / `on_conflict_do_update`.

    Raises:
        ValueError: the dialect is neither SQLite nor PostgreSQL.
    """
    if dialect == SQLITE:
        return sqlite.insert(table)
    if dialect == POSTGRESQL:
        return postgresql.insert(table)
    raise ValueError(f"unsupported database dialect {dialect!r}; use SQLite or PostgreSQL")

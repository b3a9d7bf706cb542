"""Schema migrations at run time: upgrade, inspect, and the start-up schema gate.

Owns driving Alembic from async code without an ini file: the scripts are found through the
installed `migrations` package, and each command runs on one of our own connections inside one
transaction (`await conn.run_sync(...)`, `migrations/env.py` picks the connection up). It must
not declare tables (`models` does) or call `create_all`; the schema only ever comes from the
Alembic revisions.

Concurrency: on PostgreSQL a transaction-scoped advisory lock makes daemons that start together
migrate one after another. Alembic's `context` is process-global, so one process must not run
two migrations at once (the daemon and the CLI each run at most one).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import migrations
from trader.errors import FatalError
from trader.persistence.database import POSTGRESQL

_VERSION_TABLE = "alembic_version"
#: Arbitrary constant naming the advisory lock that serialises migrations on PostgreSQL.
_MIGRATION_LOCK_KEY = 0x7472_6164_6572  # "trader"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the shipped scripts, optionally bound to a connection."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this code ships.

    Raises:
        FatalError: the scripts have several heads (a merge revision is missing).
    """
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise FatalError("the migration scripts have no head revision")
    return head


async def upgrade(engine: AsyncEngine) -> str:
    """Migrate the database to the head revision in one transaction.

    Returns:
        The head revision the database is now at.
    """
    async with engine.begin() as conn:
        await _serialise(conn)
        await conn.run_sync(_upgrade_sync)
    return head_revision()


async def current(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current_sync)


async def ensure_schema(engine: AsyncEngine) -> None:
    """Make sure the schema matches this code before anything reads or writes.

    An empty database is migrated to head (first start); a database at head passes. Anything
    else is refused rather than migrated behind the operator's back.

    Raises:
        FatalError: the database is behind head, at a revision this code does not know, or
            holds tables without a recorded revision; the message says what to run.
    """
    async with engine.begin() as conn:
        await _serialise(conn)
        revision, tables = await conn.run_sync(_state_sync)
        head = head_revision()
        if revision == head:
            return
        if revision is None and not tables:
            await conn.run_sync(_upgrade_sync)
            return
    raise _refusal(revision, head)


async def _serialise(conn: AsyncConnection) -> None:
    """On PostgreSQL, daemons starting together on one empty database migrate one at a time."""
    if conn.dialect.name == POSTGRESQL:
        # Transaction-scoped: released by the commit or rollback that ends the migration.
        await conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))


def _refusal(revision: str | None, head: str) -> FatalError:
    scripts = ScriptDirectory.from_config(alembic_config())
    known = {script.revision for script in scripts.walk_revisions()}
    if revision is not None and revision not in known:
        return FatalError(
            f"database schema is at revision {revision}, which this version of trader does not "
            f"know (its head is {head}); upgrade trader or point it at another database"
        )
    at = revision if revision is not None else "no recorded revision"
    return FatalError(
        f"database schema is behind this version of trader ({at}, head is {head}); "
        "back up the database and run `trader db upgrade`"
    )


def _upgrade_sync(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _current_sync(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _state_sync(connection: Connection) -> tuple[str | None, list[str]]:
    tables = [name for name in inspect(connection).get_table_names() if name != _VERSION_TABLE]
    return _current_sync(connection), tables

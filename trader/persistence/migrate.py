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

from dataclasses import dataclass
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
from trader.persistence.models import Base

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


@dataclass(frozen=True, slots=True)
class SchemaState:
    """What a database holds: the revision Alembic recorded, and its other tables."""

    revision: str | None
    tables: frozenset[str]

    @property
    def unversioned(self) -> bool:
        """Tables but no recorded revision: made by something other than these migrations."""
        return self.revision is None and bool(self.tables)

    @property
    def has_trader_tables(self) -> bool:
        """Every table of this code's models is there (whatever their revision)."""
        return frozenset(Base.metadata.tables) <= self.tables


async def upgrade(engine: AsyncEngine) -> str:
    """Migrate the database to the head revision in one transaction.

    Returns:
        The head revision the database is now at.

    Raises:
        FatalError: the database holds tables without a recorded revision (Alembic would try
            to create them again), or is at a revision this code does not know.
    """
    async with engine.begin() as conn:
        await _serialise(conn)
        state = await conn.run_sync(_state_sync)
        head = head_revision()
        if state.unversioned or (state.revision is not None and state.revision not in _known()):
            raise _refusal(state, head)
        await conn.run_sync(_upgrade_sync)
    return head


async def current(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    return (await schema_state(engine)).revision


async def schema_state(engine: AsyncEngine) -> SchemaState:
    """The database's recorded revision and its tables, read without changing anything."""
    async with engine.connect() as conn:
        return await conn.run_sync(_state_sync)


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
        state = await conn.run_sync(_state_sync)
        head = head_revision()
        if state.revision == head:
            return
        if state.revision is None and not state.tables:
            await conn.run_sync(_upgrade_sync)
            return
    raise _refusal(state, head)


async def _serialise(conn: AsyncConnection) -> None:
    """On PostgreSQL, daemons starting together on one empty database migrate one at a time."""
    if conn.dialect.name == POSTGRESQL:
        # Transaction-scoped: released by the commit or rollback that ends the migration.
        await conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))


def _known() -> set[str]:
    """Every revision the shipped scripts define."""
    scripts = ScriptDirectory.from_config(alembic_config())
    return {script.revision for script in scripts.walk_revisions()}


def _refusal(state: SchemaState, head: str) -> FatalError:
    revision = state.revision
    if revision is not None and revision not in _known():
        return FatalError(
            f"database schema is at revision {revision}, which this version of trader does not "
            f"know (its head is {head}); upgrade trader or point it at another database"
        )
    if state.unversioned:
        # `trader db upgrade` would create these tables again and fail; stamping a revision
        # on them unasked could hide a schema that matches none.
        if state.has_trader_tables:
            return FatalError(
                "database holds the trader tables but no recorded schema revision, so trader "
                "cannot tell which migrations it needs and will not guess; restore its "
                "alembic_version table or point database.url at another database"
            )
        return FatalError(
            f"database holds tables ({_names(state.tables)}) but no recorded schema revision, "
            "and they are not the trader schema; point database.url at another database"
        )
    return FatalError(
        f"database schema is behind this version of trader ({revision}, head is {head}); "
        "back up the database and run `trader db upgrade`"
    )


def _names(tables: frozenset[str], shown: int = 5) -> str:
    names = sorted(tables)
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _upgrade_sync(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _current_sync(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _state_sync(connection: Connection) -> SchemaState:
    tables = frozenset(inspect(connection).get_table_names()) - {_VERSION_TABLE}
    return SchemaState(revision=_current_sync(connection), tables=tables)

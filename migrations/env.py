"""Alembic environment for the trader schema.

Owns how Alembic reaches a database: either on a connection handed in by the application
(`config.attributes["connection"]`, used by `trader.persistence.migrate`, whose async code calls
`await conn.run_sync(...)`), or, for the plain `alembic` command line used while developing, on
an engine built from `sqlalchemy.url` in the ini file (else the trader configuration). It must not
hold schema definitions (those live in `trader.persistence.models`) or call `create_all`.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from trader.config import load_settings
from trader.persistence.database import make_engine
from trader.persistence.models import Base

target_metadata = Base.metadata


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode makes future revisions portable.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _cli_url() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    if url:
        return url
    return load_settings().database.url


async def _run_cli() -> None:
    engine = make_engine(_cli_url())
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run_on)
    finally:
        await engine.dispose()


def _run_offline() -> None:
    context.configure(
        url=_cli_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if _connection is not None:
    _run_on(_connection)
elif context.is_offline_mode():
    _run_offline()
else:
    # The developer's `alembic` command line: no event loop is running here.
    asyncio.run(_run_cli())

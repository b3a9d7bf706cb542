"""Alembic revisions against real SQLite and PostgreSQL, and the start-up schema gate."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.runs import add_run
from trader.errors import FatalError
from trader.persistence import repository
from trader.persistence.database import make_engine
from trader.persistence.migrate import (
    alembic_config,
    current,
    ensure_schema,
    head_revision,
    upgrade,
)
from trader.persistence.models import Base


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the fresh, unmigrated database."""
    engine = make_engine(db_url)
    yield engine
    await engine.dispose()


def _schema_diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_upgrade_matches_the_models_when_database_is_fresh(engine: AsyncEngine) -> None:
    """`upgrade head` on an empty database yields exactly the schema the models declare."""
    revision = await upgrade(engine)
    async with engine.connect() as conn:
        diff = await conn.run_sync(_schema_diff)
    assert revision == head_revision()
    assert diff == []


async def test_current_is_none_when_database_is_empty(engine: AsyncEngine) -> None:
    """A database that was never migrated reports no revision."""
    assert await current(engine) is None


async def test_downgrade_removes_every_table_when_run_to_base(engine: AsyncEngine) -> None:
    """The initial revision's downgrade undoes its upgrade."""
    await upgrade(engine)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "base"))
    async with engine.connect() as conn:
        assert await conn.run_sync(_tables) <= {"alembic_version"}


async def _risk_events_at_0002(engine: AsyncEngine, details: list[str]) -> None:
    """Migrate to 0002 and store a run with one risk event per detail at one instant."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0002"))
    await add_run(engine, "r", mode="replay")
    async with engine.begin() as conn:
        for kind, detail in details:
            await conn.execute(
                text(
                    "INSERT INTO risk_events (run_id, ts_ms, kind, symbol, detail) "
                    "VALUES ('r', 1000, :kind, '', :detail)"
                ),
                {"kind": kind, "detail": detail},
            )


async def _risk_event_rows(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT kind, detail FROM risk_events ORDER BY id"))
        return [tuple(row) for row in rows]


async def test_upgrade_keys_risk_events_by_detail_when_database_has_rows_at_0002(
    engine: AsyncEngine,
) -> None:
    """0003 keeps existing risk events, fills in their digests, matches the models, and then
    stores an event that differs from a stored one only in its detail (once, however often)."""
    await _risk_events_at_0002(engine, [("halted", "kill: first"), ("active", "resume: oops")])
    await upgrade(engine)
    async with engine.connect() as conn:
        digests = await conn.execute(text("SELECT detail, detail_sha256 FROM risk_events"))
        stored = {detail: digest for detail, digest in digests}
        diff = await conn.run_sync(_schema_diff)
    for _ in range(2):
        await repository.insert_risk_event(
            engine, run_id="r", ts_ms=1000, kind="halted", symbol="", detail="kill: second"
        )
    assert diff == []
    assert stored == {
        detail: hashlib.sha256(detail.encode()).hexdigest()
        for detail in ("kill: first", "resume: oops")
    }
    assert await _risk_event_rows(engine) == [
        ("halted", "kill: first"),
        ("active", "resume: oops"),
        ("halted", "kill: second"),
    ]


async def test_downgrade_keeps_the_first_of_risk_events_the_old_key_cannot_tell_apart(
    engine: AsyncEngine,
) -> None:
    """Going back to 0002 keeps one row per (run, instant, kind, symbol): the earliest."""
    await _risk_events_at_0002(engine, [("halted", "kill: first")])
    await upgrade(engine)
    for kind, detail in (("halted", "kill: second"), ("active", "resume: oops")):
        await repository.insert_risk_event(
            engine, run_id="r", ts_ms=1000, kind=kind, symbol="", detail=detail
        )
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0002"))
    assert await _risk_event_rows(engine) == [("halted", "kill: first"), ("active", "resume: oops")]


async def test_ensure_schema_migrates_to_head_when_database_is_empty(engine: AsyncEngine) -> None:
    """First start on an empty database creates the schema."""
    await ensure_schema(engine)
    async with engine.connect() as conn:
        tables = await conn.run_sync(_tables)
    assert await current(engine) == head_revision()
    assert set(Base.metadata.tables) <= tables


async def test_ensure_schema_passes_when_database_is_at_head(engine: AsyncEngine) -> None:
    """A database already at head is accepted as is, any number of times."""
    await upgrade(engine)
    await ensure_schema(engine)
    await ensure_schema(engine)
    assert await current(engine) == head_revision()


async def test_ensure_schema_refuses_when_database_is_behind_head(engine: AsyncEngine) -> None:
    """A database at an older revision makes start-up stop and name the fix."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0002"))
    with pytest.raises(FatalError, match="trader db upgrade"):
        await ensure_schema(engine)


async def test_schema_is_refused_not_stamped_when_tables_have_no_recorded_revision(
    engine: AsyncEngine,
) -> None:
    """The trader tables without a recorded revision are refused by start-up and by `upgrade`
    alike (which would otherwise create them again), and no revision is stamped on them."""
    await upgrade(engine)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.stamp(alembic_config(c), "base"))
    for attempt in (ensure_schema, upgrade):
        with pytest.raises(FatalError, match="the trader tables but no recorded schema revision"):
            await attempt(engine)
    assert await current(engine) is None


async def test_upgrade_is_refused_when_revision_is_unknown(engine: AsyncEngine) -> None:
    """`upgrade` on a database migrated by a newer trader names the revision (no Alembic error)."""
    await upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    with pytest.raises(FatalError, match="revision ffffffffffff, which this version"):
        await upgrade(engine)


async def test_ensure_schema_refuses_when_revision_is_unknown(engine: AsyncEngine) -> None:
    """A database migrated by a newer trader is refused instead of being written to."""
    await upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    with pytest.raises(FatalError, match="does not know"):
        await ensure_schema(engine)


@pytest.mark.postgres
async def test_ensure_schema_migrates_once_when_daemons_start_together(
    postgres_url: str,
) -> None:
    """Daemons starting at once on one empty PostgreSQL database migrate it exactly once."""
    engines = [make_engine(postgres_url) for _ in range(3)]
    try:
        await asyncio.gather(*(ensure_schema(engine) for engine in engines))
        assert await current(engines[0]) == head_revision()
    finally:
        for engine in engines:
            await engine.dispose()


def test_alembic_command_line_upgrades_when_config_names_a_url(tmp_path: Path) -> None:
    """The developer path (`alembic upgrade head` with `sqlalchemy.url`) builds its own engine."""
    path = tmp_path / "cli.db"
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", f"sqlite+aiosqlite:///{path}")
    command.upgrade(config, "head")
    command.check(config)
    assert path.stat().st_size > 0

"""Engine construction: SQLite tuning, foreign keys, relative paths and dialect helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from trader.persistence.database import dialect_name, insert_for, make_engine
from trader.persistence.migrate import upgrade
from trader.persistence.models import Base


async def test_make_engine_tunes_sqlite_when_url_is_sqlite(sqlite_url: str) -> None:
    """Each SQLite connection gets WAL, NORMAL sync, foreign keys and the busy timeout."""
    engine = make_engine(sqlite_url, busy_timeout_ms=1234)
    try:
        async with engine.connect() as conn:
            pragmas = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 1,
        "foreign_keys": 1,
        "busy_timeout": 1234,
    }


async def test_make_engine_enforces_foreign_keys_when_parent_row_is_missing(db_url: str) -> None:
    """A row referencing a missing run is rejected on both dialects."""
    engine = make_engine(db_url)
    try:
        await upgrade(engine)
        row = {"run_id": "nope", "ts_ms": 1, "equity": 1.0, "cash": 1.0}
        row |= {"unrealized_pnl": 0.0, "drawdown": 0.0, "peak_equity": 1.0}
        with pytest.raises(sa_exc.IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(Base.metadata.tables["equity"].insert(), row)
    finally:
        await engine.dispose()


async def test_sqlite_rolls_back_ddl_when_transaction_fails(sqlite_url: str) -> None:
    """SQLite transactions start at BEGIN, so DDL inside a failed one is undone too."""
    engine = make_engine(sqlite_url)

    async def create_then_fail() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE scratch (x INTEGER)"))
            await conn.execute(text("SELECT * FROM missing_table"))

    try:
        with pytest.raises(sa_exc.OperationalError):
            await create_then_fail()
        async with engine.connect() as conn:
            names = (await conn.exec_driver_sql("SELECT name FROM sqlite_master")).all()
    finally:
        await engine.dispose()
    assert names == []


async def test_make_engine_resolves_path_in_working_directory_when_url_is_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default `sqlite+aiosqlite:///trader.db` is a file in the current directory."""
    monkeypatch.chdir(tmp_path)
    engine = make_engine("sqlite+aiosqlite:///trader.db")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
    finally:
        await engine.dispose()
    assert (tmp_path / "trader.db").is_file()


async def test_dialect_name_names_the_backend_when_given_an_engine(db_url: str) -> None:
    """`dialect_name` reports sqlite or postgresql."""
    engine = make_engine(db_url)
    try:
        assert dialect_name(engine) == db_url.split("+")[0]
    finally:
        await engine.dispose()


def test_insert_for_raises_when_dialect_is_unsupported() -> None:
    """Only SQLite and PostgreSQL have the ON CONFLICT inserts the writer relies on."""
    with pytest.raises(ValueError, match="unsupported"):
        insert_for("mysql", Base.metadata.tables["bars"])

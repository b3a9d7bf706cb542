"""Shared fixtures: a fresh SQLite file and a fresh PostgreSQL database, and the service rule.

Tests marked `postgres` (or `mqtt`) skip when the service is unreachable, and fail instead when
`TRADER_REQUIRE_SERVICES=1`; see tests/support/services.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.support import services


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Apply the service rule before any fixture of a marked test is built."""
    if item.get_closest_marker("postgres") is not None:
        services.require_postgres()
    if item.get_closest_marker("mqtt") is not None:
        services.require_mqtt()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh, empty SQLite file under the test's tmp_path."""
    return f"sqlite+aiosqlite:///{tmp_path / 'trader.db'}"


@pytest.fixture
async def postgres_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    if request.node.get_closest_marker("postgres") is None:
        pytest.fail("a test using postgres_url must be marked @pytest.mark.postgres")
    name = f"trader_test_{uuid.uuid4().hex[:16]}"
    await _maintenance(f'CREATE DATABASE "{name}"')
    try:
        yield (
            f"postgresql+asyncpg://{services.POSTGRES_USER}@"
            f"{services.POSTGRES_HOST}:{services.POSTGRES_PORT}/{name}"
        )
    finally:
        await _maintenance(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _maintenance(sql: str) -> None:
    conn = await asyncpg.connect(
        host=services.POSTGRES_HOST,
        port=services.POSTGRES_PORT,
        user=services.POSTGRES_USER,
        database=services.POSTGRES_MAINTENANCE_DB,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()

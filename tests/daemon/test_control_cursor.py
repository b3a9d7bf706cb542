"""Several daemons on one database: every run applies every operator command once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.runs import add_run
from trader.daemon import DatabaseControls
from trader.domain import ControlCommand
from trader.persistence import control
from trader.persistence.database import make_engine
from trader.persistence.migrate import ensure_schema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The URL of a fresh database, once per backend."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database holding runs `btc`, `eth` and `new`."""
    url = db_url
    engine = make_engine(url)
    await ensure_schema(engine)
    for run_id in ("btc", "eth", "new"):
        await add_run(engine, run_id, symbols=[run_id.upper()])
    try:
        yield engine
    finally:
        await engine.dispose()


async def _apply_all(controls: DatabaseControls) -> list[tuple[int, ControlCommand]]:
    """What `LiveSession._apply_controls` does with the commands, minus the engine."""
    events = await controls.pending()
    for event in events:
        await controls.applied(event)
    return [(event.id, event.command) for event in events]


async def test_each_daemon_applies_a_kill_when_another_daemon_applied_it_first(
    db: AsyncEngine,
) -> None:
    """A kill applied by one daemon still reaches the other daemon on the same database."""
    btc, eth = DatabaseControls(db, "btc"), DatabaseControls(db, "eth")
    assert await _apply_all(btc) == await _apply_all(eth) == []
    kill_id = await control.request(db, ControlCommand.KILL, "stop everything", source="cli")
    assert await _apply_all(btc) == [(kill_id, ControlCommand.KILL)]
    assert await _apply_all(eth) == [(kill_id, ControlCommand.KILL)]
    assert await btc.pending() == await eth.pending() == []
    (event,) = await control.recent(db)
    assert event.applied_at is not None  # still stamped, by the first daemon


async def test_restarted_daemon_applies_what_was_stored_while_it_was_down(
    db: AsyncEngine,
) -> None:
    """A run's cursor survives its daemon: after a restart it applies only the newer commands,
    including one the other daemon applied meanwhile."""
    await _apply_all(DatabaseControls(db, "btc"))
    await _apply_all(DatabaseControls(db, "eth"))
    first = await control.request(db, ControlCommand.KILL, "one", source="cli")
    await _apply_all(DatabaseControls(db, "btc"))
    # "btc" stops; "eth" applies the next command alone.
    second = await control.request(db, ControlCommand.RESUME, "two", source="cli", flatten=False)
    assert await _apply_all(DatabaseControls(db, "eth")) == [
        (first, ControlCommand.KILL),
        (second, ControlCommand.RESUME),
    ]
    assert await _apply_all(DatabaseControls(db, "btc")) == [(second, ControlCommand.RESUME)]


async def test_new_run_starts_after_applied_commands_and_applies_unapplied_ones(
    db: AsyncEngine,
) -> None:
    """A new run replays no applied history but applies what no daemon has applied yet."""
    await control.request(db, ControlCommand.KILL, "old, applied", source="cli")
    await _apply_all(DatabaseControls(db, "btc"))
    waiting = await control.request(db, ControlCommand.KILL, "stored while down", source="cli")
    assert await _apply_all(DatabaseControls(db, "new")) == [(waiting, ControlCommand.KILL)]

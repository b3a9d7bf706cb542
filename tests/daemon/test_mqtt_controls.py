"""The daemon's MQTT control intake: what it stores, what it retries, and what stops the daemon."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.runs import add_run
from trader.bus import ControlOutcome, ControlRejection, RejectReason, VerifiedCommand
from trader.daemon import DatabaseControls, _mqtt_control_loop
from trader.domain import ControlCommand
from trader.errors import FatalError
from trader.persistence import control
from trader.persistence.control import WriteRetry
from trader.persistence.database import make_engine
from trader.persistence.migrate import ensure_schema

_RUN = "run-1"


async def _outcomes(*items: ControlOutcome) -> AsyncIterator[ControlOutcome]:
    for item in items:
        yield item


def _retry(attempts: int = 3, on_sleep: Callable[[], None] | None = None) -> WriteRetry:
    """Retries whose pauses do not wait; `on_sleep` is what changes between attempts."""

    async def sleep(delay_s: float) -> None:
        if on_sleep is not None:
            on_sleep()

    return WriteRetry(attempts=attempts, base_s=0.0, cap_s=0.0, sleep=sleep)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite file holding run `run-1`, whose writes give up on a lock at once."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'trader.db'}", busy_timeout_ms=1)
    await ensure_schema(engine)
    await add_run(engine, _RUN)
    try:
        yield engine
    finally:
        await engine.dispose()


def _path(db: AsyncEngine) -> str:
    database = db.url.database
    assert database is not None
    return database


def _rows(db: AsyncEngine, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(_path(db)) as conn:
        return conn.execute(sql).fetchall()


class _WriteLock:
    """Another process's write transaction on the SQLite file, held until `release`."""

    def __init__(self, db: AsyncEngine) -> None:
        self._conn = sqlite3.connect(_path(db), isolation_level=None)
        self._conn.execute("BEGIN IMMEDIATE")
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._conn.execute("ROLLBACK")
            self._conn.close()


async def _intake(
    db: AsyncEngine, *outcomes: ControlOutcome, retry: WriteRetry | None = None
) -> tuple[DatabaseControls, list[None]]:
    controls = DatabaseControls(db, _RUN)
    woken: list[None] = []
    await _mqtt_control_loop(
        _outcomes(*outcomes),
        db,
        _RUN,
        controls,
        lambda: woken.append(None),
        retry=retry or _retry(),
    )
    return controls, woken


async def test_session_poll_raises_when_storing_an_mqtt_command_failed(tmp_path: Path) -> None:
    """A kill over MQTT that cannot be stored fails the session's next poll, not nothing."""
    db = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'unmigrated.db'}")  # no control_events
    controls = DatabaseControls(db, _RUN)
    woken: list[None] = []
    kill = VerifiedCommand(ControlCommand.KILL, "mqtt", flatten=True, authenticated=False)
    try:
        with structlog.testing.capture_logs() as logs:
            await _mqtt_control_loop(
                _outcomes(kill), db, _RUN, controls, lambda: woken.append(None), retry=_retry()
            )
        with pytest.raises(FatalError, match="MQTT control") as info:
            await controls.pending()
    finally:
        await db.dispose()
    assert woken == [None]  # the session is told to poll at once
    assert info.value.__cause__ is not None
    events = [entry["event"] for entry in logs]
    assert events[-1] == "mqtt_control_failed"
    assert events.count("control_write_retried") == 2  # three attempts in all


async def test_cli_command_is_stored_once_when_its_mqtt_copy_names_its_row(
    db: AsyncEngine,
) -> None:
    """The MQTT copy of a stored command only wakes the session; it adds no second row."""
    kill_id = await control.request(db, ControlCommand.KILL, "cli kill", source="cli")
    copy = VerifiedCommand(
        ControlCommand.KILL, "cli kill", flatten=True, authenticated=False, event_id=kill_id
    )
    _, woken = await _intake(db, copy)
    assert woken == [None]
    assert _rows(db, "SELECT id, source FROM control_events") == [(kill_id, "cli")]


async def test_resume_copy_is_not_stored_after_a_later_kill_when_it_names_its_row(
    db: AsyncEngine,
) -> None:
    """A late MQTT copy of a CLI resume cannot land after a later kill and reopen trading."""
    resume_id = await control.request(
        db, ControlCommand.RESUME, "operator A", source="cli", flatten=False
    )
    await control.request(db, ControlCommand.KILL, "operator B", source="cli")
    late_copy = VerifiedCommand(
        ControlCommand.RESUME, "operator A", flatten=False, authenticated=True, event_id=resume_id
    )
    await _intake(db, late_copy)
    rows = _rows(db, "SELECT command FROM control_events ORDER BY id")
    assert rows == [("resume",), ("kill",)]


async def test_mqtt_command_is_stored_when_the_row_it_names_holds_another_command(
    db: AsyncEngine,
) -> None:
    """A message naming a missing row, or a row with a different command, is stored as new."""
    kill_id = await control.request(db, ControlCommand.KILL, "old", source="cli")
    other = VerifiedCommand(
        ControlCommand.RESUME, "old", flatten=False, authenticated=True, event_id=kill_id
    )
    missing = VerifiedCommand(
        ControlCommand.KILL, "x", flatten=True, authenticated=False, event_id=kill_id + 10
    )
    plain = VerifiedCommand(ControlCommand.FLATTEN, "external", flatten=True, authenticated=False)
    await _intake(db, other, missing, plain)
    rows = _rows(db, "SELECT command, source FROM control_events ORDER BY id")
    assert rows == [("kill", "cli"), ("resume", "mqtt"), ("kill", "mqtt"), ("flatten", "mqtt")]


async def test_mqtt_kill_is_stored_when_the_database_is_locked_for_a_while(
    db: AsyncEngine,
) -> None:
    """A write lock held past the busy timeout is retried through, and the kill is stored."""
    lock = _WriteLock(db)
    kill = VerifiedCommand(ControlCommand.KILL, "during lock", flatten=True, authenticated=False)
    try:
        controls, woken = await _intake(db, kill, retry=_retry(attempts=3, on_sleep=lock.release))
    finally:
        lock.release()
    assert woken == [None]
    assert [e.reason for e in await controls.pending()] == ["during lock"]


async def test_daemon_goes_on_when_a_rejection_cannot_be_stored(db: AsyncEngine) -> None:
    """Junk that arrives while the database stays locked is logged and dropped, not fatal."""
    lock = _WriteLock(db)
    junk = ControlRejection(RejectReason.MALFORMED, "not JSON", "junk")
    try:
        with structlog.testing.capture_logs() as logs:
            controls, _ = await _intake(db, junk, retry=_retry(attempts=2))
    finally:
        lock.release()
    assert await controls.pending() == []  # no FatalError: the daemon trades on
    assert "control_rejection_not_stored" in [entry["event"] for entry in logs]
    assert _rows(db, "SELECT count(*) FROM risk_events WHERE kind = 'control_rejected'") == [(0,)]


async def test_kill_is_stored_when_it_arrives_behind_rejections(db: AsyncEngine) -> None:
    """Rejections are stored beside commands: both end up on record, the kill among commands."""
    junk = [ControlRejection(RejectReason.MALFORMED, f"junk {i}", "x") for i in range(5)]
    kill = VerifiedCommand(ControlCommand.KILL, "real", flatten=True, authenticated=False)
    controls, woken = await _intake(db, *junk, kill)
    assert woken == [None]
    assert [e.reason for e in await controls.pending()] == ["real"]
    assert _rows(db, "SELECT count(*) FROM risk_events WHERE kind = 'control_rejected'") == [(5,)]

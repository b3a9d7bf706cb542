"""`trader kill`, `resume` and `status` as an operator runs them (real subprocesses)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.cli.test_errors import trader
from tests.support import services
from tests.support.eventually import until
from tests.support.runs import add_run
from trader.bus import MqttBus
from trader.config import MqttSettings
from trader.daemon import DatabaseControls, _mqtt_control_loop
from trader.domain import ControlCommand
from trader.persistence import control, repository
from trader.persistence.database import make_engine
from trader.persistence.migrate import ensure_schema

_SECRET = "cli-control-test-secret-0123456789"


def _pending(db_path: Path) -> list[control.ControlEvent]:
    async def read() -> list[control.ControlEvent]:
        engine = make_engine(f"sqlite+aiosqlite:///{db_path}")
        try:
            return await control.pending(engine)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_kill_and_resume_are_stored_for_the_daemon_on_a_fresh_and_an_existing_database(
    tmp_path: Path,
) -> None:
    """The first kill migrates the empty database; later ones take the sqlite3 fast path; the
    rows read back the same through SQLAlchemy."""
    first = trader("kill", "--no-flatten", "--reason", "calm down", workdir=tmp_path)
    second = trader("kill", workdir=tmp_path)
    third = trader("resume", "--reason", "all clear", workdir=tmp_path)

    assert [r.returncode for r in (first, second, third)] == [0, 0, 0]
    assert first.stdout.startswith("kill #1 stored;")
    assert third.stdout.startswith("resume #3 stored;")
    events = _pending(tmp_path / "trader.db")
    assert [(e.command, e.reason, e.source, e.flatten) for e in events] == [
        (ControlCommand.KILL, "calm down", "cli", False),
        (ControlCommand.KILL, "operator kill", "cli", True),
        (ControlCommand.RESUME, "all clear", "cli", False),
    ]
    assert events[1].created_at >= events[0].created_at
    assert events[0].created_at.tzinfo is not None


def test_status_without_a_paper_run_is_one_line_and_status_2(tmp_path: Path) -> None:
    """On a database with no paper run, `status` prints one error line and exits 2."""
    result = trader("status", workdir=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "trader: error: the database holds no paper run yet; start one with `trader run`"
    ]


def test_status_json_shows_state_positions_and_the_kill_switch(tmp_path: Path) -> None:
    """A run stored by a daemon (here: rows made by `run` would need an exchange, so the test
    seeds a run through the repository) and a pending kill show up in `status --json`."""

    from trader.config import Settings
    from trader.persistence.migrate import ensure_schema

    async def seed() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'trader.db'}")
        try:
            await ensure_schema(engine)
            await repository.create_run(
                engine,
                run_id="paper-x",
                mode="paper",
                config={"settings": Settings().redacted()},
                strategy="ema_cross",
                interval="5",
                symbols=["BTCUSDT"],
                started_at=datetime.now(UTC),
            )
        finally:
            await engine.dispose()

    asyncio.run(seed())
    assert trader("kill", "--reason", "maintenance", workdir=tmp_path).returncode == 0
    result = trader("status", "--json", workdir=tmp_path)
    text = trader("status", workdir=tmp_path)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["run_id"] == "paper-x"
    assert report["state"] == "ACTIVE"  # the kill is pending until a daemon applies it
    assert report["positions"] == {}
    assert report["feed"] == "no bars yet"
    assert report["controls"][0]["command"] == "kill"
    assert report["controls"][0]["applied_at"] is None
    assert "control        #1 kill (cli): 'maintenance', applied pending" in text.stdout


@pytest.mark.mqtt
async def test_kill_and_resume_are_stored_once_when_also_sent_over_mqtt(tmp_path: Path) -> None:
    """With MQTT configured each command is one row: the daemon's intake only wakes for the
    MQTT copy, which names the row the CLI stored."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    url = f"mqtt://{services.MQTT_HOST}:{services.MQTT_PORT}"
    db = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'trader.db'}")
    env = {
        "TRADER_MQTT__URL": url,
        "TRADER_MQTT__TOPIC_PREFIX": prefix,
        "TRADER_MQTT__CONTROL_SECRET": _SECRET,
    }
    woken: list[None] = []
    try:
        await ensure_schema(db)
        await add_run(db, "run-x")
        bus = MqttBus(settings=MqttSettings(url=url, topic_prefix=prefix, control_secret=_SECRET))
        async with bus:
            await asyncio.wait_for(bus.wait_connected(), 5.0)
            intake = asyncio.create_task(
                _mqtt_control_loop(
                    bus.control(),
                    db,
                    "run-x",
                    DatabaseControls(db, "run-x"),
                    lambda: woken.append(None),
                )
            )
            try:
                outputs = [
                    (await asyncio.to_thread(trader, *args, workdir=tmp_path, env=env)).stdout
                    for args in (("kill",), ("resume",))
                ]
                await until(lambda: len(woken) == 2, timeout_s=10.0, what="both copies")
            finally:
                intake.cancel()
                await asyncio.gather(intake, return_exceptions=True)
    finally:
        await db.dispose()
    assert outputs[0].startswith("kill #1 stored and sent over MQTT;")
    assert outputs[1].startswith("resume #2 stored and sent over MQTT;")
    with sqlite3.connect(tmp_path / "trader.db") as conn:
        rows = conn.execute("SELECT id, command, source FROM control_events ORDER BY id")
        assert rows.fetchall() == [(1, "kill", "cli"), (2, "resume", "cli")]

"""The kill switch on a running daemon: through the database and over MQTT, across a restart.

The daemon trades the seeded `random` strategy against the fake exchange; a kill must flatten
at once, keep anything from opening until `resume`, survive a restart, and work while the MQTT
broker is unreachable. Resume over MQTT must be signed, fresh and used once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest

from tests.bus.listener import Listener
from tests.support import services
from tests.support.daemon_harness import BTC, ETH, HISTORY, DaemonDb, daemon_settings
from tests.support.daemon_harness import start_daemon_task as start
from tests.support.eventually import until
from tests.support.fake_bybit import FakeBybit
from trader import session
from trader.bus import sign_command
from trader.config import Settings
from trader.persistence import control
from trader.persistence.control import ControlCommand
from trader.persistence.database import make_engine
from trader.status import StatusReport, gather_status

_SECRET = "a-test-control-secret-0123456789"
_WAIT_S = 30.0


class _Daemon:
    """One daemon task on `fake` and the database, with the test's view of both."""

    def __init__(self, fake: FakeBybit, db: DaemonDb, settings: Settings) -> None:
        self.fake, self.db, self.settings = fake, db, settings
        self.stop = asyncio.Event()

    def run_id(self) -> str:
        return self.db.run_ids()[-1]

    def open_positions(self) -> dict[str, float]:
        return {s: q for s, q in self.db.positions(self.run_id()).items() if q}

    def orders(self) -> int:
        """Orders risk let through (denials are stored as rejected orders)."""
        rows = self.db.rows(
            "SELECT count(*) FROM orders WHERE run_id = ? AND status != 'rejected'", self.run_id()
        )
        return int(rows[0][0])

    def denials(self) -> set[str]:
        rows = self.db.rows(
            "SELECT DISTINCT reject_reason FROM orders WHERE run_id = ? AND status = 'rejected'",
            self.run_id(),
        )
        return {row[0] for row in rows}

    async def caught_up(self) -> None:
        target = self.fake.market.forming_start_ms - 300_000
        await until(lambda: self.db.last_start() == target, timeout_s=_WAIT_S, what="catch-up")

    async def bars(self, count: int) -> None:
        for _ in range(count):
            await self.fake.advance_bars(1)
            await self.caught_up()

    async def until_positioned(self) -> None:
        for _ in range(40):
            if self.open_positions():
                return
            await self.bars(1)
        raise AssertionError("the random strategy never opened a position")

    def applied(self) -> list[tuple[str, str, object]]:
        return self.db.rows(
            "SELECT command, source, applied_at FROM control_events WHERE applied_at IS NOT NULL"
        )

    def risk_events(self, kind: str) -> list[str]:
        return [
            row[0]
            for row in self.db.rows(
                "SELECT detail FROM risk_events WHERE run_id = ? AND kind = ? ORDER BY ts_ms",
                self.run_id(),
                kind,
            )
        ]


def _settings(fake: FakeBybit, db: DaemonDb, **env: str) -> Settings:
    return daemon_settings(fake, db.path, "BTCUSDT,ETHUSDT", TRADER_STRATEGY__NAME="random", **env)


async def _request(db: DaemonDb, command: ControlCommand, *, flatten: bool = True) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{db.path}")
    try:
        await control.request(
            engine, command, f"test {command.value}", source="cli", flatten=flatten
        )
    finally:
        await engine.dispose()


async def _status(db: DaemonDb, settings: Settings) -> StatusReport:
    engine = make_engine(f"sqlite+aiosqlite:///{db.path}")
    try:
        return await gather_status(engine, settings)
    finally:
        await engine.dispose()


async def test_database_kill_flattens_at_once_survives_a_restart_until_resume(
    tmp_path: Path,
) -> None:
    """A database kill flattens and halts a running daemon, holds across a restart until resume."""
    db = DaemonDb(tmp_path / "trader.db")
    async with FakeBybit(BTC + ETH, start_ms=BTC[HISTORY].start_ms) as fake:
        daemon = _Daemon(fake, db, _settings(fake, db))
        async with asyncio.TaskGroup() as group:
            start(group, daemon.settings, daemon.stop)
            await daemon.caught_up()
            await daemon.until_positioned()
            await _request(db, ControlCommand.KILL)
            await until(lambda: daemon.applied() and not daemon.open_positions(), what="flat")
            orders_after_kill = daemon.orders()
            await daemon.bars(4)
            assert daemon.orders() == orders_after_kill  # nothing opens while killed
            daemon.stop.set()
        flatten_fills = db.rows("SELECT count(*) FROM fills WHERE reason = 'flatten'")
        assert flatten_fills[0][0] >= 1
        assert any(detail.startswith("kill") for detail in daemon.risk_events("halted"))
        report = await _status(db, daemon.settings)
        assert (report.state, report.reason, report.positions) == ("HALTED", "kill", {})
        (latest,) = db.rows(
            "SELECT equity, drawdown FROM equity WHERE run_id = ? ORDER BY ts_ms DESC LIMIT 1",
            daemon.run_id(),
        )
        assert (report.equity, report.drawdown) == (str(latest[0]), latest[1])

        restarted = _Daemon(fake, db, daemon.settings)
        async with asyncio.TaskGroup() as group:
            start(group, restarted.settings, restarted.stop)
            await restarted.bars(4)
            assert restarted.orders() == orders_after_kill  # still killed after the restart
            await _request(db, ControlCommand.RESUME)
            await until(lambda: len(restarted.applied()) == 2, what="resume applied")
            for _ in range(30):
                if restarted.orders() > orders_after_kill:
                    break
                await restarted.bars(1)
            restarted.stop.set()
    assert restarted.orders() > orders_after_kill, "trading did not resume"
    assert "state_halted" in restarted.denials()


@pytest.mark.mqtt
async def test_mqtt_kill_applies_and_resume_must_be_signed_fresh_and_unused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MQTT kill applies and is published; only a signed, fresh, unused resume reopens."""
    monkeypatch.setattr(session, "HEARTBEAT_S", 0.2)
    db = DaemonDb(tmp_path / "trader.db")
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    async with FakeBybit(BTC + ETH, start_ms=BTC[HISTORY].start_ms) as fake:
        settings = _settings(
            fake,
            db,
            TRADER_MQTT__URL=f"mqtt://{services.MQTT_HOST}:{services.MQTT_PORT}",
            TRADER_MQTT__TOPIC_PREFIX=prefix,
            TRADER_MQTT__CONTROL_SECRET=_SECRET,
        )
        daemon = _Daemon(fake, db, settings)
        async with (
            aiomqtt.Client(services.MQTT_HOST, services.MQTT_PORT) as client,
            Listener(f"{prefix}/#") as listener,
            asyncio.TaskGroup() as group,
        ):
            start(group, settings, daemon.stop)
            await daemon.caught_up()
            await daemon.until_positioned()
            topic = f"{prefix}/control"
            await client.publish(topic, orjson.dumps({"command": "kill", "reason": "mqtt"}), qos=1)
            await until(lambda: daemon.applied() and not daemon.open_positions(), what="flat")
            seen = await listener.collect_until(
                lambda messages: _halted_state_and_heartbeat(prefix, messages), timeout_s=_WAIT_S
            )
            assert {f"{prefix}/events/decision", f"{prefix}/events/fill"} <= {
                str(m.topic) for m in seen
            }
            now_ms = time.time_ns() // 1_000_000
            unsigned = {"command": "resume", "reason": "no signature"}
            signed = sign_command(
                {"command": "resume", "reason": "signed"},
                _SECRET,
                now_ms=now_ms,
                nonce="nonce-0001",
            )
            for message in (unsigned, signed, signed):
                await client.publish(topic, orjson.dumps(message), qos=1)
            await until(lambda: len(daemon.applied()) == 2, what="signed resume applied")
            await until(
                lambda: len(daemon.risk_events("control_rejected")) == 2, what="rejections stored"
            )
            daemon.stop.set()
        final = await _retained_state(prefix)
    assert final["data"]["daemon"] == "stopped"  # not the ACTIVE of a daemon that is gone
    assert final["data"]["state"] == "ACTIVE"
    assert [row[:2] for row in daemon.applied()] == [("kill", "mqtt"), ("resume", "mqtt")]
    rejected = daemon.risk_events("control_rejected")
    assert any("unsigned" in detail for detail in rejected)
    assert any("replayed" in detail for detail in rejected)


def _halted_state_and_heartbeat(prefix: str, messages: list[aiomqtt.Message]) -> bool:
    """A heartbeat arrived, and the latest retained-state message says HALTED."""
    states = [m for m in messages if str(m.topic) == f"{prefix}/state"]
    beats = [m for m in messages if str(m.topic) == f"{prefix}/events/heartbeat"]
    if not states or not beats:
        return False
    latest = orjson.loads(bytes(states[-1].payload))
    data = latest["data"]
    return bool(
        latest["schema_version"] == 1 and data["state"] == "HALTED" and data["daemon"] == "running"
    )


async def _retained_state(prefix: str) -> dict[str, Any]:
    """The retained `<prefix>/state` a late subscriber gets; removed from the broker after."""
    try:
        async with Listener(f"{prefix}/state") as late:
            (message,) = await late.collect(1)
        body: dict[str, Any] = orjson.loads(bytes(message.payload))
        return body
    finally:
        async with aiomqtt.Client(services.MQTT_HOST, services.MQTT_PORT) as client:
            await client.publish(f"{prefix}/state", b"", qos=1, retain=True)


async def test_broker_outage_stops_neither_trading_nor_the_database_kill(tmp_path: Path) -> None:
    """With the broker unreachable the daemon still trades, and a database kill still applies."""
    db = DaemonDb(tmp_path / "trader.db")
    async with FakeBybit(BTC + ETH, start_ms=BTC[HISTORY].start_ms) as fake:
        settings = _settings(fake, db, TRADER_MQTT__URL="mqtt://127.0.0.1:9")  # nothing listens
        daemon = _Daemon(fake, db, settings)
        async with asyncio.TaskGroup() as group:
            start(group, settings, daemon.stop)
            await daemon.caught_up()
            await daemon.until_positioned()
            await _request(db, ControlCommand.KILL)
            await until(lambda: daemon.applied() and not daemon.open_positions(), what="flat")
            orders_after_kill = daemon.orders()
            await daemon.bars(2)
            assert daemon.orders() == orders_after_kill  # nothing opens while killed
            assert daemon.open_positions() == {}
            daemon.stop.set()

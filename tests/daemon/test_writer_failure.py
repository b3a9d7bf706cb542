"""A database that keeps refusing writes ends the daemon, HALTED and said so on MQTT first."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import aiomqtt
import orjson
import pytest

from tests.bus.listener import Listener
from tests.support import services
from tests.support.daemon_harness import (
    BTC,
    ETH,
    HISTORY,
    DaemonDb,
    daemon_settings,
    fast_backoff,
)
from tests.support.eventually import until
from tests.support.fake_bybit import FakeBybit
from trader.daemon import DaemonOptions, run_daemon
from trader.errors import FatalError

_WAIT_S = 30.0


@pytest.mark.mqtt
async def test_writer_failure_halts_and_publishes_the_state_before_the_exit(
    tmp_path: Path,
) -> None:
    """The writer fails for good (the file is locked past every retry): the daemon exits with
    FatalError, and the retained state says HALTED for an error, after a `halted` risk event."""
    db = DaemonDb(tmp_path / "trader.db")
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    stop = asyncio.Event()
    async with FakeBybit(BTC + ETH, start_ms=BTC[HISTORY].start_ms) as fake:
        settings = daemon_settings(
            fake,
            db.path,
            "BTCUSDT,ETHUSDT",
            TRADER_MQTT__URL=f"mqtt://{services.MQTT_HOST}:{services.MQTT_PORT}",
            TRADER_MQTT__TOPIC_PREFIX=prefix,
            TRADER_DATABASE__BUSY_TIMEOUT_MS="20",
            TRADER_DATABASE__WRITE_RETRY_ATTEMPTS="2",
            TRADER_DATABASE__WRITE_RETRY_BACKOFF_S="0.01",
        )
        async with Listener(f"{prefix}/events/risk") as listener:
            task = asyncio.create_task(
                run_daemon(
                    settings,
                    DaemonOptions(),
                    stop=stop,
                    backoff=fast_backoff(),
                    rest_backoff=fast_backoff(),
                )
            )
            lock = sqlite3.connect(db.path, isolation_level=None)
            try:
                await until(lambda: db.last_start() == BTC[HISTORY - 1].start_ms, what="warm-up")
                lock.execute("BEGIN EXCLUSIVE")  # every write from now on fails
                await fake.advance_bars(1)
                with pytest.raises(FatalError, match="database writer failed"):
                    async with asyncio.timeout(_WAIT_S):
                        await task
                (risk,) = await listener.collect(1, timeout_s=5.0)
            finally:
                lock.close()
                stop.set()
                if not task.done():
                    task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    event = orjson.loads(bytes(risk.payload))["data"]
    assert (event["kind"], event["detail"].startswith("error")) == ("halted", True)
    assert "database writes failed" in event["detail"]
    async with aiomqtt.Client(services.MQTT_HOST, services.MQTT_PORT) as client:
        await client.subscribe(f"{prefix}/state", qos=1)
        async with asyncio.timeout(5.0):
            retained = await anext(aiter(client.messages))
        await client.publish(f"{prefix}/state", b"", retain=True)  # clear it for the broker
    state = orjson.loads(bytes(retained.payload))["data"]
    assert state["state"] == "HALTED"
    assert state["risk"]["reason"] == "error"
    assert state["daemon"] == "failed"

"""`trader run` under a systemd-like supervisor: READY, WATCHDOG, STATUS and STOPPING."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.support.daemon_harness import BTC, HISTORY, start_daemon_process
from tests.support.fake_bybit import FakeBybit
from tests.support.notify_socket import (
    notify_socket,
    receive_running,
    receive_until,
)

_START_S = 60.0  # bounds a failing wait only (interpreter start-up and warm-up)
_STOP_S = 10.0  # the contract: exit 0 within 10 s of SIGTERM


async def test_daemon_notifies_ready_after_subscribing_then_watchdog_status_stopping(
    tmp_path: Path,
) -> None:
    """READY comes once, after the subscription; then watchdog pings and a trading STATUS; on
    SIGTERM, STOPPING and exit 0 within 10 s."""
    with notify_socket(tmp_path) as (sock, notify_path):
        async with FakeBybit(BTC, start_ms=BTC[HISTORY].start_ms) as fake:
            process = await start_daemon_process(
                fake,
                workdir=tmp_path,
                db_path=tmp_path / "trader.db",
                symbols="BTCUSDT",
                env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "2000000"},
            )
            seen: list[bytes] = []
            try:
                async with asyncio.timeout(_START_S):
                    await receive_until(sock, b"READY=1", seen)
                    subscribes = [r for r in fake.ws_requests if r.op == "subscribe"]
                    await receive_running(sock, seen)
                process.send_signal(signal.SIGTERM)
                async with asyncio.timeout(_STOP_S):
                    await receive_until(sock, b"STOPPING=1", seen)
                    _, stderr = await process.communicate()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    assert process.returncode == 0, stderr.decode()[-3_000:]
    assert len(subscribes) == 1  # READY came only after the subscription
    assert seen.count(b"READY=1") == 1
    status = next(message for message in seen if message.startswith(b"STATUS="))
    assert status.startswith(b"STATUS=trading paper-")
    assert b"risk ACTIVE" in status

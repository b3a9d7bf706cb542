"""`trader record` under a systemd-like supervisor: the notify messages a real process sends."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.support.candles import load_candles
from tests.support.fake_bybit import FakeBybit
from tests.support.notify_socket import (
    notify_socket,
    receive_running,
    receive_until,
)
from tests.support.record_process import start_record

_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
_BTC = load_candles(_FIXTURES / "BTCUSDT_5m.csv.gz", "BTCUSDT", "5")[:30]
_HISTORY = 10  # bars already closed when the fake starts
_START_S = 30.0  # bounds a failing wait only (interpreter start-up on a loaded machine)
_STOP_S = 10.0  # the contract: a clean exit soon after SIGTERM
_WATCHDOG_USEC = 200_000  # a ping every 0.1 s


async def test_record_notifies_ready_watchdog_status_and_stopping_when_run_under_systemd(
    tmp_path: Path,
) -> None:
    """READY after subscribing, repeated WATCHDOG and STATUS, STOPPING on SIGTERM, then exit 0."""
    with notify_socket(tmp_path) as (sock, notify_path):
        async with FakeBybit(_BTC, start_ms=_BTC[_HISTORY].start_ms) as fake:
            process = await start_record(
                fake,
                workdir=tmp_path,
                out=tmp_path / "rec",
                symbols="BTCUSDT",
                NOTIFY_SOCKET=str(notify_path),
                WATCHDOG_USEC=str(_WATCHDOG_USEC),
            )
            seen: list[bytes] = []
            try:
                async with asyncio.timeout(_START_S):
                    await receive_until(sock, b"READY=1", seen)
                    subscribed = len(fake.ws.requests)
                    await receive_running(sock, seen)
                process.send_signal(signal.SIGTERM)
                async with asyncio.timeout(_STOP_S):
                    await receive_until(sock, b"STOPPING=1", seen)
                    _, stderr = await process.communicate()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert "subscribe" in [request.op for request in fake.ws.requests[:subscribed]]
    statuses = [message for message in seen if message.startswith(b"STATUS=")]
    assert statuses[0].startswith(b"STATUS=recording: ")
    assert b" confirmed bars, 0 reconnects" in statuses[0]
    assert seen.count(b"READY=1") == 1

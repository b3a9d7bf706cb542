"""`trader record` under a systemd-like supervisor: the notify messages a real process sends."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.candles import load_candles
from tests.support.fake_bybit import FakeBybit

_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
_BTC = load_candles(_FIXTURES / "BTCUSDT_5m.csv.gz", "BTCUSDT", "5")[:30]
_HISTORY = 10  # bars already closed when the fake starts
#: Environment the CLI must not inherit: our TRADER_* settings, asyncio debug mode (its
#: slow-step warnings would add stderr lines) and any notify settings of the test runner's own.
_NOT_INHERITED = ("TRADER_", "PYTHONASYNCIODEBUG", "NOTIFY_SOCKET", "WATCHDOG_")
_START_S = 30.0  # bounds a failing wait only (interpreter start-up on a loaded machine)
_STOP_S = 10.0  # the contract: a clean exit soon after SIGTERM
_WATCHDOG_USEC = 200_000  # a ping every 0.1 s


def _env(**settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(_NOT_INHERITED)}
    env.update(settings)
    return env


async def _receive_until(sock: socket.socket, wanted: bytes, seen: list[bytes]) -> None:
    """Append datagrams from `sock` to `seen` until one equals `wanted`."""
    loop = asyncio.get_running_loop()
    while not seen or seen[-1] != wanted:
        seen.append(await loop.sock_recv(sock, 4096))


async def test_record_notifies_ready_watchdog_status_and_stopping_when_run_under_systemd(
    tmp_path: Path,
) -> None:
    """READY after subscribing, repeated WATCHDOG and STATUS, STOPPING on SIGTERM, then exit 0."""
    (tmp_path / "trader.toml").touch()  # wins the config search over /etc/trader/trader.toml
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))
        sock.setblocking(False)
        async with FakeBybit(_BTC, start_ms=_BTC[_HISTORY].start_ms) as fake:
            env = _env(
                TRADER_FEED__WS_URL=fake.ws_url,
                TRADER_FEED__SYMBOLS="BTCUSDT",
                TRADER_FEED__INTERVAL="5",
                TRADER_RECORDER__FLUSH_INTERVAL_S="0.05",
                NOTIFY_SOCKET=str(notify_path),
                WATCHDOG_USEC=str(_WATCHDOG_USEC),
            )
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "trader",
                "record",
                "--out",
                str(tmp_path / "rec"),
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            seen: list[bytes] = []
            try:
                async with asyncio.timeout(_START_S):
                    await _receive_until(sock, b"READY=1", seen)
                    subscribed = len(fake.ws.requests)
                    while seen.count(b"WATCHDOG=1") < 2 or not any(
                        message.startswith(b"STATUS=") for message in seen
                    ):
                        seen.append(await asyncio.get_running_loop().sock_recv(sock, 4096))
                process.send_signal(signal.SIGTERM)
                async with asyncio.timeout(_STOP_S):
                    await _receive_until(sock, b"STOPPING=1", seen)
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

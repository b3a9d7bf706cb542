"""`trader run --record`: the recording reaches the OS while the daemon runs, and a recording
that cannot be written ends the daemon instead of reconnecting forever."""

from __future__ import annotations

import asyncio
import errno
import zlib
from pathlib import Path

import pytest
import structlog

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
from trader.recorder import RotatingRecording

_SYMBOLS = "BTCUSDT,ETHUSDT"


def _readable(path: Path) -> bytes:
    """What a reader gets from a gzip file still being written (a crash would leave that)."""
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(path.read_bytes())


async def test_run_flushes_the_recording_every_flush_interval(tmp_path: Path) -> None:
    """Frames and REST bars are readable from the open file within `recorder.flush_interval_s`,
    not only once the file is rotated or closed."""
    db = DaemonDb(tmp_path / "trader.db")
    out = tmp_path / "recording"
    stop = asyncio.Event()
    async with FakeBybit(BTC + ETH, start_ms=BTC[HISTORY].start_ms) as fake:
        settings = daemon_settings(fake, db.path, _SYMBOLS, TRADER_RECORDER__FLUSH_INTERVAL_S="0.1")
        async with asyncio.TaskGroup() as group:
            task = group.create_task(
                run_daemon(
                    settings,
                    DaemonOptions(record_dir=out),
                    stop=stop,
                    backoff=fast_backoff(),
                    rest_backoff=fast_backoff(),
                )
            )
            await until(lambda: db.last_start() == BTC[HISTORY - 1].start_ms, what="warm-up")
            await fake.advance_bars(1)
            live_start = str(BTC[HISTORY].start_ms).encode()
            await until(lambda: db.last_start() == BTC[HISTORY].start_ms, what="a live bar")
            (path,) = out.iterdir()
            readable = await until(
                lambda: (text := _readable(path)) and live_start in text and text,
                timeout_s=5.0,
                what="the live bar's frames flushed",
            )
            assert not task.done()
            stop.set()
    assert b'"source":"rest"' in readable  # the warm-up bars, which came over REST


async def test_a_recording_write_failure_ends_the_daemon_without_reconnecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while recording frames is fatal (FatalError, logged), not a network failure
    that the feed would retry by reconnecting forever while nothing trades."""
    db = DaemonDb(tmp_path / "trader.db")
    stop = asyncio.Event()
    full = False
    write_frame = RotatingRecording.write_frame

    def write_or_fail(self: RotatingRecording, recv_ms: int, text: str | bytes) -> None:
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_frame(self, recv_ms, text)

    monkeypatch.setattr(RotatingRecording, "write_frame", write_or_fail)
    async with FakeBybit(BTC + ETH, start_ms=BTC[HISTORY].start_ms) as fake:
        settings = daemon_settings(fake, db.path, _SYMBOLS)
        task = asyncio.create_task(
            run_daemon(
                settings,
                DaemonOptions(record_dir=tmp_path / "recording"),
                stop=stop,
                backoff=fast_backoff(),
                rest_backoff=fast_backoff(),
            )
        )
        try:
            await until(lambda: db.last_start() == BTC[HISTORY - 1].start_ms, what="warm-up")
            full = True
            with structlog.testing.capture_logs() as logs:
                await fake.advance_bars(1)
                with pytest.raises(FatalError, match="cannot write the recording") as info:
                    async with asyncio.timeout(10):
                        await task
        finally:
            stop.set()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert fake.ws.connections_opened == 1  # never reconnected over it
    assert isinstance(info.value.__cause__, OSError)
    events = [entry["event"] for entry in logs]
    assert "recording_failed" in events
    assert "daemon_failed" in events
    assert "feed_reconnecting" not in events

"""`trader record` as an operator runs it: a real process on `FakeBybit`, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import orjson

from tests.support.candles import load_candles
from tests.support.eventually import eventually
from tests.support.fake_bybit import FakeBybit
from tests.support.record_process import clean_env, start_record
from trader.domain import Bar
from trader.replay.sources import open_source

_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
_BTC = load_candles(_FIXTURES / "BTCUSDT_5m.csv.gz", "BTCUSDT", "5")[:30]
_ETH = load_candles(_FIXTURES / "ETHUSDT_5m.csv.gz", "ETHUSDT", "5")[:30]
_HISTORY = 10  # bars already closed when the fake starts
_BARS = 3  # bars the fake closes while the process records
_START_S = 30.0  # bounds a failing wait only (interpreter start-up on a loaded machine)
_STOP_S = 10.0  # the contract: a clean exit soon after SIGTERM


def _confirms_on_disk(out: Path) -> int:
    """Confirmed pushes in the files so far, reading an unfinished gzip member as far as it goes."""
    count = 0
    for path in sorted(out.glob("*.jsonl.gz")):
        text = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16).decompress(path.read_bytes())
        for line in text.split(b"\n"):
            if b'"confirm":true' in line.replace(b" ", b""):
                frame = orjson.loads(line)["frame"]
                count += sum(1 for item in frame["data"] if item["confirm"])
    return count


def _key(bar: Bar) -> tuple[str, int, float, float]:
    return (bar.symbol, bar.start_ms, bar.open, bar.close)


async def test_recording_replays_to_the_bars_when_the_process_is_stopped_by_sigterm(
    tmp_path: Path,
) -> None:
    """`python -m trader record` records the fake's bars and exits 0 soon after SIGTERM."""
    out = tmp_path / "rec"
    async with FakeBybit(_BTC + _ETH, start_ms=_BTC[_HISTORY].start_ms) as fake:
        process = await start_record(fake, workdir=tmp_path, out=out, symbols="BTCUSDT,ETHUSDT")
        try:
            async with asyncio.timeout(_START_S):
                await fake.ws.wait_for_requests("subscribe", 2)  # one per topic
            await fake.advance_bars(_BARS)
            # A thread polls the files, so the fake keeps serving on this loop meanwhile.
            await asyncio.to_thread(
                eventually,
                lambda: _confirms_on_disk(out) >= 2 * _BARS,
                timeout_s=_START_S,
                what="confirmed bars flushed to disk",
            )
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(_STOP_S):
                stdout, stderr = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().count("\n") == 1
    assert f"{2 * _BARS} confirmed bars" in stdout.decode()
    files = sorted(out.glob("frames-*.jsonl.gz"))
    bars = [item for path in files for item in open_source(path)]
    assert all(isinstance(bar, Bar) for bar in bars), bars
    expected = [
        bar
        for pair in zip(
            _BTC[_HISTORY : _HISTORY + _BARS], _ETH[_HISTORY : _HISTORY + _BARS], strict=True
        )
        for bar in pair
    ]
    assert [_key(bar) for bar in bars if isinstance(bar, Bar)] == [_key(bar) for bar in expected]


def test_record_exits_2_with_one_line_when_the_interval_is_unknown(tmp_path: Path) -> None:
    """An interval Bybit does not offer is a configuration error: exit 2, one stderr line."""
    (tmp_path / "trader.toml").touch()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trader",
            "record",
            "--out",
            str(tmp_path / "rec"),
            "--interval",
            "7",
        ],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trader: error:")
    assert "feed.interval" in lines[0]
    assert not (tmp_path / "rec").exists()

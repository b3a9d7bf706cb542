"""`trader record` as an operator runs it: a real process on `FakeBybit`, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import orjson

from tests.support.candles import load_candles
from tests.support.eventually import eventually
from tests.support.fake_bybit import FakeBybit
from trader.domain import Bar
from trader.replay.sources import open_source

_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
_BTC = load_candles(_FIXTURES / "BTCUSDT_5m.csv.gz", "BTCUSDT", "5")[:30]
_ETH = load_candles(_FIXTURES / "ETHUSDT_5m.csv.gz", "ETHUSDT", "5")[:30]
_HISTORY = 10  # bars already closed when the fake starts
_BARS = 3  # bars the fake closes while the process records
#: Environment the CLI must not inherit from the test run: our TRADER_* settings, and asyncio
#: debug mode, whose slow-step warnings would add lines to stderr.
_NOT_INHERITED = ("TRADER_", "PYTHONASYNCIODEBUG")
_START_S = 30.0  # bounds a failing wait only (interpreter start-up on a loaded machine)
_STOP_S = 10.0  # the contract: a clean exit soon after SIGTERM


def _env(**settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(_NOT_INHERITED)}
    env.update(settings)
    return env


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
    (tmp_path / "trader.toml").touch()  # wins the config search over /etc/trader/trader.toml
    async with FakeBybit(_BTC + _ETH, start_ms=_BTC[_HISTORY].start_ms) as fake:
        env = _env(
            TRADER_FEED__WS_URL=fake.ws_url,
            TRADER_FEED__SYMBOLS="BTCUSDT,ETHUSDT",
            TRADER_FEED__INTERVAL="5",
            TRADER_RECORDER__FLUSH_INTERVAL_S="0.05",
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "trader",
            "record",
            "--out",
            str(out),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
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
        env=_env(),
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

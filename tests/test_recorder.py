"""Tests of `trader.recorder`: rotation of recording files and `record` against `FakeBybit`."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from tests.support.candles import load_candles
from tests.support.fake_bybit import FakeBybit
from trader.config import FeedSettings, RecorderSettings, Settings
from trader.domain import Bar, BarSource
from trader.errors import ConfigError, FatalError
from trader.feeds.backoff import Backoff
from trader.feeds.bybit_ws import ConfirmedBar, FeedEvent, FeedReconnected
from trader.recorder import RotatingRecording, record
from trader.replay.recording import FrameLine, iter_recording
from trader.replay.sources import open_source

_FIXTURES = Path(__file__).parent / "fixtures"
_BTC = load_candles(_FIXTURES / "BTCUSDT_5m.csv.gz", "BTCUSDT", "5")[:40]
_ETH = load_candles(_FIXTURES / "ETHUSDT_5m.csv.gz", "ETHUSDT", "5")[:40]
_HISTORY = 20  # bars already closed when the fake starts
_STEP_S = 5.0  # bounds a failing await only; passing tests never get near it


def _frame(n: int) -> str:
    return json.dumps({"topic": "kline.5.BTCUSDT", "seq": n, "pad": "x" * 40})


def _frames_in(path: Path) -> list[Any]:
    """Every frame of one file, read with plain gzip so a truncated member fails loudly."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["frame"] for line in handle]


def _replayed_bars(files: list[Path]) -> list[Bar]:
    bars: list[Bar] = []
    for path in files:
        for item in open_source(path):
            assert isinstance(item, Bar), item
            bars.append(item)
    return bars


def _key(bar: Bar) -> tuple[str, int, float, float]:
    return (bar.symbol, bar.start_ms, bar.open, bar.close)


class _Progress:
    """The `on_event` observer: counts confirmed bars and wakes the test at a target."""

    def __init__(self) -> None:
        self.bars = 0
        self.reconnected = asyncio.Event()
        self._target = 0
        self._reached = asyncio.Event()

    def __call__(self, event: FeedEvent) -> None:
        if isinstance(event, ConfirmedBar):
            self.bars += 1
        elif isinstance(event, FeedReconnected):
            self.reconnected.set()
        if self.bars >= self._target:
            self._reached.set()

    async def wait_for_bars(self, target: int) -> None:
        self._target = target
        if self.bars < target:
            self._reached.clear()
            async with asyncio.timeout(_STEP_S):
                await self._reached.wait()


def test_files_are_complete_and_hold_every_frame_when_rotated_by_size(tmp_path: Path) -> None:
    """Size rotation yields several complete gzip files that together hold each frame in order."""
    recording = RotatingRecording(tmp_path, rotate_max_bytes=1_024, rotate_interval_s=3_600.0)
    frames = [_frame(n) for n in range(100)]
    for n, text in enumerate(frames):
        recording.write_frame(1_700_000_000_000 + n, text)
    recording.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) > 3
    assert list(recording.files) == files
    assert files[0].name == "frames-1700000000000.jsonl.gz"
    got = [frame for path in files for frame in _frames_in(path)]
    assert got == [json.loads(text) for text in frames]
    assert recording.frames_written == len(frames)


def test_new_file_starts_when_interval_elapsed_by_injected_clock(tmp_path: Path) -> None:
    """A file spans less than rotate_interval_s of recv time; each is named by its first frame."""
    recording = RotatingRecording(tmp_path, rotate_max_bytes=10**9, rotate_interval_s=60.0)
    start_ms = 1_700_000_000_000
    offsets_s = [0, 10, 59.999, 60, 61, 125, 300]
    for n, offset_s in enumerate(offsets_s):
        recording.write_frame(start_ms + int(offset_s * 1_000), _frame(n))
    recording.close()
    names = [path.name for path in recording.files]
    assert names == [
        f"frames-{start_ms}.jsonl.gz",
        f"frames-{start_ms + 60_000}.jsonl.gz",
        f"frames-{start_ms + 125_000}.jsonl.gz",
        f"frames-{start_ms + 300_000}.jsonl.gz",
    ]
    counts = [len(_frames_in(path)) for path in recording.files]
    assert counts == [3, 2, 1, 1]


def test_file_is_not_rotated_when_size_is_reached_within_its_first_millisecond(
    tmp_path: Path,
) -> None:
    """Rotation waits for a later recv_ts, so two files never share a name."""
    recording = RotatingRecording(tmp_path, rotate_max_bytes=1_024, rotate_interval_s=60.0)
    for n in range(50):
        recording.write_frame(1_700_000_000_000, _frame(n))
    recording.write_frame(1_700_000_000_001, _frame(50))
    recording.close()
    assert [len(_frames_in(path)) for path in recording.files] == [50, 1]


def test_open_file_is_readable_up_to_the_last_frame_when_flushed(tmp_path: Path) -> None:
    """After a flush the unfinished gzip file already decodes to every frame written."""
    recording = RotatingRecording(tmp_path, rotate_max_bytes=10**9, rotate_interval_s=60.0)
    for n in range(5):
        recording.write_frame(1_700_000_000_000 + n, _frame(n))
    recording.flush()
    lines = [item for item in iter_recording(recording.files[0]) if isinstance(item, FrameLine)]
    recording.close()
    assert [line.frame["seq"] for line in lines] == list(range(5))


@pytest.fixture
def _no_trader_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built in a test must not pick up TRADER_* variables of the test run."""
    for key in list(os.environ):
        if key.startswith("TRADER_"):
            monkeypatch.delenv(key)


def _settings(ws_url: str, **recorder: Any) -> Settings:
    return Settings(
        feed=FeedSettings(ws_url=ws_url, symbols=("BTCUSDT", "ETHUSDT"), interval="5"),
        recorder=RecorderSettings(**recorder),
    )


@pytest.mark.usefixtures("_no_trader_env")
async def test_recording_replays_to_the_confirmed_bars_when_the_server_closes_midway(
    tmp_path: Path,
) -> None:
    """Frames recorded across a reconnect replay to the fake's confirmed bars, in order, once."""
    stop = asyncio.Event()
    progress = _Progress()
    backoff = Backoff(base_s=0.01, cap_s=0.02, rng=random.Random(7))
    async with FakeBybit(_BTC + _ETH, start_ms=_BTC[_HISTORY].start_ms) as fake:
        async with asyncio.TaskGroup() as group:
            task = group.create_task(
                record(
                    _settings(fake.ws_url),
                    tmp_path / "out",
                    stop=stop,
                    backoff=backoff,
                    on_event=progress,
                )
            )
            async with asyncio.timeout(_STEP_S):
                await fake.ws.wait_for_requests("subscribe", 2)  # one per topic
            await fake.advance_bars(3)
            await progress.wait_for_bars(6)
            await fake.close_connections()
            async with asyncio.timeout(_STEP_S):
                await progress.reconnected.wait()
            await fake.advance_bars(4)
            await progress.wait_for_bars(14)
            stop.set()
        summary = task.result()
    expected = sorted(_BTC[_HISTORY : _HISTORY + 7] + _ETH[_HISTORY : _HISTORY + 7], key=_order)
    replayed = _replayed_bars(list(summary.files))
    assert [_key(bar) for bar in replayed] == [_key(bar) for bar in expected]
    assert summary.confirmed_bars == 14
    assert summary.reconnects == 1
    assert summary.frames == sum(len(_frames_in(path)) for path in summary.files)


@pytest.mark.usefixtures("_no_trader_env")
async def test_full_disk_ends_record_with_the_write_error_when_close_fails_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails ends the session with that error, not the close failing after it."""

    def full(*_: Any, **__: Any) -> None:
        raise OSError(28, "No space left on device")

    def close_fails(self: RotatingRecording) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(RotatingRecording, "write_frame", full)
    monkeypatch.setattr(RotatingRecording, "close", close_fails)
    async with FakeBybit(_BTC + _ETH, start_ms=_BTC[_HISTORY].start_ms) as fake:
        async with asyncio.timeout(_STEP_S):
            with pytest.raises(FatalError, match="cannot write the recording") as raised:
                await record(_settings(fake.ws_url), tmp_path / "out", stop=asyncio.Event())
    assert isinstance(raised.value.__cause__, OSError)
    assert raised.value.__cause__.errno == 28


def _order(bar: Bar) -> tuple[int, str]:
    return (bar.start_ms, bar.symbol)


@pytest.mark.usefixtures("_no_trader_env")
async def test_record_ends_cleanly_when_stopped_before_the_first_connection(
    tmp_path: Path,
) -> None:
    """A stop while the exchange is unreachable still returns at once, with no file written."""
    stop = asyncio.Event()
    delays: list[float] = []

    class _Backoff(Backoff):
        def next_delay_s(self) -> float:
            delays.append(0.0)
            if len(delays) == 3:
                stop.set()  # the exchange stayed away for three attempts: the operator gives up
            return 0.0

    settings = _settings("ws://127.0.0.1:9/v5/public/linear")
    async with asyncio.timeout(_STEP_S):
        summary = await record(
            settings, tmp_path, stop=stop, backoff=_Backoff(rng=random.Random(7))
        )
    assert summary.files == ()
    assert summary.frames == 0


@pytest.mark.usefixtures("_no_trader_env")
async def test_record_raises_config_error_when_out_is_a_file(tmp_path: Path) -> None:
    """An --out that is an existing file is a configuration error naming the path."""
    target = tmp_path / "taken"
    target.write_text("")
    with pytest.raises(ConfigError, match="taken"):
        await record(_settings("ws://127.0.0.1:9/"), target, stop=asyncio.Event())


def test_rest_bar_lines_carry_their_exchange_time_through_replay(tmp_path: Path) -> None:
    """`trader run --record` writes REST bars with `ts`; replay restores it as `known_ms`."""
    recording = RotatingRecording(tmp_path, rotate_max_bytes=10_000, rotate_interval_s=60.0)
    fetched = dataclasses.replace(_BTC[0], source=BarSource.REST, known_ms=_BTC[3].start_ms)
    recording.write_rest_bar(1_000, fetched)
    recording.write_rest_bar(1_001, dataclasses.replace(_BTC[1], source=BarSource.REST))
    recording.close()

    (path,) = recording.files
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    bars = [item for item in open_source(path) if isinstance(item, Bar)]

    assert lines[0]["ts"] == _BTC[3].start_ms
    assert "ts" not in lines[1]
    assert [(bar.start_ms, bar.source, bar.known_ms) for bar in bars] == [
        (_BTC[0].start_ms, BarSource.REST, _BTC[3].start_ms),
        (_BTC[1].start_ms, BarSource.REST, None),
    ]
    assert bars[0] == fetched

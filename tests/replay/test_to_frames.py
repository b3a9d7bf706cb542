"""Tests for trader.replay.to_frames: candles to Bybit v5 kline push recordings."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.support.candles import load_candles
from trader.domain import Bar, BarSource
from trader.feeds.frames import KlinePush, parse_frame
from trader.replay.recording import FrameLine, iter_recording
from trader.replay.to_frames import candles_to_frames, write_recording

FIXTURES = Path(__file__).parent.parent / "fixtures"
ITEM_KEYS = [
    "start",
    "end",
    "interval",
    "open",
    "close",
    "high",
    "low",
    "volume",
    "turnover",
    "confirm",
    "timestamp",
]


def _bars(count: int = 20, symbol: str = "BTCUSDT") -> list[Bar]:
    return load_candles(FIXTURES / f"{symbol}_5m.csv.gz", symbol, "5")[:count]


def _items(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line["frame"]["data"][0] for line in lines]


def test_pushes_have_bybit_shape_and_types_when_bars_are_converted() -> None:
    """Every line is a linear kline snapshot push with Bybit's field names and JSON types."""
    lines = list(candles_to_frames(_bars(3)))

    for line in lines:
        frame = line["frame"]
        assert list(frame) == ["topic", "data", "ts", "type"]
        assert (frame["topic"], frame["type"]) == ("kline.5.BTCUSDT", "snapshot")
        (item,) = frame["data"]
        assert list(item) == ITEM_KEYS
        assert all(type(item[key]) is int for key in ("start", "end", "timestamp"))
        assert all(type(item[key]) is str for key in ITEM_KEYS[2:9])
        assert type(item["confirm"]) is bool
        assert isinstance(parse_frame(frame), KlinePush)


def test_one_confirm_with_final_values_when_bar_has_updates() -> None:
    """Each bar gives updates_per_bar unconfirmed pushes, then one confirm with exact values."""
    bar = _bars(1)[0]

    items = _items(list(candles_to_frames([bar], updates_per_bar=3)))

    assert [item["confirm"] for item in items] == [False, False, False, True]
    final = items[-1]
    assert [
        float(final[key]) for key in ("open", "high", "low", "close", "volume", "turnover")
    ] == [bar.open, bar.high, bar.low, bar.close, bar.volume, bar.turnover]
    assert (final["start"], final["end"]) == (bar.start_ms, bar.end_ms)


def test_updates_evolve_toward_the_final_bar_when_pushes_are_unconfirmed() -> None:
    """The first push is the open alone; high never falls, low never rises, volume grows."""
    for bar in _bars(50):
        items = _items(list(candles_to_frames([bar], updates_per_bar=4)))
        values = [{key: float(item[key]) for key in ITEM_KEYS[3:9]} for item in items]
        first = values[0]
        assert first["high"] == first["low"] == first["close"] == first["open"] == bar.open
        for before, after in itertools.pairwise(values):
            assert after["high"] >= before["high"]
            assert after["low"] <= before["low"]
            assert after["volume"] >= before["volume"]
            assert after["turnover"] >= before["turnover"]
        for value in values:
            assert bar.low <= value["low"] <= value["close"] <= value["high"] <= bar.high


def test_times_follow_the_exchange_when_frames_are_generated() -> None:
    """Pushes lie inside the bar, the confirm just after its close, recv_ts just after ts."""
    bars = _bars(10)
    lines = list(candles_to_frames(bars))

    recv = [line["recv_ts"] for line in lines]
    assert recv == sorted(recv)
    for line in lines:
        frame = line["frame"]
        item = frame["data"][0]
        assert 0 < line["recv_ts"] - frame["ts"] < 1000
        assert item["start"] <= item["timestamp"] <= frame["ts"]
        if item["confirm"]:
            assert 0 < frame["ts"] - (item["end"] + 1) < 1000
        else:
            assert frame["ts"] <= item["end"]


def test_same_lines_produced_when_seed_is_the_same() -> None:
    """Output is a pure function of bars and seed; another seed changes the updates."""
    bars = _bars(10)

    first = list(candles_to_frames(bars, seed=7))

    assert list(candles_to_frames(bars, seed=7)) == first
    assert list(candles_to_frames(bars, seed=8)) != first


def test_only_confirms_produced_when_updates_per_bar_is_zero() -> None:
    """updates_per_bar=0 gives exactly one confirmed push per bar."""
    items = _items(list(candles_to_frames(_bars(5), updates_per_bar=0)))

    assert [item["confirm"] for item in items] == [True] * 5


def test_value_error_raised_when_updates_per_bar_is_negative() -> None:
    """A negative update count is refused."""
    with pytest.raises(ValueError, match="updates_per_bar"):
        list(candles_to_frames(_bars(1), updates_per_bar=-1))


def test_symbols_interleaved_by_receive_time_when_bars_share_a_start() -> None:
    """Two symbols' bars at the same start produce one receive-ordered stream."""
    btc, eth = _bars(5), _bars(5, "ETHUSDT")
    merged = [bar for pair in zip(btc, eth, strict=True) for bar in pair]

    lines = list(candles_to_frames(merged))

    assert [line["recv_ts"] for line in lines] == sorted(line["recv_ts"] for line in lines)
    assert {line["frame"]["topic"] for line in lines} == {"kline.5.BTCUSDT", "kline.5.ETHUSDT"}


def test_recording_written_when_lines_go_to_a_gzip_file(tmp_path: Path) -> None:
    """write_recording returns the line count and the file reads back as frame lines."""
    lines = list(candles_to_frames(_bars(4)))

    count = write_recording(lines, tmp_path / "frames.jsonl.gz")

    read = list(iter_recording(tmp_path / "frames.jsonl.gz"))
    assert count == len(lines) == len(read) == 12
    assert all(isinstance(line, FrameLine) for line in read)
    assert [line.recv_ms for line in read if isinstance(line, FrameLine)] == [
        line["recv_ts"] for line in lines
    ]


def test_bars_carry_ws_source_when_frames_are_parsed_back() -> None:
    """Bars rebuilt from the frames are websocket bars; only the source label differs."""
    bar = _bars(1)[0]
    assert bar.source is BarSource.REPLAY
    confirm = next(line for line in candles_to_frames([bar]) if line["frame"]["data"][0]["confirm"])

    push = parse_frame(confirm["frame"])

    assert isinstance(push, KlinePush)
    assert push.items[0].close == bar.close

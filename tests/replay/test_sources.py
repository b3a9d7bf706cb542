"""Tests for trader.replay.sources: recordings and candle files as bars and rejections."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.candles import load_candles
from trader.domain import Bar, BarSource
from trader.errors import ConfigError
from trader.replay.rejections import Rejection
from trader.replay.sources import open_source
from trader.replay.to_frames import candles_to_frames, write_recording

FIXTURES = Path(__file__).parent.parent / "fixtures"
FIVE_MIN_MS = 300_000
T0 = 1672324800000
ACK = {"success": True, "ret_msg": "", "conn_id": "c1", "req_id": "", "op": "subscribe"}
PONG = {"success": True, "ret_msg": "pong", "conn_id": "c1", "req_id": "", "op": "ping"}


def _item(
    start_ms: int, *, confirm: bool = True, close: str = "101", **extra: Any
) -> dict[str, Any]:
    item = {
        "start": start_ms,
        "end": start_ms + FIVE_MIN_MS - 1,
        "interval": "5",
        "open": "100",
        "close": close,
        "high": "102",
        "low": "99",
        "volume": "2",
        "turnover": "200",
        "confirm": confirm,
        "timestamp": start_ms + FIVE_MIN_MS - 100,
    }
    item.update(extra)
    return item


def _push(*items: dict[str, Any], symbol: str = "BTCUSDT") -> dict[str, Any]:
    return {
        "topic": f"kline.5.{symbol}",
        "type": "snapshot",
        "ts": items[-1]["start"] + FIVE_MIN_MS + 10,
        "data": list(items),
    }


def _frame_line(frame: Any, recv_ms: int = 1) -> dict[str, Any]:
    return {"recv_ts": recv_ms, "frame": frame}


def _rest_line(start_ms: int, close: str = "101", symbol: str = "BTCUSDT") -> dict[str, Any]:
    bar = {
        "symbol": symbol,
        "interval": "5",
        "start": start_ms,
        "open": "100",
        "high": "102",
        "low": "99",
        "close": close,
        "volume": "2",
        "turnover": "200",
    }
    return {"recv_ts": 1, "source": "rest", "bar": bar}


def _recording(path: Path, lines: list[Any]) -> Path:
    body = b"".join(
        line.encode() + b"\n" if isinstance(line, str) else orjson.dumps(line) + b"\n"
        for line in lines
    )
    path.write_bytes(gzip.compress(body) if path.name.endswith(".gz") else body)
    return path


def _bar(start_ms: int, source: BarSource, close: float = 101.0, symbol: str = "BTCUSDT") -> Bar:
    return Bar(symbol, "5", start_ms, 100.0, 102.0, 99.0, close, 2.0, 200.0, source)


def _summary(items: list[Bar | Rejection]) -> list[Any]:
    return [(item.reason, item.line) if isinstance(item, Rejection) else item for item in items]


@pytest.mark.parametrize("name", ["session.jsonl", "session.jsonl.gz"])
def test_only_confirmed_bars_yielded_when_recording_mixes_protocol_traffic(
    tmp_path: Path, name: str
) -> None:
    """Acks, pongs and unconfirmed pushes yield nothing; each confirm yields one ws bar."""
    path = _recording(
        tmp_path / name,
        [
            _frame_line(ACK),
            _frame_line(_push(_item(T0, confirm=False))),
            _frame_line(PONG),
            _frame_line(_push(_item(T0))),
            _frame_line(_push(_item(T0 + FIVE_MIN_MS, confirm=False))),
        ],
    )

    assert list(open_source(path)) == [_bar(T0, BarSource.WS)]


def test_closing_bar_yielded_when_push_also_opens_the_next(tmp_path: Path) -> None:
    """A data[] with the closing (confirm) and the opening (unconfirmed) bar yields one bar."""
    closing_and_opening = _push(_item(T0), _item(T0 + FIVE_MIN_MS, confirm=False))
    path = _recording(tmp_path / "r.jsonl", [_frame_line(closing_and_opening)])

    assert list(open_source(path)) == [_bar(T0, BarSource.WS)]


def test_rest_bars_yielded_with_rest_source_when_recording_holds_backfill(tmp_path: Path) -> None:
    """REST lines fill the gap after the stream's bar, labelled rest."""
    path = _recording(
        tmp_path / "r.jsonl",
        [
            _frame_line(_push(_item(T0))),
            _rest_line(T0 + FIVE_MIN_MS),
            _frame_line(_push(_item(T0 + 2 * FIVE_MIN_MS))),
        ],
    )

    assert list(open_source(path)) == [
        _bar(T0, BarSource.WS),
        _bar(T0 + FIVE_MIN_MS, BarSource.REST),
        _bar(T0 + 2 * FIVE_MIN_MS, BarSource.WS),
    ]


def test_repeats_rejected_when_confirm_or_rest_bar_arrives_twice(tmp_path: Path) -> None:
    """An identical repeat is a duplicate, a repeat with other values a duplicate_conflict; a
    REST line beats an earlier websocket copy (the daemon records REST bars only when it used
    them), and the bar comes out once the recording ends."""
    path = _recording(
        tmp_path / "r.jsonl",
        [
            _frame_line(_push(_item(T0))),
            _frame_line(_push(_item(T0))),
            _rest_line(T0),
            _rest_line(T0, close="100.5"),
            _frame_line(_push(_item(T0, close="101.5"))),
        ],
    )

    assert _summary(list(open_source(path))) == [
        ("duplicate", 2),
        ("duplicate", 3),
        ("duplicate_conflict", 4),
        ("duplicate_conflict", 5),
        _bar(T0, BarSource.REST),
    ]


def test_rejections_carry_reason_and_line_when_frames_are_bad(tmp_path: Path) -> None:
    """Bad frames become rejections in file order and reading goes on."""
    path = _recording(
        tmp_path / "r.jsonl",
        [
            _frame_line("Failed to decode incoming data"),
            _frame_line({"topic": "tickers.BTCUSDT", "type": "snapshot", "ts": 1, "data": {}}),
            _frame_line(_push(_item(T0, open="nan"))),
            _frame_line(_push(_item(T0, volume=2))),
            "garbage line",
            _frame_line(_push(_item(T0 + 60_000))),
            _frame_line(_push(_item(T0, end=T0 + FIVE_MIN_MS))),
            _frame_line(_push(_item(T0, high="98"))),
            _frame_line(_push(_item(T0, interval="1"))),
            _frame_line(_push(_item(T0 + FIVE_MIN_MS))),
            _frame_line(_push(_item(T0))),
        ],
    )

    assert _summary(list(open_source(path))) == [
        ("unparseable_frame", 1),
        ("unknown_frame", 2),
        ("non_finite", 3),
        ("malformed_kline", 4),
        ("unparseable_line", 5),
        ("misaligned_start", 6),
        ("bad_end", 7),
        ("high_below_low", 8),
        ("interval_mismatch", 9),
        ("out_of_order", 11),
        _bar(T0 + FIVE_MIN_MS, BarSource.WS),
    ]


def test_topics_filtered_independently_when_recording_holds_two_symbols(tmp_path: Path) -> None:
    """Each topic has its own filter, bars come out in start order across topics, and a symbol
    argument keeps only that symbol's bars."""
    path = _recording(
        tmp_path / "r.jsonl",
        [
            _frame_line(_push(_item(T0 + FIVE_MIN_MS))),
            _frame_line(_push(_item(T0), symbol="ETHUSDT")),
            _frame_line(_push(_item(T0 + FIVE_MIN_MS), symbol="ETHUSDT")),
        ],
    )

    both = list(open_source(path))
    eth_only = list(open_source(path, symbol="ethusdt", interval="5m"))

    assert both == [
        _bar(T0, BarSource.WS, symbol="ETHUSDT"),
        _bar(T0 + FIVE_MIN_MS, BarSource.WS),
        _bar(T0 + FIVE_MIN_MS, BarSource.WS, symbol="ETHUSDT"),
    ]
    assert eth_only == [both[0], both[2]]


def test_candle_bars_yielded_when_source_is_a_candle_file() -> None:
    """A .csv.gz source dispatches to the candle reader."""
    items = list(open_source(FIXTURES / "ETHUSDT_5m.csv.gz"))

    assert items == load_candles(FIXTURES / "ETHUSDT_5m.csv.gz", "ETHUSDT", "5")


def test_config_error_raised_when_suffix_is_unknown(tmp_path: Path) -> None:
    """A file that is neither a recording nor a candle file is refused at once."""
    with pytest.raises(ConfigError, match="unknown input type"):
        open_source(tmp_path / "notes.txt")


@pytest.mark.parametrize(
    ("symbol", "name"),
    [("BTCUSDT", "frames.jsonl.gz"), ("ETHUSDT", "frames.jsonl")],
)
def test_original_bars_returned_when_candles_round_trip_through_frames(
    tmp_path: Path, symbol: str, name: str
) -> None:
    """Candles -> to_frames -> recording -> open_source gives exactly the 1,500 original bars."""
    candles = FIXTURES / f"{symbol}_5m.csv.gz"
    original = [item for item in open_source(candles) if isinstance(item, Bar)]
    write_recording(candles_to_frames(original, updates_per_bar=3, seed=5), tmp_path / name)

    replayed = list(open_source(tmp_path / name))

    assert len(replayed) == len(original) == 1500
    assert all(isinstance(bar, Bar) and bar.source is BarSource.WS for bar in replayed)
    assert [
        dataclasses.replace(bar, source=BarSource.REPLAY)
        for bar in replayed
        if isinstance(bar, Bar)
    ] == original


def test_later_bars_kept_when_a_confirm_starts_after_its_push(tmp_path: Path) -> None:
    """A confirm whose bar starts after the frame's ts is bar_after_push; later bars still flow."""
    far = T0 + 100_000 * FIVE_MIN_MS
    forged = _push(_item(T0 + FIVE_MIN_MS)) | {"data": [_item(far)]}
    path = _recording(
        tmp_path / "session.jsonl",
        [
            _frame_line(_push(_item(T0))),
            _frame_line(forged),
            _frame_line(_push(_item(T0 + FIVE_MIN_MS))),
            _frame_line(_push(_item(T0 + 2 * FIVE_MIN_MS))),
        ],
    )

    items = list(open_source(path))

    assert [item.start_ms for item in items if isinstance(item, Bar)] == [
        T0,
        T0 + FIVE_MIN_MS,
        T0 + 2 * FIVE_MIN_MS,
    ]
    assert [(item.reason, item.line) for item in items if isinstance(item, Rejection)] == [
        ("bar_after_push", 2)
    ]

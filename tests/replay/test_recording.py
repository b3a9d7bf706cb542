"""Tests for trader.replay.recording: the recording format's lines, read and written."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pytest

from trader.domain import Bar, BarSource
from trader.replay.recording import (
    FrameLine,
    RecordingWriter,
    RestBarLine,
    format_decimal,
    iter_recording,
)
from trader.replay.rejections import Rejection

PUSH = (
    '{"topic":"kline.5.BTCUSDT","data":[{"start":1672324800000,"end":1672325099999,'
    '"interval":"5","open":"16649.5","close":"16677","high":"16677","low":"16608",'
    '"volume":"2.081","turnover":"34666.4005","confirm":false,"timestamp":1672324988882}],'
    '"ts":1672324988882,"type":"snapshot"}'
)
REST_LINE = (
    '{"recv_ts": 1672325160000, "source": "rest", "bar": {"symbol": "BTCUSDT", "interval": "5",'
    ' "start": 1672324800000, "open": "16649.5", "high": "16690", "low": "16608",'
    ' "close": "16681.5", "volume": "3.512", "turnover": "58497.1305"}}'
)
REST_BAR = RestBarLine(
    1672325160000,
    "BTCUSDT",
    "5",
    1672324800000,
    16649.5,
    16690.0,
    16608.0,
    16681.5,
    3.512,
    58497.1305,
    2,
)


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["session.jsonl", "session.jsonl.gz"])
def test_frames_and_rest_bars_read_when_file_is_plain_or_gzip(tmp_path: Path, name: str) -> None:
    """Frame lines and REST bar lines come back typed, with line numbers, from both encodings."""
    path = _write(tmp_path / name, f'{{"recv_ts": 1672324988900, "frame": {PUSH}}}\n{REST_LINE}\n')

    lines = list(iter_recording(path))

    assert isinstance(lines[0], FrameLine)
    assert (lines[0].recv_ms, lines[0].line) == (1672324988900, 1)
    assert isinstance(lines[0].frame, dict)
    assert lines[0].frame["topic"] == "kline.5.BTCUSDT"
    assert lines[1] == REST_BAR


def test_raw_string_kept_when_recorded_frame_was_not_json(tmp_path: Path) -> None:
    """A frame recorded as a raw string (it was not JSON) is handed on as that string."""
    path = _write(tmp_path / "r.jsonl", '{"recv_ts": 5, "frame": "Failed to decode"}\n')

    assert list(iter_recording(path)) == [FrameLine(5, "Failed to decode", 1)]


def test_blank_lines_skipped_when_file_has_them(tmp_path: Path) -> None:
    """Empty lines (a trailing newline, a hand edit) are not rejections."""
    path = _write(tmp_path / "r.jsonl", '\n{"recv_ts": 5, "frame": "x"}\n\n')

    assert list(iter_recording(path)) == [FrameLine(5, "x", 2)]


@pytest.mark.parametrize(
    "line",
    [
        "not json at all",
        '{"recv_ts": 1, "frame": ',
        "[1, 2, 3]",
        '{"frame": {"op": "ping"}}',
        '{"recv_ts": "1", "frame": {}}',
        '{"recv_ts": true, "frame": {}}',
        '{"recv_ts": 1}',
        '{"recv_ts": 1, "source": "ws", "bar": {}}',
        '{"recv_ts": 1, "source": "rest", "bar": {"symbol": "BTCUSDT", "interval": "5"}}',
        '{"recv_ts": 1, "source": "rest", "bar": {"symbol": "BTCUSDT", "interval": "5",'
        ' "start": 0, "open": "x", "high": "1", "low": "1", "close": "1", "volume": "1",'
        ' "turnover": "1"}}',
        '{"recv_ts": 1, "source": "rest", "bar": {"symbol": "BTCUSDT", "interval": "5",'
        ' "start": 0, "open": true, "high": "1", "low": "1", "close": "1", "volume": "1",'
        ' "turnover": "1"}}',
    ],
)
def test_unparseable_line_yielded_when_line_lacks_the_format(tmp_path: Path, line: str) -> None:
    """A line that is not JSON or lacks recv_ts and a frame or bar is a rejection, not a crash."""
    path = _write(tmp_path / "r.jsonl", f'{line}\n{{"recv_ts": 9, "frame": "x"}}\n')

    first, second = iter_recording(path)

    assert isinstance(first, Rejection)
    assert (first.reason, first.line, first.source) == ("unparseable_line", 1, str(path))
    assert second == FrameLine(9, "x", 2)


def test_rejection_ends_reading_when_gzip_stream_is_truncated(tmp_path: Path) -> None:
    """A gzip file cut short (the recorder crashed) yields its readable lines, then a rejection."""
    path = tmp_path / "r.jsonl.gz"
    body = "".join(f'{{"recv_ts": {n}, "frame": "x"}}\n' for n in range(2000))
    path.write_bytes(gzip.compress(body.encode())[:-40])

    lines = list(iter_recording(path))

    assert isinstance(lines[-1], Rejection)
    assert lines[-1].reason == "unparseable_line"
    assert all(isinstance(line, FrameLine) for line in lines[:-1])


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_lines_read_back_when_written_by_the_writer(tmp_path: Path, name: str) -> None:
    """Frames (JSON or not) and REST bars written by RecordingWriter read back unchanged."""
    bar = Bar(
        "BTCUSDT",
        "5",
        1672324800000,
        16649.5,
        16690.0,
        16608.0,
        16681.5,
        3.512,
        58497.1305,
        BarSource.REST,
    )
    with RecordingWriter(tmp_path / name) as writer:
        writer.write_frame(1672324988900, PUSH)
        writer.write_frame(1672324988950, b"Failed to decode incoming data")
        writer.write_rest_bar(1672325160000, bar)

    lines = list(iter_recording(tmp_path / name))

    assert writer.lines_written == 3
    assert isinstance(lines[0], FrameLine)
    assert lines[0].frame == json.loads(PUSH)
    assert lines[1] == FrameLine(1672324988950, "Failed to decode incoming data", 2)
    assert lines[2] == dataclasses.replace(REST_BAR, line=3)
    is_gzip = (tmp_path / name).read_bytes()[:2] == b"\x1f\x8b"
    assert is_gzip is name.endswith(".gz")


def test_one_line_written_when_frame_text_spans_lines(tmp_path: Path) -> None:
    """A pretty-printed JSON frame is re-serialised so it still takes exactly one line."""
    path = tmp_path / "out.jsonl"
    with RecordingWriter(path) as writer:
        writer.write_frame(1, '{\n  "op": "ping",\n  "ret_msg": "pong"\n}')

    assert path.read_text().count("\n") == 1


def test_file_named_by_first_receive_time_when_target_is_a_directory(tmp_path: Path) -> None:
    """A directory target gets frames-<first recv_ts>.jsonl.gz, created on the first line."""
    writer = RecordingWriter(tmp_path)
    assert writer.path is None

    writer.write_frame(1672324988900, PUSH)
    writer.close()

    assert writer.path == tmp_path / "frames-1672324988900.jsonl.gz"
    assert len(list(iter_recording(writer.path))) == 1


def test_lines_readable_when_gzip_is_flushed_but_not_closed(tmp_path: Path) -> None:
    """After flush, a crash that never closes the file still leaves the lines readable."""
    path = tmp_path / "live.jsonl.gz"
    writer = RecordingWriter(path)
    writer.write_frame(1, PUSH)
    writer.write_frame(2, PUSH)
    writer.flush()

    lines = list(iter_recording(path))
    writer.close()

    assert [line.recv_ms for line in lines if isinstance(line, FrameLine)] == [1, 2]


def test_value_error_raised_when_line_has_no_integer_recv_ts(tmp_path: Path) -> None:
    """write_line refuses a line the reader would reject."""
    with (
        RecordingWriter(tmp_path / "out.jsonl") as writer,
        pytest.raises(ValueError, match="recv_ts"),
    ):
        writer.write_line({"recv_ts": "1", "frame": {}})


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (16677.0, "16677"),
        (16649.5, "16649.5"),
        (0.1, "0.1"),
        (1e16, "10000000000000000"),
        (1e-7, "0.0000001"),
        (0.1 + 0.2, "0.30000000000000004"),
        (0.0, "0"),
    ],
)
def test_decimal_text_reads_back_exactly_when_float_is_formatted(value: float, text: str) -> None:
    """format_decimal writes Bybit-style decimals that parse back to the same float."""
    assert format_decimal(value) == text
    assert float(text) == value

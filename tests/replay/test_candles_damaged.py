"""Tests for trader.replay.candles on damaged files and impossible starts.

A file damaged part-way keeps the rows read before the damage and ends with one counted
``unreadable_file`` rejection; a file unreadable from its first byte is a `ConfigError` naming
it; a row that starts after the wall clock is ``start_in_future`` and spoils nothing after it.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trader.domain import Bar
from trader.errors import ConfigError
from trader.replay.candles import iter_candles
from trader.replay.rejections import Rejection

HEADER = "timestamp,open,high,low,close,volume\n"
START_0 = 1751025900000
STEP_MS = 300_000
#: The wall clock the tests read at: 10,000 bars after START_0, long before 2052.
NOW_MS = START_0 + 10_000 * STEP_MS
ROWS = 2_000


def _rows(count: int, first: int = 0) -> str:
    return "".join(f"{START_0 + (first + k) * STEP_MS},100,101,99,100.5,10\n" for k in range(count))


def _split(items: list[Bar | Rejection]) -> tuple[list[Bar], list[Rejection]]:
    bars = [item for item in items if isinstance(item, Bar)]
    return bars, [item for item in items if isinstance(item, Rejection)]


def test_rows_before_the_cut_kept_when_gzip_is_truncated(tmp_path: Path) -> None:
    """A .csv.gz cut in half yields its readable rows, then one unreadable_file naming the file."""
    whole = gzip.compress((HEADER + _rows(ROWS)).encode())
    path = tmp_path / "BTCUSDT_5m.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])

    bars, rejections = _split(list(iter_candles(path, now_ms=NOW_MS)))

    assert 0 < len(bars) < ROWS
    assert [bar.start_ms for bar in bars] == [START_0 + k * STEP_MS for k in range(len(bars))]
    assert [(r.reason, r.source, r.symbol) for r in rejections] == [
        ("unreadable_file", str(path), "BTCUSDT")
    ]
    assert "EOFError" in rejections[0].detail


def test_rows_kept_and_one_rejection_when_gzip_fails_its_crc(tmp_path: Path) -> None:
    """A .csv.gz whose CRC is wrong gives its rows and one unreadable_file rejection."""
    whole = gzip.compress((HEADER + _rows(ROWS)).encode())
    path = tmp_path / "BTCUSDT_5m.csv.gz"
    path.write_bytes(whole[:-8] + b"\0" * 8)

    bars, rejections = _split(list(iter_candles(path, now_ms=NOW_MS)))

    assert len(bars) == ROWS
    assert [r.reason for r in rejections] == ["unreadable_file"]
    assert "BadGzipFile" in rejections[0].detail


def test_only_its_row_rejected_when_a_byte_is_not_utf8(tmp_path: Path) -> None:
    """A Latin-1 byte in one row makes that row unparseable_row; the rows after it are read."""
    text = HEADER + _rows(1) + f"{START_0 + STEP_MS},100,101,99,100.5,10\xe9\n" + _rows(3, 2)
    path = tmp_path / "BTCUSDT_5m.csv"
    path.write_bytes(text.encode("latin-1"))

    items = list(iter_candles(path, now_ms=NOW_MS))

    bars, rejections = _split(items)
    assert len(bars) == 4
    assert [(r.reason, r.line) for r in rejections] == [("unparseable_row", 3)]


def test_config_error_names_the_file_when_gzip_is_unreadable_from_the_start(
    tmp_path: Path,
) -> None:
    """A .csv.gz cut inside its gzip header cannot be read at all: ConfigError with its path."""
    path = tmp_path / "BTCUSDT_5m.csv.gz"
    path.write_bytes(gzip.compress((HEADER + _rows(10)).encode())[:12])

    with pytest.raises(ConfigError, match=r"BTCUSDT_5m\.csv\.gz: cannot read the file"):
        list(iter_candles(path, now_ms=NOW_MS))


def test_config_error_names_the_file_when_parquet_is_not_parquet(tmp_path: Path) -> None:
    """A .parquet that is no Parquet file is a ConfigError naming it, not an ArrowInvalid."""
    path = tmp_path / "BTCUSDT_5m.parquet"
    path.write_bytes(b"not a parquet file at all")

    with pytest.raises(ConfigError, match=r"BTCUSDT_5m\.parquet: cannot read the file"):
        list(iter_candles(path, now_ms=NOW_MS))


def test_row_groups_before_the_damage_kept_when_a_parquet_page_is_corrupt(
    tmp_path: Path,
) -> None:
    """A corrupt page in the third row group keeps the first two and adds one unreadable_file."""
    count = 3_000
    table = pa.table(
        {
            "timestamp": [START_0 + k * STEP_MS for k in range(count)],
            "open": [100.0] * count,
            "high": [101.0] * count,
            "low": [99.0] * count,
            "close": [100.5] * count,
            "volume": [10.0] * count,
        }
    )
    path = tmp_path / "BTCUSDT_5m.parquet"
    pq.write_table(table, path, row_group_size=1_000, compression="none")
    offset = pq.ParquetFile(path).metadata.row_group(2).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))

    bars, rejections = _split(list(iter_candles(path, now_ms=NOW_MS)))

    assert len(bars) == 2_000
    assert [(r.reason, r.line, r.source) for r in rejections] == [
        ("unreadable_file", 2_001, str(path))
    ]
    assert "\n" not in rejections[0].detail


def test_later_rows_kept_when_one_row_starts_in_the_future(tmp_path: Path) -> None:
    """A typo'd 2052 row is start_in_future and does not turn the valid rows after it away."""
    future = "2052-06-27 12:10:00+00:00,100,101,99,100.5,10\n"
    path = tmp_path / "BTCUSDT_5m.csv"
    path.write_text(HEADER + _rows(5) + future + _rows(5, 5), encoding="utf-8")

    items = list(iter_candles(path, now_ms=NOW_MS))

    bars, rejections = _split(items)
    assert [bar.start_ms for bar in bars] == [START_0 + k * STEP_MS for k in range(10)]
    assert [(r.reason, r.line) for r in rejections] == [("start_in_future", 7)]


def test_wall_clock_bounds_starts_when_no_clock_is_given(tmp_path: Path) -> None:
    """Without `now_ms` the clock at call time is the bound: a 2052 row is still rejected."""
    future = "2052-06-27 12:10:00+00:00,100,101,99,100.5,10\n"
    path = tmp_path / "BTCUSDT_5m.csv"
    path.write_text(HEADER + _rows(2) + future + _rows(1, 2), encoding="utf-8")

    reasons = [getattr(item, "reason", "bar") for item in iter_candles(path)]

    assert reasons == ["bar", "bar", "start_in_future", "bar"]

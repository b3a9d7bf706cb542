"""Tests for trader.replay.candles: candle files to validated replay bars."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.candles import load_candles
from trader.domain import Bar, BarSource
from trader.errors import ConfigError
from trader.replay.candles import iter_candles, parse_interval
from trader.replay.rejections import Rejection

FIXTURES = Path(__file__).parent.parent / "fixtures"
HEADER = "timestamp,open,high,low,close,volume\n"
ROW_0 = "2025-06-27 12:05:00+00:00,100.0,102.0,99.0,101.0,2.0\n"
ROW_1 = "2025-06-27 12:10:00+00:00,101.0,103.0,100.0,102.0,3.0\n"
START_0 = 1751025900000


def _csv(path: Path, text: str) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _reasons(items: list[Bar | Rejection]) -> list[str]:
    return [item.reason if isinstance(item, Rejection) else "bar" for item in items]


def test_fixture_bars_match_an_independent_reader_when_file_is_real_bybit_data() -> None:
    """The 1,500 BTCUSDT fixture rows come back exactly as the test-support reader loads them."""
    path = FIXTURES / "BTCUSDT_5m.csv.gz"

    items = list(iter_candles(path))

    assert items == load_candles(path, "BTCUSDT", "5")
    assert len(items) == 1500


def test_turnover_stands_in_as_volume_times_close_when_column_is_absent(tmp_path: Path) -> None:
    """Without a turnover column each bar's turnover is volume * close, source replay."""
    (bar,) = iter_candles(_csv(tmp_path / "BTCUSDT_5m.csv", HEADER + ROW_0))

    assert bar == Bar(
        "BTCUSDT", "5", START_0, 100.0, 102.0, 99.0, 101.0, 2.0, 202.0, BarSource.REPLAY
    )


def test_columns_found_by_name_when_order_differs_and_turnover_and_epoch_ms_given(
    tmp_path: Path,
) -> None:
    """Columns are matched by name; epoch-ms timestamps and a turnover column are used as is."""
    text = f"Close,turnover,open,high,low,volume,timestamp\n101,250.5,100,102,99,2,{START_0}\n"

    (bar,) = iter_candles(_csv(tmp_path / "ETHUSDT_5m.csv", text))

    assert (bar.symbol, bar.start_ms, bar.close, bar.turnover) == ("ETHUSDT", START_0, 101.0, 250.5)


@pytest.mark.parametrize("name", ["BTCUSDT_5m.csv", "BTCUSDT_5m.csv.gz"])
def test_same_bars_read_when_file_is_plain_or_gzip(tmp_path: Path, name: str) -> None:
    """Plain and gzip CSV (detected by content) give the same bars."""
    items = list(iter_candles(_csv(tmp_path / name, HEADER + ROW_0 + ROW_1)))

    assert [bar.start_ms for bar in items if isinstance(bar, Bar)] == [START_0, START_0 + 300_000]


def test_same_bars_read_when_file_is_parquet(tmp_path: Path) -> None:
    """Parquet with a UTC timestamp column gives the same bars as the CSV fixture."""
    bars = load_candles(FIXTURES / "ETHUSDT_5m.csv.gz", "ETHUSDT", "5")[:50]
    table = pa.table(
        {
            "timestamp": pa.array([bar.start_ms for bar in bars], pa.timestamp("ms", "UTC")),
            "open": [bar.open for bar in bars],
            "high": [bar.high for bar in bars],
            "low": [bar.low for bar in bars],
            "close": [bar.close for bar in bars],
            "volume": [bar.volume for bar in bars],
        }
    )
    pq.write_table(table, tmp_path / "ETHUSDT_5m.parquet")

    assert list(iter_candles(tmp_path / "ETHUSDT_5m.parquet")) == bars


def test_rejection_line_counts_rows_when_parquet_holds_bad_values(tmp_path: Path) -> None:
    """A null and a crossed row in Parquet are rejected with their 1-based row numbers."""
    table = pa.table(
        {
            "timestamp": [START_0, START_0 + 300_000, START_0 + 600_000],
            "open": [100.0, None, 100.0],
            "high": [102.0, 102.0, 98.0],
            "low": [99.0, 99.0, 99.0],
            "close": [101.0, 101.0, 101.0],
            "volume": [2.0, 2.0, 2.0],
        }
    )
    pq.write_table(table, tmp_path / "BTCUSDT_5m.parquet")

    items = list(iter_candles(tmp_path / "BTCUSDT_5m.parquet"))

    assert [(_reasons([item])[0], getattr(item, "line", None)) for item in items] == [
        ("bar", None),
        ("unparseable_row", 2),
        ("high_below_low", 3),
    ]


@pytest.mark.parametrize(
    ("name", "interval"),
    [
        ("BTCUSDT_5m.csv.gz", "5"),
        ("BTCUSDT_1m.csv", "1"),
        ("BTCUSDT_15m.csv", "15"),
        ("BTCUSDT_60m.csv", "60"),
        ("BTCUSDT_1h.csv", "60"),
        ("BTCUSDT_4h.parquet", "240"),
        ("BTCUSDT_1d.csv", "D"),
        ("BTCUSDT_D.csv", "D"),
        ("BTCUSDT_5.csv", "5"),
        ("BTCUSDT_5m_2025.csv", "5"),
    ],
)
def test_interval_taken_from_name_when_file_name_carries_it(
    tmp_path: Path, name: str, interval: str
) -> None:
    """The file-name suffix (5m, 1h, 4h, 1d, D) becomes the Bybit interval code."""
    day_row = "2025-06-27 00:00:00+00:00,100,102,99,101,2\n"
    path = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(
            pa.table(
                {
                    "timestamp": ["2025-06-27 00:00:00+00:00"],
                    "open": [100.0],
                    "high": [102.0],
                    "low": [99.0],
                    "close": [101.0],
                    "volume": [2.0],
                }
            ),
            path,
        )
    else:
        _csv(path, HEADER + day_row)

    (bar,) = iter_candles(path)

    assert isinstance(bar, Bar)
    assert (bar.symbol, bar.interval) == ("BTCUSDT", interval)


def test_explicit_series_used_when_file_name_lacks_it(tmp_path: Path) -> None:
    """--symbol and --interval name the series of a file called e.g. candles.csv."""
    path = _csv(tmp_path / "candles.csv", HEADER + ROW_0)

    (bar,) = iter_candles(path, symbol="solusdt", interval="5m")

    assert isinstance(bar, Bar)
    assert (bar.symbol, bar.interval) == ("SOLUSDT", "5")


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("candles.csv", {}, "cannot tell the symbol"),
        ("candles.csv", {"symbol": "BTCUSDT"}, "cannot tell the interval"),
        ("BTCUSDT_7m.csv", {}, "cannot tell the interval"),
        ("BTCUSDT_5m.csv", {"interval": "15"}, "contradicts"),
        ("BTCUSDT_5m.csv", {"symbol": "ETHUSDT"}, "contradicts"),
        ("BTCUSDT_5m.csv", {"interval": "7"}, "unknown interval"),
        ("BTCUSDT_5m.txt", {}, "not a candle file"),
    ],
)
def test_config_error_names_the_file_when_series_cannot_be_determined(
    tmp_path: Path, name: str, kwargs: dict[str, str], message: str
) -> None:
    """An unknown or contradictory symbol/interval, or file type, fails at once naming the file."""
    path = _csv(tmp_path / name, HEADER + ROW_0)

    with pytest.raises(ConfigError, match=message) as caught:
        iter_candles(path, **kwargs)

    assert str(path) in str(caught.value)


def test_config_error_raised_when_a_required_column_is_missing(tmp_path: Path) -> None:
    """A header without volume fails on first read, naming the file and the column."""
    path = _csv(tmp_path / "BTCUSDT_5m.csv", "timestamp,open,high,low,close\n1,2,3,1,2\n")

    with pytest.raises(ConfigError, match="volume"):
        list(iter_candles(path))


def test_nothing_yielded_when_file_is_empty(tmp_path: Path) -> None:
    """An empty file or a header alone is an empty series, not an error."""
    assert list(iter_candles(_csv(tmp_path / "BTCUSDT_5m.csv", ""))) == []
    assert list(iter_candles(_csv(tmp_path / "ETHUSDT_5m.csv", HEADER))) == []


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ("2025-06-27 12:10:00+00:00,nan,103,100,102,3\n", "non_finite"),
        ("2025-06-27 12:10:00+00:00,101,inf,100,102,3\n", "non_finite"),
        ("2025-06-27 12:10:00+00:00,101,103,100,102,-inf\n", "non_finite"),
        ("2025-06-27 12:10:00+00:00,0,103,0,102,3\n", "non_positive_price"),
        ("2025-06-27 12:10:00+00:00,-1,103,-2,-1,3\n", "non_positive_price"),
        ("2025-06-27 12:10:00+00:00,101,103,100,102,-3\n", "negative_volume"),
        ("2025-06-27 12:10:00+00:00,101,99,100,100,3\n", "high_below_low"),
        ("2025-06-27 12:10:00+00:00,104,103,100,102,3\n", "open_outside_range"),
        ("2025-06-27 12:10:00+00:00,101,103,100,99.5,3\n", "close_outside_range"),
        ("2025-06-27 12:11:00+00:00,101,103,100,102,3\n", "misaligned_start"),
        ("2025-06-27 12:00:00+00:00,101,103,100,102,3\n", "out_of_order"),
        (ROW_0, "duplicate"),
        ("2025-06-27 12:05:00+00:00,100.0,102.0,99.0,101.5,2.0\n", "duplicate_conflict"),
        ("2025-06-27 12:10:00+00:00,101,103,100,102\n", "unparseable_row"),
        ("2025-06-27 12:10:00+00:00,abc,103,100,102,3\n", "unparseable_row"),
        ("2025-06-27 12:10:00+00:00,,103,100,102,3\n", "unparseable_row"),
        ("yesterday,101,103,100,102,3\n", "unparseable_row"),
        ("1751.5,101,103,100,102,3\n", "unparseable_row"),
    ],
)
def test_rejection_yielded_when_a_row_is_bad(tmp_path: Path, rows: str, reason: str) -> None:
    """Each bad row after a good one is a rejection with its reason, line and symbol."""
    path = _csv(
        tmp_path / "BTCUSDT_5m.csv", HEADER + ROW_0 + rows + ROW_1.replace("12:10", "12:15")
    )

    items = list(iter_candles(path))

    assert _reasons(items) == ["bar", reason, "bar"]
    rejection = items[1]
    assert isinstance(rejection, Rejection)
    assert (rejection.line, rejection.symbol, rejection.source) == (3, "BTCUSDT", str(path))


def test_first_row_kept_when_a_start_repeats_with_other_values(tmp_path: Path) -> None:
    """On a duplicate_conflict the first row read is the bar; the later one is rejected."""
    conflict = ROW_0.replace("101.0,2.0", "101.5,2.0")
    items = list(iter_candles(_csv(tmp_path / "BTCUSDT_5m.csv", HEADER + ROW_0 + conflict)))

    assert isinstance(items[0], Bar)
    assert items[0].close == 101.0


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("5", "5"),
        ("5m", "5"),
        ("1h", "60"),
        ("60m", "60"),
        ("4h", "240"),
        ("720m", "720"),
        ("1d", "D"),
        ("D", "D"),
        ("7m", None),
        ("2d", None),
        ("W", None),
        ("", None),
        ("m", None),
    ],
)
def test_bybit_code_returned_when_interval_text_is_parsed(text: str, code: str | None) -> None:
    """parse_interval maps human and file-name spellings to contract codes, else None."""
    assert parse_interval(text) == code

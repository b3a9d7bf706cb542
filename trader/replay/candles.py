"""Candle files (CSV, CSV.GZ, Parquet) as a stream of validated replay bars.

Owns the candle-file half of CONTRACT.md "Recording format": columns ``timestamp`` (ISO-8601
or epoch ms, bar start, UTC), ``open``, ``high``, ``low``, ``close``, ``volume`` and optionally
``turnover``; symbol and interval from a file name like ``BTCUSDT_5m.csv.gz`` or from explicit
arguments. Each row becomes a `Bar` (source ``replay``) or a `Rejection`:

    unparseable_row      a missing, empty or non-numeric field (a byte that is not UTF-8
                         included), or a bad timestamp
    start_in_future      a row whose start lies after the wall clock at read time (a typo'd
                         year would otherwise make every later row ``out_of_order``)
    out_of_order         a row older than the last accepted one
    duplicate            a repeat of the last accepted row with the same values
    duplicate_conflict   a repeat of the last accepted start with different values
    unreadable_file      the file broke off part-way (see below); one per file
    (every `validate_bar` reason)

When a start repeats, the first row read wins: bars stream out as they are read.

A file damaged part-way (a ``.csv.gz`` cut short or failing its CRC, a corrupt Parquet page)
keeps the rows read before the damage and ends with one ``unreadable_file`` rejection naming
the file; the rest of it is skipped. A file that cannot be opened or read from its first byte
raises `ConfigError` naming the file, like every other file-level problem.

It reads lazily (one row at a time; Parquet one record batch at a time) with the `csv` module
rather than pandas, because replay throughput is bounded by this loop. It must not merge
series or know about the engine.
"""

from __future__ import annotations

import csv
import gzip
import re
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from trader.domain import INTERVAL_MS, Bar, BarSource
from trader.errors import ConfigError, DataError
from trader.feeds.confirmed import same_candle
from trader.feeds.validation import validate_bar
from trader.replay.recording import is_gzip
from trader.replay.rejections import Rejection

_REQUIRED = ("timestamp", "open", "high", "low", "close", "volume")
_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
#: ``SYMBOL_<interval>`` at the start of a file name, e.g. BTCUSDT_5m.csv.gz, ETHUSDT_1h.parquet.
_NAME_RE = re.compile(r"^(?P<symbol>[A-Za-z0-9]+)_(?P<interval>\d+[mhd]?|D)(?=[._-]|$)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_PARQUET_BATCH_ROWS = 65_536
#: What reading a damaged file raises: a gzip stream cut short (EOFError) or corrupt
#: (BadGzipFile, an OSError; zlib.error), any other I/O error, and the csv module's own errors
#: (a field past its size limit).
_READ_ERRORS = (EOFError, OSError, zlib.error, csv.Error)


def iter_candles(
    path: str | Path,
    *,
    symbol: str | None = None,
    interval: str | None = None,
    now_ms: int | None = None,
) -> Iterator[Bar | Rejection]:
    """Stream the bars of one candle file, with a rejection for each bad row.

    Args:
        path: A ``.csv``, ``.csv.gz`` or ``.parquet`` file.
        symbol: The symbol; required unless the file name carries it.
        interval: The interval (Bybit code like ``"5"`` or ``"D"``, or ``"5m"``/``"1h"``/``"1d"``);
            required unless the file name carries it.
        now_ms: The wall clock (epoch ms) rows may not start after; None takes it at call
            time. A recorded candle cannot start after the moment it is read.

    Returns:
        A lazy iterator of bars in start order and rejections, in file order.

    Raises:
        ConfigError: at call time when the file type is unsupported, or symbol or interval can
            be neither derived from the name nor taken from the arguments, or they contradict
            the name; on first iteration when required columns are missing or the file cannot
            be opened or read from its first byte.
    """
    path = Path(path)
    symbol, interval = resolve_series(path, symbol=symbol, interval=interval)
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    series = _Series(symbol, interval, str(path), now_ms)
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        return _iter_csv(path, series)
    if name.endswith(_PARQUET_SUFFIXES):
        return _iter_parquet(path, series)
    raise ConfigError(f"{path}: not a candle file (expected .csv, .csv.gz or .parquet)")


def parse_interval(text: str) -> str | None:
    """Translate an interval as written in file names or by people into a Bybit code.

    ``"5"``/``"5m"`` -> ``"5"``, ``"60m"``/``"1h"`` -> ``"60"``, ``"4h"`` -> ``"240"``,
    ``"1d"``/``"D"`` -> ``"D"``.

    Returns:
        The Bybit code, or None when `text` names no interval the contract supports.
    """
    if text in ("D", "1d", "1D"):
        return "D"
    unit = text[-1:]
    digits = text[:-1] if unit in ("m", "h") else text
    if not digits.isdigit():
        return None
    minutes = int(digits) * (60 if unit == "h" else 1)
    code = str(minutes)
    return code if code in INTERVAL_MS else None


def resolve_series(
    path: Path, *, symbol: str | None = None, interval: str | None = None
) -> tuple[str, str]:
    """Work out a candle file's symbol and Bybit interval code.

    Raises:
        ConfigError: either is unknown, or an argument contradicts the file name.
    """
    match = _NAME_RE.match(path.name)
    name_symbol = match["symbol"].upper() if match else None
    name_interval = parse_interval(match["interval"]) if match else None
    if interval is not None:
        code = parse_interval(interval)
        if code is None:
            known = ", ".join(INTERVAL_MS)
            raise ConfigError(
                f"{path}: unknown interval {interval!r} (use {known})", key="interval"
            )
        if name_interval is not None and code != name_interval:
            raise ConfigError(
                f"{path}: interval {interval!r} contradicts the file name ({name_interval})",
                key="interval",
            )
        name_interval = code
    if symbol is not None:
        if name_symbol is not None and symbol.upper() != name_symbol:
            raise ConfigError(
                f"{path}: symbol {symbol!r} contradicts the file name ({name_symbol})", key="symbol"
            )
        name_symbol = symbol.upper()
    if name_symbol is None or name_interval is None:
        missing = "symbol" if name_symbol is None else "interval"
        raise ConfigError(
            f"{path}: cannot tell the {missing} from the file name (expected e.g. "
            f"BTCUSDT_5m.csv.gz); pass --{missing}",
            key=missing,
        )
    return name_symbol, name_interval


@dataclass(frozen=True, slots=True)
class _Series:
    """What every row of one file shares: its series, its name and the clock it is read at."""

    symbol: str
    interval: str
    source: str
    now_ms: int


def _iter_csv(path: Path, series: _Series) -> Iterator[Bar | Rejection]:
    try:
        handle = _open_text(path)
    except _READ_ERRORS as exc:
        raise _cannot_read(path, exc) from exc
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
        except _READ_ERRORS as exc:
            raise _cannot_read(path, exc) from exc
        if header is None:
            return
        columns = _column_indexes(path, header)
        try:
            yield from _rows_to_bars(reader, columns, series, first_line=2)
        except _READ_ERRORS as exc:
            # The rows before the damage were yielded; the rest of the file is lost.
            yield _unreadable(series, exc, reader.line_num, "line")


def _open_text(path: Path) -> IO[str]:
    # utf-8-sig: spreadsheet exports often start with a byte-order mark before "timestamp".
    # errors="replace": a byte that is not UTF-8 spoils its own row (it cannot parse as a
    # number or a time, so the row is `unparseable_row`), not the rest of the file.
    if is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace", newline="")
    return path.open(encoding="utf-8-sig", errors="replace", newline="")


def _iter_parquet(path: Path, series: _Series) -> Iterator[Bar | Rejection]:
    # Imported here: pyarrow is heavy and only Parquet input needs it.
    import pyarrow as pa
    import pyarrow.parquet as pq

    read_errors = (*_READ_ERRORS, pa.ArrowException)
    try:
        parquet = pq.ParquetFile(path)
    except read_errors as exc:
        raise _cannot_read(path, exc) from exc
    with parquet:
        try:
            names = list(parquet.schema_arrow.names)
        except read_errors as exc:
            raise _cannot_read(path, exc) from exc
        columns = _column_indexes(path, names)
        wanted = [names[index] for index in columns.indexes()]
        # One row stream over all record batches, so order checks span batch boundaries.
        rows_read = [0]
        # Row group by row group: a batch never spans two, so a damaged group costs only
        # itself and what follows it.
        batches = (
            batch
            for group in range(parquet.num_row_groups)
            for batch in parquet.iter_batches(
                batch_size=_PARQUET_BATCH_ROWS, row_groups=[group], columns=wanted
            )
        )
        try:
            yield from _rows_to_bars(
                _parquet_rows(batches, rows_read), columns.renumbered(), series, first_line=1
            )
        except read_errors as exc:
            yield _unreadable(series, exc, rows_read[0], "row")


def _unreadable(series: _Series, exc: BaseException, read: int, unit: str) -> Rejection:
    """The one rejection for a file that broke off after `read` lines (CSV) or rows (Parquet)."""
    detail = f"reading stopped after {unit} {read}, the rest is skipped: {_describe(exc)}"
    return Rejection("unreadable_file", detail, series.symbol, series.source, read + 1)


def _cannot_read(path: Path, exc: BaseException) -> ConfigError:
    """The error for a file that cannot be opened or read from its first byte."""
    return ConfigError(f"{path}: cannot read the file: {_describe(exc)}", key="SOURCE")


def _describe(exc: BaseException) -> str:
    """One line: the exception's type and its message (Arrow's span several lines)."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _parquet_rows(batches: Iterable[Any], rows_read: list[int]) -> Iterator[tuple[Any, ...]]:
    """Rows of Python values from Arrow record batches, one batch in memory at a time.

    `rows_read[0]` counts the rows of the batches decoded so far (where a damaged page was met).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    for batch in batches:
        arrays = []
        for array in batch.columns:
            if pa.types.is_timestamp(array.type):
                # Timestamps become epoch ms; naive ones are UTC by the contract.
                as_ms = pc.cast(array, pa.timestamp("ms", array.type.tz), safe=False)
                array = pc.cast(as_ms, pa.int64())
            arrays.append(array.to_pylist())
        yield from zip(*arrays, strict=True)
        rows_read[0] += batch.num_rows


@dataclass(frozen=True, slots=True)
class _Columns:
    """Where each field sits in a row; turnover is optional."""

    timestamp: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    turnover: int | None

    def indexes(self) -> list[int]:
        """The positions present, in file order (the columns to read from Parquet)."""
        fields = (self.timestamp, self.open, self.high, self.low, self.close, self.volume)
        return sorted((*fields, *(() if self.turnover is None else (self.turnover,))))

    def renumbered(self) -> _Columns:
        """The same columns once only `indexes()` were read, in that order."""
        rank = {index: position for position, index in enumerate(self.indexes())}
        return _Columns(
            rank[self.timestamp],
            rank[self.open],
            rank[self.high],
            rank[self.low],
            rank[self.close],
            rank[self.volume],
            None if self.turnover is None else rank[self.turnover],
        )


def _column_indexes(path: Path, header: Sequence[str]) -> _Columns:
    """Find the columns by name (case and surrounding spaces ignored).

    Raises:
        ConfigError: a required column is missing.
    """
    positions = {name.strip().lower(): index for index, name in enumerate(header)}
    missing = [name for name in _REQUIRED if name not in positions]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; header is {header}")
    return _Columns(
        timestamp=positions["timestamp"],
        open=positions["open"],
        high=positions["high"],
        low=positions["low"],
        close=positions["close"],
        volume=positions["volume"],
        turnover=positions.get("turnover"),
    )


def _rows_to_bars(
    rows: Iterable[Sequence[Any]], columns: _Columns, series: _Series, first_line: int
) -> Iterator[Bar | Rejection]:
    """The hot loop: parse, validate and order-check each row."""
    i_ts, i_open, i_high, i_low = columns.timestamp, columns.open, columns.high, columns.low
    i_close, i_volume, i_turnover = columns.close, columns.volume, columns.turnover
    symbol, interval, source, now_ms = series.symbol, series.interval, series.source, series.now_ms
    timestamp_ms = _timestamp_ms
    replay = BarSource.REPLAY
    last: Bar | None = None
    for line, row in enumerate(rows, start=first_line):
        try:
            start_ms = timestamp_ms(row[i_ts])
            close = float(row[i_close])
            volume = float(row[i_volume])
            # No turnover column: volume * close stands in for it (quote value at the close
            # price). It is not the exchange's turnover, which sums price * qty per trade.
            turnover = volume * close if i_turnover is None else float(row[i_turnover])
            bar = validate_bar(
                symbol,
                interval,
                start_ms,
                float(row[i_open]),
                float(row[i_high]),
                float(row[i_low]),
                close,
                volume,
                turnover,
                end_ms=None,
                source=replay,
            )
        except DataError as exc:
            yield Rejection.from_error(exc, source=source, line=line, symbol=symbol)
            continue
        except (ValueError, TypeError, IndexError, OverflowError) as exc:
            yield Rejection("unparseable_row", f"{exc}: {row!r}", symbol, source, line)
            continue
        if start_ms > now_ms:
            # Checked before the order rule: a typo'd far-future row must not become `last`
            # and turn every later valid row into `out_of_order`.
            detail = f"start={start_ms} is after the clock at read time ({now_ms})"
            yield Rejection("start_in_future", detail, symbol, source, line)
            continue
        if last is not None and start_ms <= last.start_ms:
            yield _repeat_rejection(last, bar, source, line)
            continue
        last = bar
        yield bar


def _repeat_rejection(last: Bar, bar: Bar, source: str, line: int) -> Rejection:
    """Classify a row whose start is not after the last accepted one."""
    if bar.start_ms < last.start_ms:
        reason, detail = "out_of_order", f"start={bar.start_ms} after start={last.start_ms}"
    elif same_candle(last, bar):
        reason, detail = "duplicate", f"start={bar.start_ms} repeated"
    else:
        reason, detail = "duplicate_conflict", f"start={bar.start_ms}: {last!r} vs {bar!r}"
    return Rejection(reason, detail, bar.symbol, source, line)


def _timestamp_ms(value: object) -> int:
    """Bar start as epoch ms, from ISO-8601 text, epoch-ms digits, or an integer (Parquet)."""
    if type(value) is int:
        return value
    if not isinstance(value, str):
        raise TypeError(f"timestamp {value!r} is neither text nor an integer")
    if value.isdigit():
        return int(value)
    # datetime.fromisoformat is C code and faster than slicing the text by hand.
    return _iso_ms(value)


def _iso_ms(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        # The contract says bar starts are UTC; a naive timestamp is read as such.
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_MS

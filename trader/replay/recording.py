"""The recording format (CONTRACT.md "Recording format"): reading and writing its lines.

A recording is JSON Lines, optionally gzip-compressed, one line per received websocket text
frame, ``{"recv_ts": <ms>, "frame": <parsed JSON, or the raw string when not JSON>}``, plus
REST-backfilled bars as ``{"recv_ts": <ms>, "source": "rest", "ts": <exchange ms>, "bar": {...}}``
(``ts``, the exchange time of the fetch, is optional; it decides whether the bar was too stale
to trade on, exactly as it did live).

Owns the line-level structure only: `iter_recording` turns lines into `FrameLine` /
`RestBarLine` values (or ``unparseable_line`` rejections, never an exception) and
`RecordingWriter` appends lines. It must not interpret frames: replay hands `FrameLine.frame`
to the same `parse_frame` the live feed uses, so recorded and live input take one path.
The writer does blocking file I/O; the live recorder must call it off the event loop.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from trader.domain import Bar
from trader.replay.rejections import Rejection

_GZIP_MAGIC = b"\x1f\x8b"
#: zlib level for written recordings: 6 is zlib's default balance; 9 costs far more CPU.
_COMPRESS_LEVEL = 6
_PRICE_FIELDS = ("open", "high", "low", "close", "volume", "turnover")


@dataclass(frozen=True, slots=True)
class FrameLine:
    """A recorded websocket frame.

    Attributes:
        recv_ms: When the frame was received (local clock, epoch ms).
        frame: The frame's JSON object, or its text when it was not a JSON object (then
            `parse_frame` rejects it exactly as it did live).
        line: 1-based line number in the file.
    """

    recv_ms: int
    frame: dict[str, Any] | str
    line: int


@dataclass(frozen=True, slots=True)
class RestBarLine:
    """A bar the live session fetched over REST, typed but not yet validated."""

    recv_ms: int
    symbol: str
    interval: str
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float
    line: int
    known_ms: int | None = None


RecordingLine = FrameLine | RestBarLine


def is_gzip(path: Path) -> bool:
    """Tell whether a file is gzip-compressed, by its magic bytes rather than its name."""
    with path.open("rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


def open_lines(path: Path) -> io.BufferedIOBase:
    """Open a plain or gzip file for reading bytes."""
    if is_gzip(path):
        return gzip.open(path, "rb")
    return path.open("rb")


def iter_recording(path: str | Path) -> Iterator[RecordingLine | Rejection]:
    """Read a recording lazily, line by line.

    Blank lines are skipped. A line that is not JSON, or lacks ``recv_ts`` and a frame or bar,
    yields an ``unparseable_line`` rejection; a gzip stream cut short (a recorder that crashed)
    yields one final ``unparseable_line`` rejection after the lines that could be read.

    Args:
        path: A ``.jsonl`` or ``.jsonl.gz`` file.

    Yields:
        One `FrameLine`, `RestBarLine` or `Rejection` per non-blank line.
    """
    path = Path(path)
    name = str(path)
    number = 0
    with open_lines(path) as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                if raw.isspace():
                    continue
                try:
                    yield _parse_line(raw, number)
                except _LineError as exc:
                    yield Rejection("unparseable_line", str(exc), None, name, number)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            detail = f"compressed stream unreadable after line {number}: {exc}"
            yield Rejection("unparseable_line", detail, None, name, number + 1)


class _LineError(ValueError):
    """A recording line that does not have the recording format's structure."""


def _parse_line(raw: bytes, number: int) -> RecordingLine:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _LineError(f"not JSON: {raw[:120]!r}") from exc
    if not isinstance(obj, dict):
        raise _LineError("not a JSON object")
    recv_ms = obj.get("recv_ts")
    if type(recv_ms) is not int:
        raise _LineError(f"recv_ts {recv_ms!r} is not an integer")
    if "frame" in obj:
        frame = obj["frame"]
        if not isinstance(frame, dict | str):
            # Valid JSON that is no object: keep its text so parse_frame rejects it as live did.
            frame = orjson.dumps(frame).decode()
        return FrameLine(recv_ms, frame, number)
    if obj.get("source") == "rest" and isinstance(obj.get("bar"), dict):
        known_ms = obj.get("ts")
        if known_ms is not None and type(known_ms) is not int:
            raise _LineError(f"REST bar ts {known_ms!r} is not an integer")
        return _parse_rest_bar(recv_ms, obj["bar"], number, known_ms)
    raise _LineError("neither a frame nor a REST bar line")


def _parse_rest_bar(
    recv_ms: int, bar: dict[str, Any], number: int, known_ms: int | None
) -> RestBarLine:
    symbol, interval, start = bar.get("symbol"), bar.get("interval"), bar.get("start")
    if not isinstance(symbol, str) or not isinstance(interval, str):
        raise _LineError(f"REST bar symbol/interval {symbol!r}/{interval!r} are not strings")
    # Bybit's REST rows are all strings; accept the number the recorder writes and its text.
    if isinstance(start, str) and start.isdigit():
        start = int(start)
    if type(start) is not int:
        raise _LineError(f"REST bar start {start!r} is not an integer")
    values: list[float] = []
    for field in _PRICE_FIELDS:
        value = bar.get(field)
        if not isinstance(value, str | float) and type(value) is not int:
            raise _LineError(f"REST bar {field} {value!r} is missing or not a number")
        try:
            values.append(float(value))
        except ValueError as exc:
            raise _LineError(f"REST bar {field} {value!r} is not a decimal") from exc
    open_, high, low, close, volume, turnover = values
    return RestBarLine(
        recv_ms,
        symbol,
        interval,
        start,
        open_,
        high,
        low,
        close,
        volume,
        turnover,
        number,
        known_ms,
    )


def format_decimal(value: float) -> str:
    """Render a float as Bybit does: a plain decimal string with no float noise.

    ``repr`` is the shortest text that reads back to the same float, so the round trip is
    exact; exponents are expanded and a trailing ``.0`` is dropped (Bybit sends ``"16677"``).
    """
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    if text.endswith(".0"):
        text = text[:-2]
    return text


class RecordingWriter:
    """Appends recording lines to one plain or gzip JSON Lines file.

    The target is either a file (gzip when its name ends in ``.gz``, unless `compress` says
    otherwise) or an existing directory, in which case the file
    ``{prefix}-{recv_ms of the first line}.jsonl[.gz]`` is created on the first write. Opening
    goes through `_target_for`, the seam where size/time rotation will plug in.

    Use as a context manager, or call `close`. Gzip output is written with mtime 0 so that the
    same lines give the same bytes.
    """

    def __init__(
        self, target: str | Path, *, compress: bool | None = None, prefix: str = "frames"
    ) -> None:
        """Prepare a writer; nothing is opened until the first line.

        Args:
            target: A file path, or an existing directory to create files in.
            compress: Force gzip on or off; None decides from the file name (directory: on).
            prefix: File name prefix inside a directory target.
        """
        self._target = Path(target)
        self._compress = compress
        self._prefix = prefix
        self._handle: io.BufferedIOBase | None = None
        self._path: Path | None = None
        self.lines_written = 0

    @property
    def path(self) -> Path | None:
        """The file being written, or None before the first line."""
        return self._path

    def write_frame(self, recv_ms: int, text: str | bytes) -> None:
        """Record one websocket text frame exactly as received.

        The frame is stored parsed when it is JSON (re-serialised, so a frame with embedded
        newlines still takes one line) and as the raw string otherwise.
        """
        try:
            frame: Any = orjson.loads(text)
        except orjson.JSONDecodeError:
            frame = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        self.write_line({"recv_ts": recv_ms, "frame": frame})

    def write_rest_bar(self, recv_ms: int, bar: Bar) -> None:
        """Record a bar received over REST (backfill or warm-up), with its `known_ms` as ``ts``."""
        record: dict[str, Any] = {
            "symbol": bar.symbol,
            "interval": bar.interval,
            "start": bar.start_ms,
        }
        for field in _PRICE_FIELDS:
            record[field] = format_decimal(getattr(bar, field))
        line: dict[str, Any] = {"recv_ts": recv_ms, "source": "rest"}
        if bar.known_ms is not None:
            line["ts"] = bar.known_ms
        line["bar"] = record
        self.write_line(line)

    def write_line(self, line: Mapping[str, Any]) -> None:
        """Append one already-shaped recording line.

        Raises:
            ValueError: the line has no integer ``recv_ts``.
        """
        recv_ms = line.get("recv_ts")
        if type(recv_ms) is not int:
            raise ValueError(f"recording line needs an integer recv_ts, got {recv_ms!r}")
        handle = self._handle if self._handle is not None else self._open(recv_ms)
        handle.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        self.lines_written += 1

    def flush(self) -> None:
        """Push buffered lines to the OS; a gzip file stays readable up to this point."""
        if self._handle is not None:
            self._handle.flush()

    def close(self) -> None:
        """Finish the file (gzip trailer included). Closing twice is harmless."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _target_for(self, recv_ms: int) -> tuple[Path, bool]:
        """Choose the file (and compression) for a line received at `recv_ms`."""
        if self._target.is_dir():
            compress = True if self._compress is None else self._compress
            suffix = ".jsonl.gz" if compress else ".jsonl"
            return self._target / f"{self._prefix}-{recv_ms}{suffix}", compress
        compress = self._target.suffix == ".gz" if self._compress is None else self._compress
        return self._target, compress

    def _open(self, recv_ms: int) -> io.BufferedIOBase:
        path, compress = self._target_for(recv_ms)
        handle: io.BufferedIOBase
        if compress:
            handle = gzip.GzipFile(path, "wb", compresslevel=_COMPRESS_LEVEL, mtime=0)
        else:
            handle = path.open("wb")
        self._handle, self._path = handle, path
        return handle

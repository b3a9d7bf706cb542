"""Replay inputs as one kind of stream: validated bars and rejections, in file order.

Owns the dispatch from a path to its reader and, for recordings, the same edge pipeline the
live daemon runs: `parse_frame` -> `ConfirmedBarFilter` (which validates) per topic for frames,
`validate_bar` for REST lines, then the `ReorderBuffer`, which puts gap fills back in start
order and resolves websocket/REST copies as the daemon did, so a replayed session sees each
confirmed bar exactly once and in the order live processed it. Bars from frames are labelled
``ws`` and carry the push ``ts`` as `Bar.known_ms`, REST lines ``rest`` with their ``ts``, and
candle rows ``replay``.

Acks and pongs are protocol traffic, not input, and are skipped without a rejection;
unconfirmed pushes only move the filter's last price. It must not merge sources or filter by
time (`trader.replay.merge` does both), and it never raises for bad content.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

from trader.domain import Bar, BarSource
from trader.errors import ConfigError, DataError
from trader.feeds.confirmed import ConfirmedBarFilter
from trader.feeds.frames import KlinePush, parse_frame
from trader.feeds.validation import validate_bar
from trader.replay.candles import iter_candles, parse_interval
from trader.replay.recording import FrameLine, RestBarLine, iter_recording
from trader.replay.rejections import Rejection
from trader.replay.reorder import ReorderBuffer

_RECORDING_SUFFIXES = (".jsonl", ".jsonl.gz")
_CANDLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


def open_source(
    path: str | Path, *, symbol: str | None = None, interval: str | None = None
) -> Iterator[Bar | Rejection]:
    """Open one replay input by its suffix.

    Args:
        path: A recording (``.jsonl``, ``.jsonl.gz``) or a candle file (``.csv``, ``.csv.gz``,
            ``.parquet``).
        symbol: Candle files: the symbol when the name lacks it. Recordings: keep only this
            symbol's bars.
        interval: Candle files: the interval when the name lacks it. Recordings: keep only
            this interval's bars.

    Returns:
        A lazy iterator of bars (in start order per symbol and interval) and rejections.

    Raises:
        ConfigError: the suffix is not one of the above, or a candle file's series cannot be
            determined (see `iter_candles`).
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(_RECORDING_SUFFIXES):
        code = None
        if interval is not None:
            code = parse_interval(interval)
            if code is None:
                raise ConfigError(f"unknown interval {interval!r}", key="interval")
        return _iter_recording_bars(path, symbol.upper() if symbol else None, code)
    if name.endswith(_CANDLE_SUFFIXES):
        return iter_candles(path, symbol=symbol, interval=interval)
    raise ConfigError(
        f"{path}: unknown input type (expected .jsonl, .jsonl.gz, .csv, .csv.gz or .parquet)",
        key="SOURCE",
    )


class _RecordingReplay:
    """The per-recording state: one confirmed-bar filter per topic."""

    def __init__(self, source: str, symbol: str | None, interval: str | None) -> None:
        self._source = source
        self._symbol = symbol
        self._interval = interval
        self._filters: dict[tuple[str, str], ConfirmedBarFilter] = {}
        self._reorder = ReorderBuffer(source)

    def frame(self, line: FrameLine) -> Iterator[Bar | Rejection]:
        """Bars and rejections from one recorded websocket frame."""
        try:
            frame = parse_frame(line.frame)
        except DataError as exc:
            yield Rejection.from_error(exc, source=self._source, line=line.line)
            return
        if not isinstance(frame, KlinePush) or not self._wanted(frame.symbol, frame.interval):
            return
        bar_filter = self._filter(frame.symbol, frame.interval)
        for item in frame.items:
            duplicates = bar_filter.duplicates
            try:
                bar = bar_filter.accept(item, BarSource.WS, push_ms=frame.ts_ms)
            except DataError as exc:
                yield Rejection.from_error(
                    exc, source=self._source, line=line.line, symbol=frame.symbol
                )
                continue
            if bar is not None:
                yield from self._reorder.add(
                    dataclasses.replace(bar, known_ms=frame.ts_ms), line.line
                )
            elif bar_filter.duplicates != duplicates:
                yield self._duplicate(frame.symbol, item.start_ms, line.line)

    def rest_bar(self, line: RestBarLine) -> Iterator[Bar | Rejection]:
        """The bar (or rejection) from one recorded REST bar line."""
        if not self._wanted(line.symbol, line.interval):
            return
        try:
            bar = validate_bar(
                line.symbol,
                line.interval,
                line.start_ms,
                line.open,
                line.high,
                line.low,
                line.close,
                line.volume,
                line.turnover,
                end_ms=None,
                source=BarSource.REST,
            )
        except DataError as exc:
            yield Rejection.from_error(exc, source=self._source, line=line.line, symbol=line.symbol)
            return
        # Not through the topic's filter: a REST line may fill a gap behind newer frames.
        yield from self._reorder.add(dataclasses.replace(bar, known_ms=line.known_ms), line.line)

    def drain(self) -> Iterator[Bar]:
        """The bars still held for reordering, at the end of the recording."""
        return self._reorder.drain()

    def _wanted(self, symbol: str, interval: str) -> bool:
        return (self._symbol is None or symbol == self._symbol) and (
            self._interval is None or interval == self._interval
        )

    def _filter(self, symbol: str, interval: str) -> ConfirmedBarFilter:
        key = (symbol, interval)
        bar_filter = self._filters.get(key)
        if bar_filter is None:
            bar_filter = self._filters[key] = ConfirmedBarFilter(symbol, interval)
        return bar_filter

    def _duplicate(self, symbol: str, start_ms: int, line: int) -> Rejection:
        detail = f"confirmed start={start_ms} repeated with the same values"
        return Rejection("duplicate", detail, symbol, self._source, line)


def _iter_recording_bars(
    path: Path, symbol: str | None, interval: str | None
) -> Iterator[Bar | Rejection]:
    replay = _RecordingReplay(str(path), symbol, interval)
    for line in iter_recording(path):
        if isinstance(line, FrameLine):
            yield from replay.frame(line)
        elif isinstance(line, RestBarLine):
            yield from replay.rest_bar(line)
        else:
            yield line
    yield from replay.drain()

"""Merging replay sources into bar-close slices, the engine's unit of work.

Owns the time order of a replay: several sources (each in start order per series) are merged
lazily with `heapq.merge` on ``(start_ms, symbol, interval)``, and all bars sharing a start
become one slice, sorted by symbol. On the way it

- counts (and logs once) every rejection the sources yield;
- keeps bars with ``from_ms <= start_ms < to_ms``;
- drops a second bar for the same ``(symbol, interval, start)`` from another source, counted as
  ``duplicate`` (same values) or ``duplicate_conflict`` (different values); the bar from the
  earlier source in `sources` wins, because `heapq.merge` is stable;
- drops a bar older than a slice already emitted, counted as ``out_of_order`` (a recording
  whose REST backfill for one symbol arrived after another symbol's later bar).

Nothing is read ahead beyond one bar per source and the slice being built, so a long file is
never loaded whole. It must not validate values or know about files.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence

from trader.domain import Bar
from trader.feeds.confirmed import same_candle
from trader.replay.rejections import Rejection, RejectionCounter


def iter_slices(
    sources: Sequence[Iterable[Bar | Rejection]],
    *,
    rejections: RejectionCounter,
    from_ms: int | None = None,
    to_ms: int | None = None,
) -> Iterator[list[Bar]]:
    """Yield one list of bars per distinct start time, in increasing start order.

    Args:
        sources: Streams of bars and rejections, e.g. from `open_source`.
        rejections: Where rejections are counted (including the ones made here).
        from_ms: First bar start to keep (inclusive), or None for no lower bound.
        to_ms: Bar start to stop at (exclusive), or None for no upper bound. Reading stops at
            the first bar at or past it, so later rejections are not counted.

    Yields:
        Non-empty slices sorted by ``(symbol, interval)``.
    """
    streams = [_bars_of(source, index, rejections) for index, source in enumerate(sources)]
    merged = heapq.merge(*streams, key=_order_key)
    slice_start_ms: int | None = None
    current: dict[tuple[str, str], Bar] = {}
    for bar, index in merged:
        if to_ms is not None and bar.start_ms >= to_ms:
            break
        if from_ms is not None and bar.start_ms < from_ms:
            continue
        if slice_start_ms is not None and bar.start_ms < slice_start_ms:
            rejections.record(_late(bar, index, slice_start_ms))
            continue
        if bar.start_ms != slice_start_ms:
            if current:
                yield _sorted(current)
            current = {}
            slice_start_ms = bar.start_ms
        key = (bar.symbol, bar.interval)
        first = current.get(key)
        if first is None:
            current[key] = bar
        else:
            rejections.record(_repeat(first, bar, index))
    if current:
        yield _sorted(current)


def _bars_of(
    source: Iterable[Bar | Rejection], index: int, rejections: RejectionCounter
) -> Iterator[tuple[Bar, int]]:
    """Pass bars through, tagged with their source's position; count rejections on the way."""
    for item in source:
        if isinstance(item, Bar):
            yield item, index
        else:
            rejections.record(item)


def _order_key(tagged: tuple[Bar, int]) -> tuple[int, str, str]:
    bar = tagged[0]
    return (bar.start_ms, bar.symbol, bar.interval)


def _sorted(current: dict[tuple[str, str], Bar]) -> list[Bar]:
    return [current[key] for key in sorted(current)]


def _late(bar: Bar, index: int, slice_start_ms: int) -> Rejection:
    detail = f"start={bar.start_ms} arrived after slice start={slice_start_ms}"
    return Rejection("out_of_order", detail, bar.symbol, _source_name(index), None)


def _repeat(first: Bar, bar: Bar, index: int) -> Rejection:
    if same_candle(first, bar):
        reason, detail = "duplicate", f"start={bar.start_ms} from {first.source} and {bar.source}"
    else:
        reason = "duplicate_conflict"
        detail = f"start={bar.start_ms}: kept {first!r}, dropped {bar!r}"
    return Rejection(reason, detail, bar.symbol, _source_name(index), None)


def _source_name(index: int) -> str:
    # Bars do not carry their file; the position in `sources` identifies the input.
    return f"source[{index}]"

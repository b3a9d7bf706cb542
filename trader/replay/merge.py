"""Merging replay sources into bar-close slices, the engine's unit of work.

Owns the time order of a replay: several sources (each in start order per series) are merged
lazily with `heapq.merge` on ``(start_ms, symbol, interval)``, and all bars sharing a start
become one slice, sorted by symbol. A run has one interval: the first bar of every source is
read before any slice is yielded, and sources whose first bars differ in interval are refused
with a `ConfigError` naming both. On the way it

- counts (and logs once) every rejection the sources yield;
- drops a later bar of another interval than the run's (a recording holding several topics),
  counted as ``interval_mismatch``;
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
import itertools
from collections.abc import Iterable, Iterator, Sequence

from trader.domain import Bar
from trader.errors import ConfigError
from trader.feeds.confirmed import same_candle
from trader.replay.rejections import Rejection, RejectionCounter


def iter_slices(
    sources: Sequence[Iterable[Bar | Rejection]],
    *,
    rejections: RejectionCounter,
    from_ms: int | None = None,
    to_ms: int | None = None,
    names: Sequence[str] | None = None,
) -> Iterator[list[Bar]]:
    """Yield one list of bars per distinct start time, in increasing start order.

    Args:
        sources: Streams of bars and rejections, e.g. from `open_source`.
        rejections: Where rejections are counted (including the ones made here).
        from_ms: First bar start to keep (inclusive), or None for no lower bound.
        to_ms: Bar start to stop at (exclusive), or None for no upper bound. Reading stops at
            the first bar at or past it, so later rejections are not counted.
        names: The sources' names (file paths) for messages and rejections, in the order of
            `sources`; None names them ``source[i]``.

    Yields:
        Non-empty slices sorted by ``(symbol, interval)``.

    Raises:
        ConfigError: on the first step, before any slice, when the first bars of two sources
            have different intervals.
    """
    labels = list(names) if names is not None else [f"source[{i}]" for i in range(len(sources))]
    streams = [_bars_of(source, index, rejections) for index, source in enumerate(sources)]
    firsts = [next(stream, None) for stream in streams]
    run_interval = _run_interval(firsts, labels)
    merged = heapq.merge(
        *(
            stream if first is None else itertools.chain((first,), stream)
            for first, stream in zip(firsts, streams, strict=True)
        ),
        key=_order_key,
    )
    slice_start_ms: int | None = None
    current: dict[tuple[str, str], Bar] = {}
    for bar, index in merged:
        if to_ms is not None and bar.start_ms >= to_ms:
            break
        if from_ms is not None and bar.start_ms < from_ms:
            continue
        if bar.interval != run_interval:
            rejections.record(_other_interval(bar, run_interval, labels[index]))
            continue
        if slice_start_ms is not None and bar.start_ms < slice_start_ms:
            rejections.record(_late(bar, labels[index], slice_start_ms))
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
            rejections.record(_repeat(first, bar, labels[index]))
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


def _run_interval(firsts: Sequence[tuple[Bar, int] | None], labels: Sequence[str]) -> str | None:
    """The one interval of the run: that of every source's first bar.

    Raises:
        ConfigError: two sources start with bars of different intervals.
    """
    run: tuple[Bar, int] | None = None
    for tagged in firsts:
        if tagged is None:
            continue
        if run is None:
            run = tagged
        elif tagged[0].interval != run[0].interval:
            (bar, index), (other, other_index) = run, tagged
            raise ConfigError(
                f"a replay has one interval, but {labels[index]} starts with {bar.interval} "
                f"bars and {labels[other_index]} with {other.interval} bars; replay them "
                "in separate runs",
                key="SOURCE",
            )
    return None if run is None else run[0].interval


def _order_key(tagged: tuple[Bar, int]) -> tuple[int, str, str]:
    bar = tagged[0]
    return (bar.start_ms, bar.symbol, bar.interval)


def _sorted(current: dict[tuple[str, str], Bar]) -> list[Bar]:
    return [current[key] for key in sorted(current)]


def _late(bar: Bar, label: str, slice_start_ms: int) -> Rejection:
    detail = f"start={bar.start_ms} arrived after slice start={slice_start_ms}"
    return Rejection("out_of_order", detail, bar.symbol, label, None)


def _other_interval(bar: Bar, run_interval: str | None, label: str) -> Rejection:
    detail = f"{bar.interval} bar start={bar.start_ms} in a run of {run_interval} bars"
    return Rejection("interval_mismatch", detail, bar.symbol, label, None)


def _repeat(first: Bar, bar: Bar, label: str) -> Rejection:
    if same_candle(first, bar):
        reason, detail = "duplicate", f"start={bar.start_ms} from {first.source} and {bar.source}"
    else:
        reason = "duplicate_conflict"
        detail = f"start={bar.start_ms}: kept {first!r}, dropped {bar!r}"
    return Rejection(reason, detail, bar.symbol, label, None)

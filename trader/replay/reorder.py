"""Putting a recording's bars back into start order, the way the live daemon consumed them.

A live session's recording is in arrival order, and arrival is not start order: when a confirm
goes missing, the daemon holds the later bars, fetches the gap over REST and processes the
REST bar first (the REST line comes *after* the later websocket frame in the file). Replay must
see the same bars in the same order, so `ReorderBuffer` holds bars for a window of intervals
and releases them sorted by ``(start, symbol, interval)``.

Which copy wins when a bar came both ways: the daemon records a REST bar only when it used it
(the websocket copy had not arrived), so a REST line beats a websocket copy of the same bar;
otherwise the first copy wins and later ones are counted as ``duplicate`` (same values) or
``duplicate_conflict``. It is sans-I/O and must not validate values (the sources do) or merge
several sources (`trader.replay.merge` does).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Final

from trader.domain import Bar, BarSource, interval_ms
from trader.feeds.confirmed import same_candle
from trader.replay.rejections import Rejection

#: How far (in intervals behind the newest bar seen) a late bar can still be put in place.
#: A gap the daemon filled within this many bars replays exactly; anything later is rejected
#: downstream as ``out_of_order``, as the live daemon would have.
DEFAULT_WINDOW_BARS: Final = 1_000

_Key = tuple[int, str, str]


class ReorderBuffer:
    """Holds bars until no earlier bar can still arrive, then releases them in start order.

    Args:
        source: The input's name, for rejections.
        window_bars: The reordering horizon in intervals.
    """

    def __init__(self, source: str, *, window_bars: int = DEFAULT_WINDOW_BARS) -> None:
        if window_bars < 1:
            raise ValueError(f"window_bars must be >= 1, got {window_bars}")
        self._source = source
        self._window_bars = window_bars
        self._held: dict[_Key, Bar] = {}
        self._heap: list[_Key] = []
        self._newest_close_ms: int | None = None

    def add(self, bar: Bar, line: int | None) -> Iterator[Bar | Rejection]:
        """Offer one bar; yield any rejection for it and every bar now safe to release."""
        key = (bar.start_ms, bar.symbol, bar.interval)
        held = self._held.get(key)
        if held is None:
            self._held[key] = bar
            heapq.heappush(self._heap, key)
        elif held.source is not BarSource.REST and bar.source is BarSource.REST:
            # The daemon took this REST copy; the websocket copy before it was the repeat.
            self._held[key] = bar
            yield self._repeat(bar, held, line)
        else:
            yield self._repeat(held, bar, line)
        if self._newest_close_ms is None or bar.close_ms > self._newest_close_ms:
            self._newest_close_ms = bar.close_ms
        yield from self._release_before(self._horizon_ms(bar))

    def drain(self) -> Iterator[Bar]:
        """Release everything still held, in order (the end of the input)."""
        while self._heap:
            yield self._held.pop(heapq.heappop(self._heap))

    def _horizon_ms(self, bar: Bar) -> int:
        assert self._newest_close_ms is not None
        return self._newest_close_ms - self._window_bars * interval_ms(bar.interval)

    def _release_before(self, horizon_ms: int) -> Iterator[Bar]:
        while self._heap and self._heap[0][0] < horizon_ms:
            yield self._held.pop(heapq.heappop(self._heap))

    def _repeat(self, first: Bar, bar: Bar, line: int | None) -> Rejection:
        if same_candle(first, bar):
            detail = f"start={bar.start_ms} repeated with the same values"
            return Rejection("duplicate", detail, bar.symbol, self._source, line)
        detail = f"start={bar.start_ms} repeated with different values (first kept)"
        return Rejection("duplicate_conflict", detail, bar.symbol, self._source, line)

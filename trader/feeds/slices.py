"""Assembling live bars of several symbols into the engine's bar-close slices, in start order.

Bybit pushes each topic's confirm separately, REST backfill delivers bars in bulk, and either
can repeat or arrive late. The engine wants one slice per start holding every symbol's bar, each
start once and in increasing order (it cannot go back to an earlier start). `SliceAssembler`
holds bars until their slice is complete and tells its owner when a gap needs REST:

- a bar at or before the last released start, or already held, is refused (first copy wins);
- the oldest held slice is released once every symbol has its bar;
- it is *overdue* when a later start is already held (the stream moved on without a symbol's
  confirm), when whole starts were skipped since the last release (a push pause), or when the
  exchange clock passed its close plus a grace period (a confirm that never came);
- after the owner's REST backfill up to a start, `settle_through` releases every held slice up
  to it even if a symbol is still missing (REST is authoritative: that bar does not exist).

It is sans-I/O (no sockets, no asyncio, no clock of its own) and must not fetch, validate or
decide anything about trading.
"""

from __future__ import annotations

from collections.abc import Sequence

from trader.domain import Bar, interval_ms


class SliceAssembler:
    """Per-start assembly of confirmed bars into complete, ordered slices.

    Args:
        symbols: Every symbol a slice should hold.
        interval: The one interval code of all bars.
        last_start_ms: The start of the last slice the engine already processed (-1: none).
        grace_ms: How long after a bar's close (exchange time) its confirm may still come.
    """

    def __init__(
        self, symbols: Sequence[str], interval: str, *, last_start_ms: int = -1, grace_ms: int
    ) -> None:
        if grace_ms < 0:
            raise ValueError(f"grace_ms must be >= 0, got {grace_ms}")
        self._symbols = frozenset(symbols)
        self._interval = interval
        self._interval_ms = interval_ms(interval)
        self._grace_ms = grace_ms
        self._held: dict[int, dict[str, Bar]] = {}
        self.last_start_ms = last_start_ms
        #: Bars refused as repeats or as older than the last released slice.
        self.refused = 0

    @property
    def held_bars(self) -> int:
        """Bars waiting for their slice to complete."""
        return sum(len(bars) for bars in self._held.values())

    def add(self, bar: Bar) -> bool:
        """Hold one bar for its slice; False (and counted) when it is old or a repeat."""
        if bar.interval != self._interval or bar.symbol not in self._symbols:
            raise ValueError(f"bar {bar.symbol}/{bar.interval} is not assembled here")
        if bar.start_ms <= self.last_start_ms:
            self.refused += 1
            return False
        slice_bars = self._held.setdefault(bar.start_ms, {})
        if bar.symbol in slice_bars:
            self.refused += 1
            return False
        slice_bars[bar.symbol] = bar
        return True

    def ready(self) -> list[list[Bar]]:
        """Release the complete slices at the front, oldest first (bars sorted by symbol)."""
        released: list[list[Bar]] = []
        while self._held:
            start_ms = min(self._held)
            if len(self._held[start_ms]) < len(self._symbols) or self._skipped_before(start_ms):
                break
            released.append(self._release(start_ms))
        return released

    def overdue(self, exchange_now_ms: int | None) -> bool:
        """Whether the oldest held slice needs a REST backfill to complete."""
        if not self._held:
            return False
        start_ms = min(self._held)
        if self._skipped_before(start_ms) or len(self._held) > 1:
            return True
        if len(self._held[start_ms]) == len(self._symbols):
            return False
        close_ms = start_ms + self._interval_ms
        return exchange_now_ms is not None and exchange_now_ms > close_ms + self._grace_ms

    def grace_over_through(self, exchange_now_ms: int) -> int:
        """The newest start whose bar closed at least the confirm grace before
        `exchange_now_ms`: its confirm is no longer expected (the grace `overdue` allows)."""
        return self._aligned(exchange_now_ms - self._grace_ms) - self._interval_ms

    def settle_through(self, through_start_ms: int) -> list[list[Bar]]:
        """Release every held slice with start <= `through_start_ms`, complete or not."""
        released: list[list[Bar]] = []
        while self._held and min(self._held) <= through_start_ms:
            released.append(self._release(min(self._held)))
        # REST showed everything up to here: a start with no bar at all (an exchange outage)
        # must not keep the assembler asking for it.
        self.last_start_ms = max(self.last_start_ms, self._aligned(through_start_ms))
        return released

    def _skipped_before(self, start_ms: int) -> bool:
        """Whole starts are missing between the last released slice and `start_ms`."""
        return self.last_start_ms >= 0 and start_ms > self.last_start_ms + self._interval_ms

    def _release(self, start_ms: int) -> list[Bar]:
        bars = self._held.pop(start_ms)
        self.last_start_ms = start_ms
        return [bars[symbol] for symbol in sorted(bars)]

    def _aligned(self, start_ms: int) -> int:
        return start_ms - start_ms % self._interval_ms

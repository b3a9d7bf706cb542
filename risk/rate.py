"""The order-rate window: how many orders went out in the last minute of exchange time.

Owns a sliding window of order times (epoch ms, passed in). An order at `t` counts while
``now_ms - 60_000 < t <= now_ms``. It must not read a clock or decide anything itself: the
layer asks `count` before approving and calls `record` for each approved order.
"""

from __future__ import annotations

from collections import deque

#: Length of the sliding window behind `max_orders_per_minute`.
WINDOW_MS = 60_000


class OrderRateWindow:
    """Times of recent orders, pruned as exchange time moves on."""

    def __init__(self) -> None:
        self._times_ms: deque[int] = deque()

    def count(self, now_ms: int) -> int:
        """Orders recorded in the minute ending at `now_ms`."""
        self._prune(now_ms)
        return len(self._times_ms)

    def record(self, now_ms: int) -> None:
        """Count one order sent at `now_ms`."""
        self._prune(now_ms)
        self._times_ms.append(now_ms)

    def _prune(self, now_ms: int) -> None:
        times = self._times_ms
        while times and times[0] <= now_ms - WINDOW_MS:
            times.popleft()

    def state_dict(self) -> list[int]:
        """JSON-able order times, oldest first."""
        return list(self._times_ms)

    def load_state_dict(self, state: list[int]) -> None:
        """Restore what `state_dict` returned."""
        self._times_ms = deque(sorted(int(t) for t in state))

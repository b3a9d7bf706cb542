"""Rolling correlation of per-bar returns between symbols.

Owns a fixed-length window of (bar start, return) per symbol and the Pearson correlation of two
symbols over the bars both windows hold. Returns are paired by bar start, so a missing bar on
one symbol drops that bar from the pair instead of shifting one series against the other.

It must not decide what a correlation means for exposure (that is `risk.layer`'s cap), read
prices itself, or do I/O; it is fed one return per symbol per bar.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any


class RollingCorrelation:
    """Per-symbol windows of bar returns and their pairwise correlation.

    Args:
        window_bars: how many of each symbol's latest returns are kept.
        min_bars: fewest paired returns a correlation is computed from; with fewer it is unknown.
    """

    def __init__(self, *, window_bars: int, min_bars: int) -> None:
        if window_bars < 2 or not 2 <= min_bars <= window_bars:
            raise ValueError(f"need 2 <= min_bars ({min_bars}) <= window_bars ({window_bars})")
        self._window_bars = window_bars
        self._min_bars = min_bars
        self._returns: dict[str, deque[tuple[int, float]]] = {}

    def add(self, symbol: str, start_ms: int, value: float) -> None:
        """Append the return of `symbol`'s bar starting at `start_ms` (non-finite is skipped)."""
        if not math.isfinite(value):
            return
        window = self._returns.get(symbol)
        if window is None:
            window = self._returns[symbol] = deque(maxlen=self._window_bars)
        if window and window[-1][0] >= start_ms:
            return  # a bar seen again (replayed or backfilled twice) counts once
        window.append((start_ms, value))

    def correlation(self, first: str, second: str) -> float | None:
        """Pearson correlation of the two symbols' returns on common bars; None when unknown.

        Unknown means fewer than `min_bars` common bars, or a series with no variance.
        """
        if first == second:
            return 1.0
        a = self._returns.get(first)
        b = self._returns.get(second)
        if not a or not b:
            return None
        by_start = dict(b)
        pairs = [(x, by_start[start]) for start, x in a if start in by_start]
        if len(pairs) < self._min_bars:
            return None
        return _pearson(pairs)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able windows: {symbol: [[start_ms, return], ...]}."""
        return {symbol: [[s, r] for s, r in window] for symbol, window in self._returns.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self._returns = {
            str(symbol): deque(((int(s), float(r)) for s, r in rows), maxlen=self._window_bars)
            for symbol, rows in state.items()
        }


def _pearson(pairs: list[tuple[float, float]]) -> float | None:
    n = len(pairs)
    mean_x = math.fsum(x for x, _ in pairs) / n
    mean_y = math.fsum(y for _, y in pairs) / n
    cov = math.fsum((x - mean_x) * (y - mean_y) for x, y in pairs)
    var_x = math.fsum((x - mean_x) ** 2 for x, _ in pairs)
    var_y = math.fsum((y - mean_y) ** 2 for _, y in pairs)
    if var_x <= 0.0 or var_y <= 0.0:
        return None
    # Rounding can push |r| a hair past 1; clamp so thresholds compare cleanly.
    return max(-1.0, min(1.0, cov / math.sqrt(var_x * var_y)))

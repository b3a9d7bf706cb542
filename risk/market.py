"""What risk remembers of each symbol's market: last prices, last bar, and its ATR.

Owns per-symbol market facts the checks and sizing need, built from the confirmed bars the
engine hands over: the latest and previous close (price sanity), the start and interval of the
latest bar and the bars missing before it (stale feed), and Wilder's average true range
(volatility sizing, default stops).

It must not compute features for strategies, read a clock, or do I/O. Bars arrive in time order
per symbol; a bar not newer than the last one seen is ignored, so feeding a bar twice is harmless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trader.domain import Bar, interval_ms


@dataclass(slots=True)
class SymbolMarket:
    """The latest market facts of one symbol (floats: prices as parsed from the exchange)."""

    last_start_ms: int
    interval_ms: int
    close: float
    previous_close: float | None = None
    # Bars that never arrived between the previous bar and the latest one (a feed outage).
    gap_bars: int = 0
    atr: float | None = None
    # While fewer than `period` true ranges were seen, the ATR is their running mean.
    ranges_seen: int = 0
    range_sum: float = 0.0


class MarketTracker:
    """Per-symbol last prices, last bar and Wilder ATR.

    Args:
        atr_period: number of bars Wilder's ATR averages over (it is unknown before that many).
    """

    def __init__(self, *, atr_period: int) -> None:
        if atr_period < 1:
            raise ValueError(f"atr_period must be >= 1, got {atr_period}")
        self._period = atr_period
        self._symbols: dict[str, SymbolMarket] = {}

    def update(self, bar: Bar) -> float | None:
        """Take in a confirmed bar; returns its log return over the previous close, if known."""
        seen = self._symbols.get(bar.symbol)
        if seen is None:
            self._symbols[bar.symbol] = SymbolMarket(
                last_start_ms=bar.start_ms, interval_ms=interval_ms(bar.interval), close=bar.close
            )
            self._add_range(self._symbols[bar.symbol], bar.high - bar.low)
            return None
        if bar.start_ms <= seen.last_start_ms:
            return None
        previous = seen.close
        interval = interval_ms(bar.interval)
        seen.gap_bars = max(0, (bar.start_ms - seen.last_start_ms) // interval - 1)
        true_range = max(bar.high - bar.low, abs(bar.high - previous), abs(bar.low - previous))
        self._add_range(seen, true_range)
        seen.previous_close = previous
        seen.close = bar.close
        seen.last_start_ms = bar.start_ms
        seen.interval_ms = interval
        if previous > 0.0 and bar.close > 0.0:
            return math.log(bar.close / previous)
        return None

    def get(self, symbol: str) -> SymbolMarket | None:
        """The symbol's latest facts, or None before its first bar."""
        return self._symbols.get(symbol)

    def price(self, symbol: str) -> float | None:
        """The symbol's latest close, or None before its first bar."""
        seen = self._symbols.get(symbol)
        return None if seen is None else seen.close

    def _add_range(self, seen: SymbolMarket, true_range: float) -> None:
        if not math.isfinite(true_range) or true_range < 0.0:
            return
        period = self._period
        if seen.ranges_seen < period:
            seen.ranges_seen += 1
            seen.range_sum += true_range
            if seen.ranges_seen == period:
                seen.atr = seen.range_sum / period
            return
        assert seen.atr is not None  # set when ranges_seen reached period
        seen.atr = (seen.atr * (period - 1) + true_range) / period

"""Validation of one candle's values, the single gate every bar passes before it exists.

Owns the rules that make a `Bar` trustworthy: finite numbers, positive prices below an absolute
bound, non-negative volume and turnover below theirs, a consistent high/low range, a known
interval and a start (and end) on the interval grid. Each failure raises `DataError` with a
stable, countable reason:

    non_finite            NaN or infinity in any price, volume or turnover
    non_positive_price    open, high, low or close <= 0
    negative_volume       volume or turnover < 0
    high_below_low        high < low
    open_outside_range    open not in [low, high]
    close_outside_range   close not in [low, high]
    price_out_of_range    high (so any price) above `MAX_PRICE_USDT`
    volume_out_of_range   volume above `MAX_VOLUME` or turnover above `MAX_TURNOVER_USDT`
    interval_mismatch     the interval is not a known Bybit code
    misaligned_start      start is negative or not a multiple of the interval
    bad_end               end != start + interval - 1

It runs once per bar on the replay hot path (20,000+ bars/s), so it is a flat sequence of
comparisons with no allocation on success beyond the `Bar` itself. It must not do I/O, keep
state or know where a bar came from beyond the `source` label it stamps on it.
"""

from __future__ import annotations

from math import isfinite

from trader.domain import INTERVAL_MS, Bar, BarSource
from trader.errors import DataError

#: No USDT-quoted instrument trades anywhere near a billion; a price above it is a corrupt or
#: mis-scaled value (a typo, wrong units), and trading on it books absurd PnL. Tiny positive
#: prices stay valid.
MAX_PRICE_USDT = 1e9
#: Volume (base coin) and turnover (quote coin) bounds, far above any real bar (the largest in
#: our data are ~1e9), that keep squared deviations in the feature kernel finite.
MAX_VOLUME = 1e18
MAX_TURNOVER_USDT = 1e18


def validate_bar(
    symbol: str,
    interval: str,
    start_ms: int,
    open: float,
    high: float,
    low: float,
    close: float,
    volume: float,
    turnover: float,
    *,
    end_ms: int | None,
    source: BarSource,
) -> Bar:
    """Check one candle's values and build the `Bar`.

    Args:
        symbol: Exchange symbol, e.g. ``"BTCUSDT"``.
        interval: Bybit interval code, e.g. ``"5"`` or ``"D"``.
        start_ms: Bar open time, epoch ms UTC.
        open: Opening price.
        high: Highest price.
        low: Lowest price.
        close: Closing (or, while the bar is open, last) price.
        volume: Volume in base coin.
        turnover: Turnover in quote coin.
        end_ms: Bybit's ``end`` (last millisecond of the bar) when the input carries one, else
            None (candle files and REST rows have no end).
        source: Where the bar came from.

    Returns:
        The validated bar.

    Raises:
        DataError: with one of the reasons listed in the module docstring.
    """
    # One combined test first: the common case (all finite) costs a single branch.
    if not (
        isfinite(open)
        and isfinite(high)
        and isfinite(low)
        and isfinite(close)
        and isfinite(volume)
        and isfinite(turnover)
    ):
        raise DataError(
            "non_finite", _values(open, high, low, close, volume, turnover), symbol=symbol
        )
    if open <= 0.0 or high <= 0.0 or low <= 0.0 or close <= 0.0:
        raise DataError(
            "non_positive_price", _values(open, high, low, close, volume, turnover), symbol=symbol
        )
    if volume < 0.0 or turnover < 0.0:
        raise DataError(
            "negative_volume", f"volume={volume!r} turnover={turnover!r}", symbol=symbol
        )
    if high < low:
        raise DataError("high_below_low", f"high={high!r} low={low!r}", symbol=symbol)
    if open < low or open > high:
        raise DataError(
            "open_outside_range", f"open={open!r} low={low!r} high={high!r}", symbol=symbol
        )
    if close < low or close > high:
        raise DataError(
            "close_outside_range", f"close={close!r} low={low!r} high={high!r}", symbol=symbol
        )
    # high bounds every price once the range checks above passed.
    if high > MAX_PRICE_USDT:
        raise DataError(
            "price_out_of_range",
            f"high={high!r} is above {MAX_PRICE_USDT:g} USDT: "
            + _values(open, high, low, close, volume, turnover),
            symbol=symbol,
        )
    if volume > MAX_VOLUME or turnover > MAX_TURNOVER_USDT:
        raise DataError(
            "volume_out_of_range",
            f"volume={volume!r} (max {MAX_VOLUME:g}) turnover={turnover!r} "
            f"(max {MAX_TURNOVER_USDT:g})",
            symbol=symbol,
        )
    length_ms = INTERVAL_MS.get(interval)
    if length_ms is None:
        raise DataError("interval_mismatch", f"unknown interval code {interval!r}", symbol=symbol)
    if start_ms < 0 or start_ms % length_ms:
        raise DataError(
            "misaligned_start",
            f"start={start_ms} is not a multiple of the {interval} interval ({length_ms} ms)",
            symbol=symbol,
        )
    if end_ms is not None and end_ms != start_ms + length_ms - 1:
        raise DataError(
            "bad_end",
            f"end={end_ms} but start={start_ms} + {length_ms} - 1 = {start_ms + length_ms - 1}",
            symbol=symbol,
        )
    return Bar(symbol, interval, start_ms, open, high, low, close, volume, turnover, source)


def _values(
    open: float,
    high: float,
    low: float,
    close: float,
    volume: float,
    turnover: float,
) -> str:
    """Render the numeric fields for an error detail (only built on the failure path)."""
    return (
        f"open={open!r} high={high!r} low={low!r} close={close!r} "
        f"volume={volume!r} turnover={turnover!r}"
    )

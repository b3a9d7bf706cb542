"""The confirmed-bar filter: one per topic, it turns kline updates into each closed bar once.

Owns the exactly-once rule of reference bybit-v5.md A7. Bybit pushes the current candle many
times with ``confirm=false`` and then (usually) once with ``confirm=true``; a confirmed bar can
repeat, and REST backfill can deliver a bar the stream already gave. The filter:

- validates every item (`validate_bar`), confirmed or not, so a malformed update is rejected
  rather than silently moving the last price;
- passes each confirmed start once, in increasing start order;
- drops an identical repeat of a recent bar and counts it in `duplicates` (the caller turns the
  count into a "duplicate" rejection if it keeps accounts);
- raises `DataError("duplicate_conflict")` for a repeat with different values and
  `DataError("out_of_order")` for a start older than the last accepted one that it cannot match;
- raises `DataError("bar_after_push")` for a confirmed item whose bar starts after the push
  that carries it (`push_ms`, the frame's ``ts``): a bar cannot close before it opened, and
  accepting it would make every later real bar ``out_of_order``;
- lets unconfirmed items only refresh `last_price` / `last_price_ts_ms` (status output and
  emergency flattening need a price between bar closes).

It is sans-I/O and shared by the live feed and replay. It must not backfill, log or count
anything beyond its own duplicates; gap detection belongs to the feed that owns the REST client.
"""

from __future__ import annotations

from collections import deque

from trader.domain import Bar, BarSource
from trader.errors import DataError
from trader.feeds.frames import KlineItem
from trader.feeds.validation import validate_bar

#: How many recently accepted bars are kept to recognise a late repeat (REST backfill overlap).
DEFAULT_HISTORY_BARS = 256


class ConfirmedBarFilter:
    """Exactly-once, in-order confirmed bars for one ``(symbol, interval)`` topic."""

    def __init__(
        self, symbol: str, interval: str, *, history_bars: int = DEFAULT_HISTORY_BARS
    ) -> None:
        """Create an empty filter.

        Args:
            symbol: The topic's symbol; every bar must carry it.
            interval: The topic's interval code; an item of another interval is rejected.
            history_bars: How many accepted bars to remember for duplicate detection.

        Raises:
            ValueError: `history_bars` is smaller than 1.
        """
        if history_bars < 1:
            raise ValueError(f"history_bars must be >= 1, got {history_bars}")
        self.symbol = symbol
        self.interval = interval
        self.last_price: float | None = None
        self.last_price_ts_ms: int | None = None
        #: Identical repeats dropped so far.
        self.duplicates = 0
        self._recent: dict[int, Bar] = {}
        self._order: deque[int] = deque()
        self._history_bars = history_bars
        self._last_start_ms: int | None = None

    @property
    def last_start_ms(self) -> int | None:
        """Start of the newest accepted bar, or None before the first."""
        return self._last_start_ms

    def accept(
        self,
        item: KlineItem | Bar,
        source: BarSource = BarSource.WS,
        *,
        push_ms: int | None = None,
    ) -> Bar | None:
        """Offer one push item (or a final bar) to the filter.

        Args:
            item: A parsed ``data[]`` element, or an already final `Bar` (then `source` and
                `push_ms` are ignored and the bar's own source is kept).
            source: The label for bars built from a `KlineItem`.
            push_ms: The exchange time of the push carrying `item` (the frame's ``ts``); a
                confirmed item whose bar starts after it is rejected. None skips that check.

        Returns:
            The new confirmed bar, or None when the item is unconfirmed or an identical repeat.

        Raises:
            DataError: a `validate_bar` reason, ``interval_mismatch``, ``bar_after_push``,
                ``duplicate_conflict`` or ``out_of_order``.
        """
        if isinstance(item, Bar):
            return self.accept_bar(item)
        if item.interval != self.interval:
            raise DataError(
                "interval_mismatch",
                f"item interval {item.interval!r} on topic interval {self.interval!r}",
                symbol=self.symbol,
            )
        bar = validate_bar(
            self.symbol,
            self.interval,
            item.start_ms,
            item.open,
            item.high,
            item.low,
            item.close,
            item.volume,
            item.turnover,
            end_ms=item.end_ms,
            source=source,
        )
        if not item.confirm:
            self._refresh_price(bar.close, item.timestamp_ms)
            return None
        if push_ms is not None and bar.start_ms > push_ms:
            raise DataError(
                "bar_after_push",
                f"confirmed start={bar.start_ms} is after the push's ts={push_ms}",
                symbol=self.symbol,
            )
        accepted = self._admit(bar)
        if accepted is not None:
            self._refresh_price(bar.close, item.timestamp_ms)
        return accepted

    def accept_bar(self, bar: Bar) -> Bar | None:
        """Offer a bar that is already final and validated (REST backfill, candle files).

        Returns:
            The bar when it is new, None when it is an identical repeat.

        Raises:
            ValueError: the bar belongs to another symbol (a wiring error, not bad data).
            DataError: ``interval_mismatch``, ``duplicate_conflict`` or ``out_of_order``.
        """
        if bar.symbol != self.symbol:
            raise ValueError(f"bar for {bar.symbol} offered to the {self.symbol} filter")
        if bar.interval != self.interval:
            raise DataError(
                "interval_mismatch",
                f"bar interval {bar.interval!r} on topic interval {self.interval!r}",
                symbol=self.symbol,
            )
        accepted = self._admit(bar)
        if accepted is not None:
            # A final bar has no last-trade time; its end is the latest the close can be from.
            self._refresh_price(bar.close, bar.end_ms)
        return accepted

    def _admit(self, bar: Bar) -> Bar | None:
        """Apply the exactly-once, in-order rule to a validated confirmed bar."""
        last = self._last_start_ms
        if last is None or bar.start_ms > last:
            self._remember(bar)
            return bar
        seen = self._recent.get(bar.start_ms)
        if seen is None:
            raise DataError(
                "out_of_order",
                f"start={bar.start_ms} after last confirmed start={last}",
                symbol=self.symbol,
            )
        if same_candle(seen, bar):
            self.duplicates += 1
            return None
        raise DataError(
            "duplicate_conflict",
            f"start={bar.start_ms} seen as {_render(seen)}, now {_render(bar)}",
            symbol=self.symbol,
        )

    def _remember(self, bar: Bar) -> None:
        self._last_start_ms = bar.start_ms
        self._recent[bar.start_ms] = bar
        self._order.append(bar.start_ms)
        if len(self._order) > self._history_bars:
            del self._recent[self._order.popleft()]

    def _refresh_price(self, price: float, ts_ms: int) -> None:
        # Updates can arrive out of order around a reconnect; never move the price back in time.
        if self.last_price_ts_ms is None or ts_ms >= self.last_price_ts_ms:
            self.last_price = price
            self.last_price_ts_ms = ts_ms


def same_candle(a: Bar, b: Bar) -> bool:
    """Tell whether two bars carry the same candle values.

    The source label does not matter: a REST row equal to the websocket bar is a repeat.
    """
    return (
        a.open == b.open
        and a.high == b.high
        and a.low == b.low
        and a.close == b.close
        and a.volume == b.volume
        and a.turnover == b.turnover
    )


def _render(bar: Bar) -> str:
    return (
        f"o={bar.open!r} h={bar.high!r} l={bar.low!r} c={bar.close!r} "
        f"v={bar.volume!r} t={bar.turnover!r} ({bar.source})"
    )

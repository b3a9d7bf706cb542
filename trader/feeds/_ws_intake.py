"""The kline intake of `BybitKlineFeed`: typed pushes in, new confirmed bars out.

Owns the per-topic `ConfirmedBarFilter`s, the exchange time (newest push ``ts``) and the
accounting of every dropped frame or item in the `RejectionCounter` (logged as
``frame_rejected``). It is sans-I/O: no sockets, no asyncio, no queue. It must not parse JSON
(`parse_frame` does) nor deliver events (the feed shell does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

import structlog

from trader.domain import Bar, BarSource
from trader.errors import DataError
from trader.feeds.confirmed import ConfirmedBarFilter
from trader.feeds.frames import KlinePush
from trader.feeds.subscriptions import kline_topic
from trader.replay.rejections import Rejection, RejectionCounter

#: The `source` of every rejection the live feed records.
REJECTION_SOURCE: Final = "bybit.ws"


class KlineIntake:
    """Exactly-once confirmed bars and last prices for a fixed set of kline topics.

    Args:
        symbols: The symbols, one topic each.
        interval: The Bybit interval code of every topic.
        rejections: Where dropped frames and items are counted.
    """

    def __init__(self, symbols: Sequence[str], interval: str, rejections: RejectionCounter) -> None:
        self._interval = interval
        self._rejections = rejections
        self._filters = {
            kline_topic(interval, symbol): ConfirmedBarFilter(symbol, interval)
            for symbol in symbols
        }
        self._log = structlog.get_logger().bind(feed="bybit", interval=interval)
        self.exchange_time_ms: int | None = None

    def last_price(self, symbol: str) -> float | None:
        """The latest valid close of ``symbol`` (unconfirmed updates included), or None."""
        return self._filters[kline_topic(self._interval, symbol)].last_price

    def last_starts(self) -> dict[str, int]:
        """Per symbol, the start of the newest confirmed bar so far; symbols without one omitted."""
        return {
            f.symbol: f.last_start_ms for f in self._filters.values() if f.last_start_ms is not None
        }

    def on_push(self, push: KlinePush) -> list[Bar]:
        """Apply every item of one push; return the new confirmed bars in order.

        Bad items, identical repeats and pushes for topics not held are counted and dropped.
        """
        if self.exchange_time_ms is None or push.ts_ms > self.exchange_time_ms:
            self.exchange_time_ms = push.ts_ms
        bar_filter = self._filters.get(push.topic)
        if bar_filter is None:
            self.reject(DataError("unknown_topic", push.topic, symbol=push.symbol))
            return []
        bars: list[Bar] = []
        for item in push.items:
            duplicates = bar_filter.duplicates
            try:
                bar = bar_filter.accept(item, BarSource.WS, push_ms=push.ts_ms)
            except DataError as exc:
                self.reject(exc, symbol=push.symbol)
                continue
            if bar is not None:
                bars.append(dataclasses.replace(bar, known_ms=push.ts_ms))
            elif bar_filter.duplicates > duplicates:
                detail = f"repeat of confirmed start={item.start_ms}"
                self.reject(DataError("duplicate", detail, symbol=push.symbol))
        return bars

    def reject(self, exc: DataError, symbol: str | None = None) -> None:
        """Count and log one dropped frame or item."""
        self._log.info("frame_rejected", reason=exc.reason, symbol=exc.symbol or symbol)
        self._rejections.record(
            Rejection.from_error(exc, source=REJECTION_SOURCE, line=None, symbol=symbol)
        )

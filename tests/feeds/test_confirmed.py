"""Tests for trader.feeds.confirmed: each confirmed bar once, in order."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from trader.domain import Bar, BarSource
from trader.errors import DataError
from trader.feeds.confirmed import ConfirmedBarFilter
from trader.feeds.frames import KlineItem, KlinePush, parse_frame

FIVE_MIN_MS = 300_000
T0 = 1672324800000


def _item(
    start_ms: int = T0, *, confirm: bool = True, close: float = 101.0, **changes: Any
) -> KlineItem:
    item = KlineItem(
        start_ms=start_ms,
        end_ms=start_ms + FIVE_MIN_MS - 1,
        interval="5",
        open=100.0,
        high=102.0,
        low=99.0,
        close=close,
        volume=2.0,
        turnover=200.0,
        confirm=confirm,
        timestamp_ms=start_ms + FIVE_MIN_MS - 100,
    )
    return dataclasses.replace(item, **changes)


def _bar(start_ms: int = T0, close: float = 101.0, source: BarSource = BarSource.REST) -> Bar:
    return Bar("BTCUSDT", "5", start_ms, 100.0, 102.0, 99.0, close, 2.0, 200.0, source)


def test_bar_passed_once_when_item_is_confirmed() -> None:
    """A confirmed item becomes a ws bar and moves last_start_ms."""
    bars = ConfirmedBarFilter("BTCUSDT", "5")

    bar = bars.accept(_item(), BarSource.WS)

    assert bar == _bar(source=BarSource.WS)
    assert bars.last_start_ms == T0


def test_only_last_price_moves_when_item_is_unconfirmed() -> None:
    """An unconfirmed item is no bar; it refreshes last_price and its exchange time."""
    bars = ConfirmedBarFilter("BTCUSDT", "5")

    result = bars.accept(_item(confirm=False, close=100.5, timestamp_ms=T0 + 1234), BarSource.WS)

    assert result is None
    assert (bars.last_price, bars.last_price_ts_ms) == (100.5, T0 + 1234)
    assert bars.last_start_ms is None


def test_repeat_dropped_and_counted_when_values_are_identical() -> None:
    """A second identical confirm for the same start is dropped and counted as a duplicate."""
    bars = ConfirmedBarFilter("BTCUSDT", "5")
    bars.accept(_item(), BarSource.WS)

    assert bars.accept(_item(), BarSource.WS) is None
    assert bars.duplicates == 1


def test_duplicate_conflict_raised_when_repeat_has_different_values() -> None:
    """A second confirm for the same start with another close is a duplicate_conflict."""
    bars = ConfirmedBarFilter("BTCUSDT", "5")
    bars.accept(_item(), BarSource.WS)

    with pytest.raises(DataError) as caught:
        bars.accept(_item(close=100.0), BarSource.WS)

    assert caught.value.reason == "duplicate_conflict"


def test_out_of_order_raised_when_start_is_older_than_remembered() -> None:
    """An older start the filter no longer remembers is out_of_order."""
    bars = ConfirmedBarFilter("BTCUSDT", "5", history_bars=1)
    bars.accept(_item(T0), BarSource.WS)
    bars.accept(_item(T0 + FIVE_MIN_MS), BarSource.WS)

    with pytest.raises(DataError) as caught:
        bars.accept(_item(T0), BarSource.WS)

    assert caught.value.reason == "out_of_order"


def test_out_of_order_raised_when_older_start_was_never_seen() -> None:
    """A confirm for a start before the last one that never arrived is out_of_order."""
    bars = ConfirmedBarFilter("BTCUSDT", "5")
    bars.accept(_item(T0 + FIVE_MIN_MS), BarSource.WS)

    with pytest.raises(DataError) as caught:
        bars.accept(_item(T0), BarSource.WS)

    assert caught.value.reason == "out_of_order"


def test_rest_overlap_dropped_as_duplicate_when_bar_matches_a_recent_one() -> None:
    """REST backfill repeating an older, remembered ws bar is a duplicate, not out of order."""
    bars = ConfirmedBarFilter("BTCUSDT", "5")
    bars.accept(_item(T0), BarSource.WS)
    bars.accept(_item(T0 + FIVE_MIN_MS), BarSource.WS)

    assert bars.accept_bar(_bar(T0)) is None
    assert bars.duplicates == 1


def test_rest_bar_passed_when_it_fills_the_next_start() -> None:
    """A final REST bar after the last ws bar passes with its own source label."""
    bars = ConfirmedBarFilter("BTCUSDT", "5")
    bars.accept(_item(T0), BarSource.WS)

    bar = bars.accept(_bar(T0 + FIVE_MIN_MS))

    assert bar is not None
    assert bar.source is BarSource.REST
    assert bars.last_price_ts_ms == T0 + 2 * FIVE_MIN_MS - 1


def test_interval_mismatch_raised_when_item_interval_differs_from_topic() -> None:
    """An item whose interval is not the topic's is interval_mismatch."""
    bars = ConfirmedBarFilter("BTCUSDT", "5")

    with pytest.raises(DataError) as caught:
        bars.accept(_item(interval="1"), BarSource.WS)

    assert caught.value.reason == "interval_mismatch"


def test_last_price_kept_when_unconfirmed_item_is_invalid() -> None:
    """A NaN update is rejected as non_finite and does not move the last price."""
    bars = ConfirmedBarFilter("BTCUSDT", "5")
    bars.accept(_item(confirm=False, close=100.5), BarSource.WS)

    with pytest.raises(DataError) as caught:
        bars.accept(_item(confirm=False, close=math.nan, timestamp_ms=T0 + 9), BarSource.WS)

    assert caught.value.reason == "non_finite"
    assert bars.last_price == 100.5


def test_last_price_kept_when_update_is_older() -> None:
    """An update with an older trade time than the last one does not move the price back."""
    bars = ConfirmedBarFilter("BTCUSDT", "5")
    bars.accept(_item(confirm=False, close=101.5, timestamp_ms=T0 + 2000), BarSource.WS)

    bars.accept(_item(confirm=False, close=100.5, timestamp_ms=T0 + 1000), BarSource.WS)

    assert (bars.last_price, bars.last_price_ts_ms) == (101.5, T0 + 2000)


def test_one_bar_and_new_price_when_push_closes_and_opens_a_bar() -> None:
    """A data[] with a closing and an opening bar yields one bar and the new bar's price."""
    frame = {
        "topic": "kline.5.BTCUSDT",
        "type": "snapshot",
        "ts": T0 + FIVE_MIN_MS + 12,
        "data": [
            {
                "start": T0,
                "end": T0 + FIVE_MIN_MS - 1,
                "interval": "5",
                "open": "100",
                "close": "101",
                "high": "102",
                "low": "99",
                "volume": "2",
                "turnover": "200",
                "confirm": True,
                "timestamp": T0 + FIVE_MIN_MS - 100,
            },
            {
                "start": T0 + FIVE_MIN_MS,
                "end": T0 + 2 * FIVE_MIN_MS - 1,
                "interval": "5",
                "open": "101",
                "close": "101.5",
                "high": "101.5",
                "low": "101",
                "volume": "0.1",
                "turnover": "10.1",
                "confirm": False,
                "timestamp": T0 + FIVE_MIN_MS + 5,
            },
        ],
    }
    push = parse_frame(frame)
    assert isinstance(push, KlinePush)
    bars = ConfirmedBarFilter(push.symbol, push.interval)

    accepted = [bars.accept(item, BarSource.WS) for item in push.items]

    assert accepted == [_bar(source=BarSource.WS), None]
    assert (bars.last_price, bars.last_start_ms) == (101.5, T0)


def test_value_error_raised_when_bar_belongs_to_another_symbol() -> None:
    """Offering another symbol's bar is a wiring error, not data."""
    bars = ConfirmedBarFilter("ETHUSDT", "5")

    with pytest.raises(ValueError, match="BTCUSDT"):
        bars.accept_bar(_bar())


def test_bar_after_push_raised_when_confirmed_bar_starts_after_its_push() -> None:
    """A confirmed item starting after the push's ts is rejected and moves nothing."""
    bars = ConfirmedBarFilter("BTCUSDT", "5")
    far = T0 + 100_000 * FIVE_MIN_MS

    with pytest.raises(DataError) as caught:
        bars.accept(_item(far), BarSource.WS, push_ms=T0 + FIVE_MIN_MS + 12)

    assert caught.value.reason == "bar_after_push"
    assert bars.last_start_ms is None
    assert bars.accept(_item(T0), BarSource.WS, push_ms=T0 + FIVE_MIN_MS + 12) is not None


def test_bar_passed_when_push_comes_at_or_after_its_start() -> None:
    """A confirmed bar pushed after its close, or at its very start, is accepted."""
    bars = ConfirmedBarFilter("BTCUSDT", "5")

    first = bars.accept(_item(T0), BarSource.WS, push_ms=T0 + FIVE_MIN_MS + 12)
    second = bars.accept(_item(T0 + FIVE_MIN_MS), BarSource.WS, push_ms=T0 + FIVE_MIN_MS)

    assert first is not None
    assert second is not None


def test_unconfirmed_item_ignores_push_time_when_it_starts_later() -> None:
    """Only confirmed items are held to their push time; an update only moves the price."""
    bars = ConfirmedBarFilter("BTCUSDT", "5")

    result = bars.accept(_item(T0 + FIVE_MIN_MS, confirm=False), BarSource.WS, push_ms=T0)

    assert result is None
    assert bars.last_price == 101.0

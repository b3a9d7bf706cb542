"""Market facts risk keeps per symbol: prices, last bar, and Wilder's ATR."""

from __future__ import annotations

import math

import pytest

from risk.market import MarketTracker
from tests.risk.builders import INTERVAL_MS, T0_MS, bar
from trader.domain import Bar


def _bar(index: int, high: float, low: float, close: float) -> Bar:
    base = bar("BTCUSDT", index, close)
    return Bar(base.symbol, base.interval, base.start_ms, close, high, low, close, 1.0, 1.0)


def test_atr_is_mean_of_true_ranges_when_period_completes() -> None:
    """The first ATR is the mean of `period` true ranges (gaps from the previous close count)."""
    tracker = MarketTracker(atr_period=3)
    tracker.update(_bar(0, 102.0, 98.0, 100.0))  # range 4
    tracker.update(_bar(1, 101.0, 99.0, 100.0))  # range 2
    market = tracker.get("BTCUSDT")
    assert market is not None
    assert market.atr is None  # two of three ranges
    tracker.update(_bar(2, 112.0, 109.0, 110.0))  # gap up: |112 - 100| = 12
    assert market.atr == pytest.approx((4 + 2 + 12) / 3)


def test_atr_smooths_like_wilder_when_warm() -> None:
    """After warm-up each range moves the ATR by 1/period of the difference."""
    tracker = MarketTracker(atr_period=2)
    for index in range(2):
        tracker.update(_bar(index, 101.0, 99.0, 100.0))  # ranges 2, 2
    tracker.update(_bar(2, 104.0, 100.0, 102.0))  # range 4
    market = tracker.get("BTCUSDT")
    assert market is not None
    assert market.atr == pytest.approx((2.0 * 1 + 4.0) / 2)


def test_update_returns_log_return_when_previous_close_known() -> None:
    """Each bar after the first yields its log return and keeps the previous close."""
    tracker = MarketTracker(atr_period=14)
    assert tracker.update(bar("ETHUSDT", 0, 2_000.0)) is None
    got = tracker.update(bar("ETHUSDT", 1, 2_200.0))
    assert got == pytest.approx(math.log(1.1))
    market = tracker.get("ETHUSDT")
    assert market is not None
    assert (market.close, market.previous_close) == (2_200.0, 2_000.0)
    assert (market.last_start_ms, market.interval_ms) == (T0_MS + INTERVAL_MS, INTERVAL_MS)


def test_old_bar_is_ignored_when_fed_again() -> None:
    """A bar not newer than the last one changes nothing (replays and backfills are harmless)."""
    tracker = MarketTracker(atr_period=14)
    tracker.update(bar("BTCUSDT", 5, 100.0))
    assert tracker.update(bar("BTCUSDT", 5, 200.0)) is None
    assert tracker.update(bar("BTCUSDT", 4, 300.0)) is None
    assert tracker.price("BTCUSDT") == 100.0
    assert tracker.price("ETHUSDT") is None


def test_gap_counts_the_bars_missing_before_the_latest_one() -> None:
    """A feed outage shows as the bars missing right before the newest bar; it resets after."""
    tracker = MarketTracker(atr_period=14)
    for index in (0, 1, 5, 6):
        tracker.update(bar("BTCUSDT", index, 100.0))
        market = tracker.get("BTCUSDT")
        assert market is not None
        assert market.gap_bars == (3 if index == 5 else 0)

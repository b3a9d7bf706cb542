"""Tests for trader.feeds.validation: the rules every bar passes."""

from __future__ import annotations

import math
from typing import Any

import pytest

from trader.domain import Bar, BarSource
from trader.errors import DataError
from trader.feeds.validation import validate_bar

START_MS = 1672324800000  # a 5-minute boundary
GOOD: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "interval": "5",
    "start_ms": START_MS,
    "open": 16649.5,
    "high": 16690.0,
    "low": 16608.0,
    "close": 16681.5,
    "volume": 3.512,
    "turnover": 58497.1305,
    "end_ms": START_MS + 300_000 - 1,
    "source": BarSource.WS,
}


def _validate(**changes: Any) -> Bar:
    return validate_bar(**dict(GOOD, **changes))


def test_bar_built_when_values_are_valid() -> None:
    """A valid candle comes back as a Bar carrying the given source."""
    bar = _validate()

    assert bar == Bar(
        "BTCUSDT",
        "5",
        START_MS,
        16649.5,
        16690.0,
        16608.0,
        16681.5,
        3.512,
        58497.1305,
        BarSource.WS,
    )


def test_bar_built_when_end_is_absent_and_interval_is_daily() -> None:
    """Candle rows have no end; a daily bar at midnight UTC is aligned."""
    bar = _validate(interval="D", start_ms=1672272000000, end_ms=None, source=BarSource.REPLAY)

    assert bar.interval == "D"
    assert bar.source is BarSource.REPLAY


def test_bar_built_when_volume_is_zero_and_prices_are_flat() -> None:
    """A bar without trades (volume 0, open = high = low = close) is valid."""
    bar = _validate(open=100.0, high=100.0, low=100.0, close=100.0, volume=0.0, turnover=0.0)

    assert bar.volume == 0.0


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"open": math.nan}, "non_finite"),
        ({"high": math.inf}, "non_finite"),
        ({"low": -math.inf}, "non_finite"),
        ({"close": math.nan}, "non_finite"),
        ({"volume": math.inf}, "non_finite"),
        ({"turnover": math.nan}, "non_finite"),
        ({"open": 0.0, "low": 0.0}, "non_positive_price"),
        ({"low": -1.0}, "non_positive_price"),
        ({"open": -5.0, "high": -1.0, "low": -9.0, "close": -2.0}, "non_positive_price"),
        ({"volume": -0.001}, "negative_volume"),
        ({"turnover": -1.0}, "negative_volume"),
        ({"high": 16600.0}, "high_below_low"),
        ({"open": 16700.0}, "open_outside_range"),
        ({"open": 16600.0}, "open_outside_range"),
        ({"close": 16690.5}, "close_outside_range"),
        ({"close": 16607.9}, "close_outside_range"),
        ({"interval": "W"}, "interval_mismatch"),
        ({"start_ms": START_MS + 60_000, "end_ms": None}, "misaligned_start"),
        ({"start_ms": -300_000, "end_ms": None}, "misaligned_start"),
        ({"end_ms": START_MS + 300_000}, "bad_end"),
        ({"end_ms": START_MS + 60_000 - 1}, "bad_end"),
        ({"open": 1e150, "high": 1e150, "low": 1e150, "close": 1e150}, "price_out_of_range"),
        ({"high": 1e20}, "price_out_of_range"),
        ({"high": 1.000001e9}, "price_out_of_range"),
        ({"volume": 1e19}, "volume_out_of_range"),
        ({"turnover": 1e300}, "volume_out_of_range"),
    ],
)
def test_data_error_raised_when_a_rule_is_broken(changes: dict[str, Any], reason: str) -> None:
    """Each broken rule raises DataError with its stable reason and the symbol."""
    with pytest.raises(DataError) as caught:
        _validate(**changes)

    assert caught.value.reason == reason
    assert caught.value.symbol == "BTCUSDT"


def test_bar_built_when_prices_are_tiny_or_just_inside_the_bound() -> None:
    """A price of 1e-8 USDT and one of exactly 1e9 USDT are still valid prices."""
    tiny = _validate(open=1e-8, high=2e-8, low=1e-8, close=1.5e-8)
    top = _validate(open=1e9, high=1e9, low=1e9, close=1e9, volume=1e18, turnover=1e18)

    assert (tiny.low, top.high) == (1e-8, 1e9)

"""The streaming FeatureBuffer and FeatureBook: warm-up, windows, accessors and input checks."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from tests.support.candles import random_walk_bars
from trader.domain import Bar
from trader.features.buffer import FeatureBook, FeatureBuffer, warmup_bars
from trader.features.kernel import KERNEL_WARMUP_BARS
from trader.features.schema import MARKET_FEATURES, ROBUST_MASK, feature_schema_hash


def _small(interval: str = "5") -> FeatureBuffer:
    """A buffer with small windows (tactical 8, strategic 24, scale 16, clip 4)."""
    return FeatureBuffer(
        interval=interval, tactical_window=8, strategic_window=24, scale_window=16, clip=4.0
    )


def test_ready_only_when_warmup_bars_seen() -> None:
    """`ready` flips exactly at `warmup_bars`, and the first strategic window is all finite."""
    buffer = FeatureBuffer(interval="5")
    assert buffer.warmup_bars == KERNEL_WARMUP_BARS + 256 - 1 + 256 - 1
    for i, bar in enumerate(random_walk_bars(buffer.warmup_bars, seed=4)):
        assert not buffer.ready
        buffer.update(bar)
        assert buffer.bars_seen == i + 1
        assert buffer.last_start_ms == bar.start_ms
    assert buffer.ready
    assert np.isfinite(buffer.strategic_window()).all()


def test_windows_raise_when_not_ready() -> None:
    """Asking for a window before warm-up is a caller error, never a half-NaN window."""
    buffer = _small()
    for bar in random_walk_bars(buffer.warmup_bars - 1, seed=4):
        buffer.update(bar)
    with pytest.raises(RuntimeError, match="warm-up"):
        buffer.tactical_window()
    with pytest.raises(RuntimeError, match="warm-up"):
        buffer.strategic_window()


def test_warmup_needs_complete_scale_window_when_windows_are_small() -> None:
    """With small windows the warm-up is the raw warm-up plus the scale and strategic windows."""
    assert warmup_bars(strategic_window=24, scale_window=16) == KERNEL_WARMUP_BARS + 15 + 23
    assert _small().warmup_bars == KERNEL_WARMUP_BARS + 38


def test_windows_are_fresh_float32_copies_when_returned() -> None:
    """Windows are float32, oldest first, and writing to one does not alter the next."""
    buffer = _small()
    for bar in random_walk_bars(buffer.warmup_bars + 5, seed=6):
        buffer.update(bar)
    tactical, strategic = buffer.tactical_window(), buffer.strategic_window()
    assert tactical.dtype == strategic.dtype == np.float32
    assert tactical.shape == (8, len(MARKET_FEATURES))
    assert strategic.shape == (24, len(MARKET_FEATURES))
    assert np.array_equal(tactical, strategic[-8:])
    strategic[:] = 99.0
    assert np.abs(buffer.strategic_window()).max() <= 4.0


def test_windows_finite_and_neutral_when_price_is_constant() -> None:
    """A flat market (MAD = 0) gives finite windows whose robust-scaled columns are 0."""
    buffer = _small("1")
    for i in range(buffer.warmup_bars + 10):
        buffer.update(Bar("FLAT", "1", i * 60_000, 50.0, 50.0, 50.0, 50.0, 3.0, 150.0))
    window = buffer.strategic_window()
    assert np.isfinite(window).all()
    assert not window[:, ROBUST_MASK].any()


def test_raw_and_ema_track_newest_bar_when_updated() -> None:
    """`raw` returns the newest row's value by name and `ema` the kernel's EMA (NaN early)."""
    bars = random_walk_bars(30, seed=8)
    buffer = FeatureBuffer(interval="5")
    assert math.isnan(buffer.raw("ret_1"))
    for bar in bars:
        buffer.update(bar)
    assert buffer.raw("ret_1") == math.log(bars[-1].close / bars[-2].close)
    assert buffer.raw("hl_range") == (bars[-1].high - bars[-1].low) / bars[-1].close
    assert math.isfinite(buffer.ema(21))
    assert math.isnan(buffer.ema(50))
    with pytest.raises(KeyError, match="unknown market feature"):
        buffer.raw("close")


def test_update_raises_when_bar_out_of_order_or_of_another_stream() -> None:
    """Bars that repeat or go back in time, or belong to another symbol or interval, raise."""
    bars = random_walk_bars(3, seed=1)
    buffer = FeatureBuffer(interval="5", symbol="TESTUSDT")
    buffer.update(bars[0])
    buffer.update(bars[1])
    for bad in (
        bars[1],
        bars[0],
        dataclasses.replace(bars[2], symbol="ETHUSDT"),
        dataclasses.replace(bars[2], interval="1"),
    ):
        with pytest.raises(ValueError, match=r"does not start after|fed to the"):
            buffer.update(bad)
    assert buffer.bars_seen == 2


@pytest.mark.parametrize(
    "params",
    [
        {"tactical_window": 0},
        {"tactical_window": 300},
        {"scale_window": 1},
        {"clip": 0.0},
        {"clip": math.inf},
        {"interval": "7"},
    ],
)
def test_constructor_raises_when_parameters_invalid(params: dict[str, object]) -> None:
    """Invalid windows, clip or interval are refused when the buffer is built."""
    kwargs: dict[str, object] = {"interval": "5", **params}
    with pytest.raises(ValueError, match=r"window|clip|interval"):
        FeatureBuffer(**kwargs)  # type: ignore[arg-type]


def test_book_creates_one_buffer_per_stream_when_bars_arrive() -> None:
    """The book keys buffers by (symbol, interval), creating each on its first bar."""
    book = FeatureBook(tactical_window=8, strategic_window=24, scale_window=16, clip=4.0)
    btc = random_walk_bars(5, seed=1, symbol="BTCUSDT")
    eth = random_walk_bars(5, seed=2, symbol="ETHUSDT")
    eth_15 = random_walk_bars(5, seed=3, symbol="ETHUSDT", interval="15")
    assert book.get("BTCUSDT", "5") is None
    for a, b, c in zip(btc, eth, eth_15, strict=True):
        buffer = book.update(a)
        book.update(b)
        book.update(c)
    assert book.get("BTCUSDT", "5") is buffer
    assert buffer.symbol == "BTCUSDT"
    assert len(book) == 3
    assert book.get("ETHUSDT", "15") is not None
    assert book.get("ETHUSDT", "15").bars_seen == 5  # type: ignore[union-attr]
    assert (
        book.schema_hash
        == buffer.schema_hash
        == feature_schema_hash(tactical_window=8, strategic_window=24, scale_window=16, clip=4.0)
    )
    assert book.warmup_bars == buffer.warmup_bars


def test_book_raises_when_parameters_invalid() -> None:
    """Bad window parameters fail when the book is built, not on the first bar."""
    with pytest.raises(ValueError, match="tactical_window"):
        FeatureBook(tactical_window=100, strategic_window=50)

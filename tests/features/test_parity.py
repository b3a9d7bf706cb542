"""One definition of the features: streaming equals batch exactly, and nothing looks ahead."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import numpy as np
import pytest

from tests.support.candles import load_candles
from trader.domain import Bar
from trader.features.buffer import FeatureBuffer
from trader.features.dataset import FeatureMatrix, build_feature_matrix, window_at
from trader.features.schema import MARKET_FEATURES

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture(scope="module")
def btc_bars() -> list[Bar]:
    """The 1,500-bar BTCUSDT 5m fixture."""
    return load_candles(FIXTURES / "BTCUSDT_5m.csv.gz", "BTCUSDT", "5")


@pytest.fixture(scope="module")
def btc_matrix(btc_bars: list[Bar]) -> FeatureMatrix:
    """The fixture's whole-history matrix at the default windows."""
    return build_feature_matrix(btc_bars)


def _stream(
    bars: list[Bar], buffer: FeatureBuffer, ask_at: set[int]
) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Feed every bar; return the raw rows and the windows asked for after the bars in ask_at."""
    raws, windows = [], {}
    for i, bar in enumerate(bars):
        buffer.update(bar)
        raws.append([buffer.raw(name) for name in MARKET_FEATURES])
        if i in ask_at:
            windows[i] = (buffer.tactical_window(), buffer.strategic_window())
    return np.array(raws), windows


def test_streaming_equals_batch_when_windows_asked_every_bar(
    btc_bars: list[Bar], btc_matrix: FeatureMatrix
) -> None:
    """Raw rows at every bar and every scaled row are identical to the batch matrix."""
    buffer = FeatureBuffer(interval="5")
    ready_from = buffer.warmup_bars - 1
    raws, windows = _stream(btc_bars, buffer, set(range(ready_from, len(btc_bars))))
    assert np.array_equal(raws, btc_matrix.raw, equal_nan=True)
    for i, (tactical, strategic) in windows.items():
        assert tactical.dtype == np.float32
        assert tactical.shape == (64, len(MARKET_FEATURES))
        assert strategic.shape == (256, len(MARKET_FEATURES))
        assert np.array_equal(tactical, btc_matrix.scaled[i - 63 : i + 1])
        assert np.array_equal(strategic, window_at(btc_matrix, i, 256))
    # Every scaled row the batch defines was produced by the stream (the first window reaches
    # back to the first valid row) and compared above.
    assert int(np.argmax(btc_matrix.valid)) == ready_from - 255


@pytest.mark.parametrize("seed", [0, 1])
def test_streaming_equals_batch_when_windows_asked_sparsely(btc_bars: list[Bar], seed: int) -> None:
    """Irregular gaps between requests (cache refills and compaction) still match the batch."""
    matrix = build_feature_matrix(btc_bars, scale_window=40, clip=3.0)
    buffer = FeatureBuffer(
        interval="5", tactical_window=16, strategic_window=48, scale_window=40, clip=3.0
    )
    rng = random.Random(seed)
    ask_at, i = set(), buffer.warmup_bars - 1
    while i < len(btc_bars):
        ask_at.add(i)
        i += rng.choice([1, 1, 2, 7, 47, 48, 49, 95, 96, 300])
    raws, windows = _stream(btc_bars, buffer, ask_at)
    assert np.array_equal(raws, matrix.raw, equal_nan=True)
    for i, (tactical, strategic) in windows.items():
        assert np.array_equal(tactical, window_at(matrix, i, 16))
        assert np.array_equal(strategic, window_at(matrix, i, 48))


def _perturb_after(bars: list[Bar], t: int, seed: int) -> list[Bar]:
    rng = random.Random(seed)
    out = list(bars[: t + 1])
    for bar in bars[t + 1 :]:
        k = math.exp(rng.gauss(0.0, 0.05))
        out.append(
            dataclasses.replace(
                bar,
                open=bar.open * k,
                high=bar.high * k * 1.01,
                low=bar.low * k * 0.99,
                close=bar.close * k,
                volume=bar.volume * rng.uniform(0.1, 10.0),
            )
        )
    return out


@pytest.mark.parametrize("t", [0, 300, 781, 1000, 1498])
def test_nothing_changes_up_to_t_when_bars_after_t_are_perturbed(
    btc_bars: list[Bar], btc_matrix: FeatureMatrix, t: int
) -> None:
    """Perturbing every bar after index t leaves every raw and scaled value at or before t as is."""
    perturbed = build_feature_matrix(_perturb_after(btc_bars, t, seed=t))
    assert np.array_equal(perturbed.raw[: t + 1], btc_matrix.raw[: t + 1], equal_nan=True)
    assert np.array_equal(perturbed.scaled[: t + 1], btc_matrix.scaled[: t + 1], equal_nan=True)
    assert np.array_equal(perturbed.valid[: t + 1], btc_matrix.valid[: t + 1])
    if t < len(btc_bars) - 1:
        assert not np.array_equal(perturbed.raw[t + 1 :], btc_matrix.raw[t + 1 :], equal_nan=True)


def test_stream_windows_unchanged_when_later_bars_differ(btc_bars: list[Bar]) -> None:
    """A streaming buffer's windows at bar t do not depend on bars fed after it."""
    t = 900
    original, perturbed = FeatureBuffer(interval="5"), FeatureBuffer(interval="5")
    for bar in btc_bars[: t + 1]:
        original.update(bar)
    for bar in _perturb_after(btc_bars, t, seed=9)[: t + 1]:
        perturbed.update(bar)
    assert np.array_equal(original.strategic_window(), perturbed.strategic_window())


def test_streaming_equals_batch_when_a_price_spike_cancels_the_running_sums(
    btc_bars: list[Bar],
) -> None:
    """A 1e150 bar (past the feeds' bound: only the kernel's guards) gives equal rows both ways."""
    bars = list(btc_bars)
    spike = 1e150
    bars[700] = dataclasses.replace(bars[700], open=spike, high=spike, low=spike, close=spike)

    matrix = build_feature_matrix(bars)
    raws, _ = _stream(bars, FeatureBuffer(interval="5"), set())

    assert np.array_equal(raws, matrix.raw, equal_nan=True)

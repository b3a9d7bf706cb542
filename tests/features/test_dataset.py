"""Whole-history feature matrices: layout, validity, read-only arrays and window slicing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.support.candles import random_walk_bars
from trader.domain import Bar
from trader.features.buffer import warmup_bars
from trader.features.dataset import FeatureMatrix, build_feature_matrix, window_at
from trader.features.kernel import KERNEL_WARMUP_BARS
from trader.features.schema import MARKET_FEATURES


@pytest.fixture(scope="module")
def bars() -> list[Bar]:
    """600 synthetic bars."""
    return random_walk_bars(600, seed=21)


@pytest.fixture(scope="module")
def matrix(bars: list[Bar]) -> FeatureMatrix:
    """Their matrix with a 32-row scale window."""
    return build_feature_matrix(bars, scale_window=32, clip=3.0)


def test_matrix_has_one_row_per_bar_when_built(bars: list[Bar], matrix: FeatureMatrix) -> None:
    """Shapes, dtypes, names and timestamps follow the bars."""
    n, f = len(bars), len(MARKET_FEATURES)
    assert len(matrix) == n
    assert matrix.raw.shape == matrix.scaled.shape == (n, f)
    assert matrix.raw.dtype == np.float64
    assert matrix.scaled.dtype == np.float32
    assert matrix.valid.dtype == np.bool_
    assert matrix.start_ms.dtype == np.int64
    assert matrix.start_ms.tolist() == [b.start_ms for b in bars]
    assert matrix.names == MARKET_FEATURES
    assert (matrix.symbol, matrix.interval, matrix.scale_window) == ("TESTUSDT", "5", 32)


def test_valid_rows_start_after_raw_and_scale_warmup_when_built(matrix: FeatureMatrix) -> None:
    """Rows are valid from KERNEL_WARMUP_BARS + scale_window - 2 on; invalid rows are NaN."""
    first = KERNEL_WARMUP_BARS + 32 - 2
    assert not matrix.valid[:first].any()
    assert matrix.valid[first:].all()
    assert np.isnan(matrix.scaled[:first]).all()
    assert np.isfinite(matrix.scaled[first:]).all()
    assert np.abs(matrix.scaled[first:]).max() <= 3.0
    # The streaming buffer is ready exactly when a strategic window of valid rows exists.
    assert warmup_bars(strategic_window=10, scale_window=32) - 10 == first


def test_arrays_are_read_only_when_returned(matrix: FeatureMatrix) -> None:
    """No caller can alter the matrix (or a window view of it) in place."""
    for array in (matrix.raw, matrix.scaled, matrix.valid, matrix.start_ms):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    with pytest.raises(ValueError, match="read-only"):
        window_at(matrix, len(matrix) - 1, 8)[0, 0] = 1.0


def test_window_at_slices_rows_ending_at_index_when_valid(matrix: FeatureMatrix) -> None:
    """`window_at(m, i, L)` is rows i-L+1..i of the scaled matrix, oldest first."""
    window = window_at(matrix, 500, 20)
    assert window.shape == (20, len(MARKET_FEATURES))
    assert np.array_equal(window, matrix.scaled[481:501])


@pytest.mark.parametrize(("i", "length"), [(5, 10), (600, 4), (400, 0), (310, 20)])
def test_window_at_raises_when_window_does_not_fit_or_is_invalid(
    matrix: FeatureMatrix, i: int, length: int
) -> None:
    """Windows reaching before row 0, past the end, empty, or over invalid rows are refused."""
    with pytest.raises(ValueError, match=r"does not fit|not yet valid"):
        window_at(matrix, i, length)


def test_build_raises_when_bars_mixed_or_empty(bars: list[Bar]) -> None:
    """No bars, another symbol in the middle, or a repeated bar are refused."""
    with pytest.raises(ValueError, match="no bars"):
        build_feature_matrix([])
    mixed = [*bars[:10], dataclasses.replace(bars[10], symbol="ETHUSDT")]
    with pytest.raises(ValueError, match="fed to the"):
        build_feature_matrix(mixed)
    with pytest.raises(ValueError, match="does not start after"):
        build_feature_matrix([*bars[:10], bars[9]])


def test_matrix_has_no_valid_rows_when_history_is_short(bars: list[Bar]) -> None:
    """A history shorter than the warm-up builds, with every scaled row NaN."""
    short = build_feature_matrix(bars[:100], scale_window=32)
    assert not short.valid.any()
    assert np.isnan(short.scaled).all()

"""Whole-history feature matrices for training and evaluation.

Owns turning a full, ordered bar history of one stream into raw and scaled feature matrices
that equal, bit for bit, what the streaming `FeatureBuffer` would have produced at every bar:
raw rows come from the same `FeatureKernel`, scaled rows from the same `robust_scale`, run
vectorised over chunks to bound memory. It must not define feature arithmetic or scaling of its
own, read files or databases, or look at a bar after the row it computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trader.domain import Bar
from trader.features.kernel import FeatureKernel
from trader.features.scaling import robust_scale
from trader.features.schema import MARKET_FEATURES

#: Scaled rows per `robust_scale` call; bounds its (F, rows, scale_window) float64 temporary
#: (64 x 31 x 256 x 8 B ~ 4 MB), small enough to be reused rather than page-faulted afresh.
CHUNK_ROWS = 64


@dataclass(frozen=True, slots=True)
class FeatureMatrix:
    """Every bar's features of one stream; the arrays are read-only.

    Row i is what a `FeatureBuffer` with the same `scale_window` and `clip` holds as its newest
    row after bar i. `valid[i]` is True when the scaled row is defined (all raw features
    finite over the scale window ending at i); scaled rows that are not valid are NaN.
    """

    symbol: str
    interval: str
    names: tuple[str, ...]
    raw: np.ndarray  # (N, F) float64, NaN while a feature warms up
    scaled: np.ndarray  # (N, F) float32, NaN where not valid
    valid: np.ndarray  # (N,) bool
    start_ms: np.ndarray  # (N,) int64
    scale_window: int
    clip: float

    def __len__(self) -> int:
        """Number of bars (rows)."""
        return int(self.start_ms.shape[0])


def build_feature_matrix(
    bars: Sequence[Bar], *, scale_window: int = 256, clip: float = 5.0
) -> FeatureMatrix:
    """Compute the raw and scaled features of every bar of one stream.

    Args:
        bars: one symbol's bars of one interval, strictly increasing `start_ms`.
        scale_window: trailing raw rows behind each robust-scaled value (current included).
        clip: scaled values are clipped to [-clip, clip].

    Returns:
        The stream's `FeatureMatrix`.

    Raises:
        ValueError: no bars, mixed symbols or intervals, bars out of order or invalid prices
            (the kernel's checks), or bad `scale_window`/`clip`.
    """
    if not bars:
        raise ValueError("cannot build a feature matrix from no bars")
    if scale_window < 2 or not clip > 0.0:
        raise ValueError(f"need scale_window >= 2 and clip > 0, got {scale_window}, {clip}")
    first = bars[0]
    kernel = FeatureKernel(interval=first.interval, symbol=first.symbol)
    rows = [kernel.update(bar) for bar in bars]
    raw = np.asarray(rows, dtype=np.float64)  # (N, F)
    n = raw.shape[0]
    valid = _valid_rows(raw, scale_window)
    scaled = np.full(raw.shape, np.nan, dtype=np.float32)  # (N, F)
    if valid.any():
        columns = np.ascontiguousarray(raw.T)  # (F, N), the layout robust_scale wants
        start = int(np.argmax(valid))
        for lo in range(start, n, CHUNK_ROWS):
            hi = min(lo + CHUNK_ROWS, n)
            block = columns[:, lo - scale_window + 1 : hi]
            scaled[lo:hi] = robust_scale(block, window=scale_window, clip=clip)
        scaled[~valid] = np.nan
    start_ms = np.fromiter((bar.start_ms for bar in bars), dtype=np.int64, count=n)  # (N,)
    for array in (raw, scaled, valid, start_ms):
        array.flags.writeable = False
    return FeatureMatrix(
        symbol=first.symbol,
        interval=first.interval,
        names=MARKET_FEATURES,
        raw=raw,
        scaled=scaled,
        valid=valid,
        start_ms=start_ms,
        scale_window=scale_window,
        clip=float(clip),
    )


def _valid_rows(raw: np.ndarray, scale_window: int) -> np.ndarray:
    """Rows whose scale window (current included) holds only complete raw rows. # (N,)"""
    n = raw.shape[0]
    incomplete = np.concatenate(([0], np.cumsum(~np.isfinite(raw).all(axis=1))))  # (N + 1,)
    valid = np.zeros(n, dtype=bool)
    if n >= scale_window:
        ends = np.arange(scale_window, n + 1)
        valid[scale_window - 1 :] = incomplete[ends] == incomplete[ends - scale_window]
    return valid


def window_at(matrix: FeatureMatrix, i: int, length: int) -> np.ndarray:
    """The scaled window of `length` rows ending at row i, oldest first (a read-only view).

    It equals what a buffer's `tactical_window()` or `strategic_window()` of that length
    returns after bar i. # (length, F) float32

    Raises:
        ValueError: the window does not fit in the matrix or holds a row that is not valid.
    """
    first = i - length + 1
    if length < 1 or first < 0 or i >= len(matrix):
        raise ValueError(f"a {length}-row window ending at row {i} does not fit {len(matrix)} rows")
    if not matrix.valid[first : i + 1].all():
        raise ValueError(f"the {length}-row window ending at row {i} holds rows not yet valid")
    return matrix.scaled[first : i + 1]

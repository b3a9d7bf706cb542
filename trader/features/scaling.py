"""Robust per-symbol scaling of raw feature rows, and the lazy cache of scaled rows.

Owns the one scaling rule: for a robust-scaled column, scaled = clip((x - median) /
(MAD_TO_SIGMA * MAD + SCALE_EPS), -clip, clip) over the trailing `scale_window` raw rows
including the current one; bounded columns pass through unscaled (only clipped). The streaming
buffer and the whole-history dataset builder both call `robust_scale`, whose per-row arithmetic
does not depend on how many rows a call covers, so their scaled rows are bit-identical.

`LazyScaler` keeps the raw rows a window could need and scales a row only when a window is asked
for, at most once per row. It must not decide readiness (the buffer does), compute raw features
or touch anything but numpy arrays and the rows it is given.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from trader.features.schema import MAD_TO_SIGMA, ROBUST_MASK, SCALE_EPS


def robust_scale(columns: np.ndarray, *, window: int, clip: float) -> np.ndarray:
    """Scale every row that has `window - 1` rows before it, from column-major raw rows.

    Args:
        columns: raw rows, oldest first, transposed: one line per feature in
            `MARKET_FEATURES` order (a view is fine). # (F, m + window - 1) float64
        window: the trailing scale window, the current row included.
        clip: the scaled values are clipped to [-clip, clip].

    Returns:
        The scaled rows for the last m raw rows, oldest first, float32. # (m, F)
    """
    n_features, n_rows = columns.shape
    m = n_rows - window + 1
    k_lo, k_hi = (window - 1) // 2, window // 2
    # Feature-major, so each window is contiguous and numpy's SIMD sort applies; on windows
    # this short, sorting beats np.partition and yields exactly the same order statistics.
    if m == 1:
        # The streaming case (one new row per bar): the same view without as_strided's ~7 us.
        windows = columns[:, np.newaxis, :]  # (F, 1, window)
    else:
        step_f, step_t = columns.strides
        windows = as_strided(  # (F, m, window), a read-only view
            columns,
            shape=(n_features, m, window),
            strides=(step_f, step_t, step_t),
            writeable=False,
        )
    work = np.sort(windows, axis=-1)  # (F, m, window)
    median = 0.5 * (work[..., k_lo] + work[..., k_hi])  # (F, m)
    np.subtract(windows, median[..., None], out=work)  # reuse the buffer for |x - median|
    np.abs(work, out=work)
    work.sort(axis=-1)
    mad = 0.5 * (work[..., k_lo] + work[..., k_hi])  # (F, m)
    current = columns[:, window - 1 :]  # (F, m)
    scaled = (current - median) / (MAD_TO_SIGMA * mad + SCALE_EPS)
    out = np.where(ROBUST_MASK[:, None], scaled, current)  # bounded columns pass through
    np.clip(out, -clip, clip, out=out)
    return out.T.astype(np.float32)  # (m, F)


class LazyScaler:
    """Raw rows of one stream plus a cache of the newest `cache_rows` scaled rows.

    `push` is O(1) amortised pure Python (rows wait in a list); numpy work happens only in
    `latest`, which scales just the rows not yet in the cache. Every call brings the whole
    cache up to date, so a caller that only wants short windows pays for `cache_rows` rows once
    and then one row per new bar.

    Args:
        n_features: columns per row.
        cache_rows: how many newest scaled rows `latest` can return (the strategic window).
        scale_window: trailing raw rows behind each scaled row.
        clip: bound of the scaled values.
    """

    def __init__(self, *, n_features: int, cache_rows: int, scale_window: int, clip: float) -> None:
        self._window = scale_window
        self._clip = clip
        self._cache_rows = cache_rows
        # Raw rows a full cache refill needs: the cached rows and the window behind the oldest.
        self._keep = cache_rows + scale_window - 1
        self._count = 0
        self._pending: list[tuple[float, ...]] = []
        # Both stores are linear buffers of twice the kept length, compacted when full, so the
        # rows a call needs are always one slice (windows are strided views over it).
        self._raw = np.empty((n_features, 2 * self._keep), dtype=np.float64)  # feature-major
        self._raw_first = 0  # stream index of the row in self._raw[:, 0]
        self._raw_len = 0
        self._scaled = np.empty((2 * cache_rows, n_features), dtype=np.float32)
        self._scaled_first = 0
        self._scaled_len = 0

    def push(self, row: tuple[float, ...]) -> None:
        """Append the newest raw row."""
        pending = self._pending
        pending.append(row)
        self._count += 1
        if len(pending) >= 2 * self._keep:
            # Nobody asked for a window in a while: older rows can never be needed again.
            del pending[: -self._keep]

    def latest(self, length: int) -> np.ndarray:
        """The newest `length` scaled rows, oldest first (a fresh float32 array). # (length, F)

        The caller guarantees that the last `cache_rows` rows and the `scale_window - 1`
        rows behind them are all defined; rows outside that range are never read.
        """
        if not 0 < length <= self._cache_rows or length > self._count:
            raise ValueError(f"cannot return {length} rows after {self._count} rows")
        self._fill_cache()
        end = self._count - self._scaled_first
        return self._scaled[end - length : end].copy()

    def _flush_raw(self) -> None:
        pending = self._pending
        m = len(pending)
        if m == 0:
            return
        if m >= self._keep:
            pending = pending[-self._keep :]
            m = self._keep
            self._raw_len = 0
            self._raw_first = self._count - m
        elif self._raw_len + m > self._raw.shape[1]:
            kept = self._keep - m
            self._raw[:, :kept] = self._raw[:, self._raw_len - kept : self._raw_len]
            self._raw_first += self._raw_len - kept
            self._raw_len = kept
        start = self._raw_len
        if m == 1:
            # The streaming case: one row straight into its column, no intermediate array.
            self._raw[:, start] = pending[0]
        else:
            self._raw[:, start : start + m] = np.asarray(pending, dtype=np.float64).T
        self._raw_len += m
        self._pending.clear()

    def _fill_cache(self) -> None:
        want_first = self._count - self._cache_rows
        cached_end = self._scaled_first + self._scaled_len
        if self._scaled_len == 0 or cached_end < want_first:
            # A gap since the last call: nothing cached is still wanted.
            self._scaled_first = max(want_first, 0)
            self._scaled_len = 0
            cached_end = self._scaled_first
        m = self._count - cached_end
        if m == 0:
            return
        if self._scaled_len + m > self._scaled.shape[0]:
            kept = cached_end - max(want_first, 0)
            self._scaled[:kept] = self._scaled[self._scaled_len - kept : self._scaled_len]
            self._scaled_first = cached_end - kept
            self._scaled_len = kept
        self._flush_raw()
        lo = cached_end - self._window + 1 - self._raw_first
        if lo < 0:
            # Unreachable while `_keep` covers the cache and its window; a bug if it fires.
            raise RuntimeError("the scale window behind the requested rows is not held")
        columns = self._raw[:, lo : lo + m + self._window - 1]
        start = self._scaled_len
        self._scaled[start : start + m] = robust_scale(
            columns, window=self._window, clip=self._clip
        )
        self._scaled_len += m

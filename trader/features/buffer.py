"""The rolling feature buffer of one (symbol, interval) stream, and the book of all of them.

Owns what a strategy sees of the market (the `FeatureView` protocol of `strategies.base`): the
newest raw features and EMAs, the scaled tactical and strategic windows, and whether they are
ready. Each bar costs one O(1) kernel update; scaling is lazy (see `scaling.LazyScaler`), so a
strategy that never asks for a window never pays for scaling. It must not do I/O, know about
strategies or risk, or define feature arithmetic (that is `kernel.py`).
"""

from __future__ import annotations

import math

import numpy as np

from trader.domain import Bar
from trader.features.kernel import KERNEL_WARMUP_BARS, FeatureKernel
from trader.features.scaling import LazyScaler
from trader.features.schema import FEATURE_INDEX, MARKET_FEATURES, feature_schema_hash


def warmup_bars(*, strategic_window: int, scale_window: int) -> int:
    """Bars a stream needs before its strategic window is full of valid scaled rows.

    The raw row is complete from bar `KERNEL_WARMUP_BARS` on; a scaled row also needs
    `scale_window - 1` complete raw rows behind it, and the window `strategic_window` such rows.
    """
    return KERNEL_WARMUP_BARS + scale_window - 1 + strategic_window - 1


class FeatureBuffer:
    """Rolling features of one (symbol, interval) stream; satisfies `strategies.base.FeatureView`.

    Args:
        interval: Bybit interval code of the stream's bars.
        tactical_window: rows in `tactical_window()`, at most `strategic_window`.
        strategic_window: rows in `strategic_window()`.
        scale_window: trailing raw rows behind each robust-scaled value (current included).
        clip: scaled values are clipped to [-clip, clip].
        symbol: the stream's symbol; None binds it to the first bar's.

    Raises:
        ValueError: a window is not positive, the tactical window exceeds the strategic one,
            the scale window is below 2, clip is not positive, or the interval is unknown.
    """

    def __init__(
        self,
        *,
        interval: str,
        tactical_window: int = 64,
        strategic_window: int = 256,
        scale_window: int = 256,
        clip: float = 5.0,
        symbol: str | None = None,
    ) -> None:
        if not 0 < tactical_window <= strategic_window:
            raise ValueError(
                f"need 0 < tactical_window ({tactical_window}) <= strategic_window "
                f"({strategic_window})"
            )
        if scale_window < 2:
            raise ValueError(f"scale_window must be at least 2, got {scale_window}")
        if not (clip > 0.0 and math.isfinite(clip)):
            raise ValueError(f"clip must be positive and finite, got {clip}")
        self._kernel = FeatureKernel(interval=interval, symbol=symbol)
        self._interval = interval
        self._tactical = tactical_window
        self._strategic = strategic_window
        self._warmup = warmup_bars(strategic_window=strategic_window, scale_window=scale_window)
        self._scaler = LazyScaler(
            n_features=len(MARKET_FEATURES),
            cache_rows=strategic_window,
            scale_window=scale_window,
            clip=clip,
        )
        self._row: tuple[float, ...] = (math.nan,) * len(MARKET_FEATURES)
        self._schema_hash = feature_schema_hash(
            tactical_window=tactical_window,
            strategic_window=strategic_window,
            scale_window=scale_window,
            clip=clip,
        )

    def update(self, bar: Bar) -> None:
        """Take the stream's next confirmed bar.

        Raises:
            ValueError: another symbol or interval, a start not after the previous bar's, or
                invalid prices/volume; the buffer is unchanged when it raises.
        """
        row = self._kernel.update(bar)
        self._scaler.push(row)
        self._row = row

    @property
    def symbol(self) -> str | None:
        """The stream's symbol (None until the first bar if it was not given)."""
        return self._kernel.symbol

    @property
    def interval(self) -> str:
        """The stream's Bybit interval code."""
        return self._interval

    @property
    def ready(self) -> bool:
        """True once the strategic window is full of valid scaled feature vectors."""
        return self._kernel.bars_seen >= self._warmup

    @property
    def warmup_bars(self) -> int:
        """Bars needed before `ready` (a constant of the windows, not of the data)."""
        return self._warmup

    @property
    def bars_seen(self) -> int:
        """Bars accepted so far."""
        return self._kernel.bars_seen

    @property
    def last_start_ms(self) -> int | None:
        """Start of the newest accepted bar, None before the first."""
        return self._kernel.last_start_ms

    @property
    def schema_hash(self) -> str:
        """`feature_schema_hash` of this buffer's windows and clip, for checkpoint checks."""
        return self._schema_hash

    def raw(self, name: str) -> float:
        """The newest raw (unscaled) value of a market feature; NaN while it warms up.

        Raises:
            KeyError: the name is not in `MARKET_FEATURES`.
        """
        index = FEATURE_INDEX.get(name)
        if index is None:
            raise KeyError(f"unknown market feature {name!r}")
        return self._row[index]

    def ema(self, period: int) -> float:
        """The newest EMA of close (periods 8, 12, 21, 26, 50, 200); NaN before `period` bars.

        Raises:
            ValueError: the period is not tracked.
        """
        return self._kernel.ema(period)

    def tactical_window(self) -> np.ndarray:
        """Scaled, clipped feature vectors of the tactical window, oldest first. # (T_tac, F)

        Raises:
            RuntimeError: the buffer is not ready (the engine must check `ready` first).
        """
        return self._window(self._tactical)

    def strategic_window(self) -> np.ndarray:
        """Scaled, clipped feature vectors of the strategic window, oldest first. # (T_str, F)

        Raises:
            RuntimeError: the buffer is not ready (the engine must check `ready` first).
        """
        return self._window(self._strategic)

    def _window(self, length: int) -> np.ndarray:
        if not self.ready:
            # A half-defined window must never reach a model; asking for one is a caller bug.
            raise RuntimeError(
                f"feature window requested after {self.bars_seen} of {self._warmup} warm-up bars"
            )
        return self._scaler.latest(length)


class FeatureBook:
    """One `FeatureBuffer` per (symbol, interval), created on the first bar of a stream.

    Args:
        tactical_window: passed to every buffer.
        strategic_window: passed to every buffer.
        scale_window: passed to every buffer.
        clip: passed to every buffer.

    Raises:
        ValueError: the parameters are invalid (checked once, here).
    """

    def __init__(
        self,
        *,
        tactical_window: int = 64,
        strategic_window: int = 256,
        scale_window: int = 256,
        clip: float = 5.0,
    ) -> None:
        self._tactical = tactical_window
        self._strategic = strategic_window
        self._scale = scale_window
        self._clip = clip
        # Validate now rather than on the first bar of the first stream.
        probe = self._new_buffer(symbol=None, interval="1")
        self._schema_hash = probe.schema_hash
        self._warmup = probe.warmup_bars
        self._buffers: dict[tuple[str, str], FeatureBuffer] = {}

    def update(self, bar: Bar) -> FeatureBuffer:
        """Feed a bar to its stream's buffer (creating it) and return that buffer.

        Raises:
            ValueError: as `FeatureBuffer.update`.
        """
        key = (bar.symbol, bar.interval)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._new_buffer(symbol=bar.symbol, interval=bar.interval)
            self._buffers[key] = buffer
        buffer.update(bar)
        return buffer

    def _new_buffer(self, *, symbol: str | None, interval: str) -> FeatureBuffer:
        return FeatureBuffer(
            interval=interval,
            symbol=symbol,
            tactical_window=self._tactical,
            strategic_window=self._strategic,
            scale_window=self._scale,
            clip=self._clip,
        )

    def get(self, symbol: str, interval: str) -> FeatureBuffer | None:
        """The buffer of a stream, or None before its first bar."""
        return self._buffers.get((symbol, interval))

    def symbols(self) -> list[str]:
        """Every symbol that has had a bar, sorted."""
        return sorted({symbol for symbol, _ in self._buffers})

    @property
    def schema_hash(self) -> str:
        """`feature_schema_hash` shared by every buffer of the book."""
        return self._schema_hash

    @property
    def warmup_bars(self) -> int:
        """Bars each stream needs before its buffer is ready."""
        return self._warmup

    def __len__(self) -> int:
        """Number of streams seen."""
        return len(self._buffers)

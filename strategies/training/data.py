"""Training data of the HRM: time splits, per-series features and targets, and batches.

Owns the split of every series by time (the last `heldout_fraction` held out of all training
and tuning; validation is the last `val_fraction` of what remains, with a gap of the target
lookahead so no training target reads a validation bar), the `TrainingSeries` built from the
development bars only through the one feature implementation (`build_feature_matrix`) and
`targets.build_targets`, and the sampling of `FeatureBatch`es with their `HRMTargets`. It must
not read files (callers pass bars), run a model or know about the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from strategies.hrm.heads import FeatureBatch
from strategies.hrm.layers import instrument_bucket, timeframe_index
from strategies.training.losses import HRMTargets
from strategies.training.targets import SeriesTargets, TargetSettings, build_targets
from trader.domain import Bar
from trader.features.dataset import build_feature_matrix
from trader.features.schema import ACCOUNT_FEATURES, FEATURE_INDEX

HELDOUT_FRACTION = 0.3
VAL_FRACTION = 0.15


@dataclass(frozen=True, slots=True)
class SeriesSplit:
    """Bar-index boundaries of one series: dev = [0, heldout_start), val from `val_start`."""

    bars: int
    val_start: int
    heldout_start: int

    @classmethod
    def of(
        cls,
        bars: int,
        *,
        heldout_fraction: float = HELDOUT_FRACTION,
        val_fraction: float = VAL_FRACTION,
    ) -> SeriesSplit:
        """The split of a series of `bars` bars (fractions of the series, then of the dev part)."""
        if not (0.0 < heldout_fraction < 1.0 and 0.0 < val_fraction < 1.0):
            raise ValueError("heldout_fraction and val_fraction must be in (0, 1)")
        heldout_start = int(bars * (1.0 - heldout_fraction))
        return cls(bars, heldout_start - int(heldout_start * val_fraction), heldout_start)


@dataclass(frozen=True, slots=True)
class WindowSettings:
    """Window lengths and scaling of the features (the `[features]` settings)."""

    tactical: int = 64
    strategic: int = 256
    scale_window: int = 256
    clip: float = 5.0


@dataclass(frozen=True, slots=True)
class TrainingSeries:
    """One symbol's development bars as arrays, with the rows usable for training and validation.

    A row t is usable when its strategic window holds only valid scaled rows and its targets
    exist. `train_rows` end `lookahead` bars before `val_start`; `val_rows` start there.
    """

    symbol: str
    interval: str
    scaled: np.ndarray  # (N, F) float32, NaN where not valid
    atr: np.ndarray  # (N,) float64 raw atr_14 (ATR / close)
    open: np.ndarray  # (N,) float64
    close: np.ndarray  # (N,) float64
    start_ms: np.ndarray  # (N,) int64
    targets: SeriesTargets
    train_rows: np.ndarray  # (n_train,) int64
    val_rows: np.ndarray  # (n_val,) int64

    def __len__(self) -> int:
        """Number of bars."""
        return int(self.start_ms.shape[0])


def build_training_series(
    bars: Sequence[Bar],
    *,
    val_start: int,
    windows: WindowSettings,
    targets: TargetSettings,
) -> TrainingSeries:
    """Features and targets of one symbol's development bars (nothing of the held-out part).

    Args:
        bars: the development bars, `bars[:split.heldout_start]`.
        val_start: the first validation row (`split.val_start`).
        windows: feature windows and scaling.
        targets: label parameters.
    """
    matrix = build_feature_matrix(bars, scale_window=windows.scale_window, clip=windows.clip)
    close = np.array([bar.close for bar in bars], dtype=np.float64)  # (N,)
    atr = np.asarray(matrix.raw[:, FEATURE_INDEX["atr_14"]], dtype=np.float64)  # (N,)
    built = build_targets(close, atr, targets)
    n = len(matrix)
    valid = matrix.valid.astype(np.int64)
    counts = np.concatenate(([0], np.cumsum(valid)))  # (N + 1,)
    rows = np.arange(n)
    first = np.maximum(rows - windows.strategic + 1, 0)
    full = (rows >= windows.strategic - 1) & (counts[rows + 1] - counts[first] == windows.strategic)
    usable = full & built.valid
    train_end = val_start - targets.lookahead
    return TrainingSeries(
        symbol=bars[0].symbol,
        interval=bars[0].interval,
        scaled=np.asarray(matrix.scaled),
        atr=atr,
        open=np.array([bar.open for bar in bars], dtype=np.float64),
        close=close,
        start_ms=np.asarray(matrix.start_ms),
        targets=built,
        train_rows=rows[usable & (rows < train_end)],
        val_rows=rows[usable & (rows >= val_start)],
    )


@dataclass(frozen=True, slots=True)
class Sample:
    """Some bars of some series: `unroll` consecutive rows from each (series, first row)."""

    series: np.ndarray  # (B,) int64 index into the series list
    rows: np.ndarray  # (B,) int64 first row of each
    unroll: int


def draw_sample(
    series: Sequence[TrainingSeries],
    *,
    batch_size: int,
    unroll: int,
    split: str,
    rng: np.random.Generator,
) -> Sample:
    """Rows drawn uniformly over all series' `split` rows ("train" or "val") that have
    `unroll - 1` usable rows after them in the same split."""
    pools = [_starts(s.train_rows if split == "train" else s.val_rows, unroll) for s in series]
    sizes = np.array([pool.shape[0] for pool in pools], dtype=np.float64)
    if sizes.sum() == 0:
        raise ValueError(f"no {split} rows with {unroll} bars to unroll in the series given")
    which = rng.choice(len(series), size=batch_size, p=sizes / sizes.sum())
    rows = np.array([pools[i][rng.integers(pools[i].shape[0])] for i in which], dtype=np.int64)
    return Sample(which.astype(np.int64), rows, unroll)


def _starts(rows: np.ndarray, unroll: int) -> np.ndarray:
    """Rows r of a sorted row set whose r + 1 .. r + unroll - 1 are in the set too."""
    if unroll <= 1 or rows.shape[0] == 0:
        return rows
    members = np.zeros(int(rows.max()) + unroll + 1, dtype=bool)
    members[rows] = True
    ok = np.ones(rows.shape[0], dtype=bool)
    for k in range(1, unroll):
        ok &= members[rows + k]
    return rows[ok]


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """How batches are made: windows, instrument buckets, augmentation and device.

    Attributes:
        account_noise: chance that a row gets a random plausible account vector instead of
            a flat account (the forecast heads must not lean on it).
        instrument_dropout: chance that a row's instrument id is replaced by a random bucket
            (teaches the model to do without it, for symbols never trained on).
    """

    windows: WindowSettings
    instrument_buckets: int
    account_noise: float = 0.5
    instrument_dropout: float = 0.2
    device: torch.device = torch.device("cpu")  # noqa: RUF009 - an immutable default


def make_batches(
    series: Sequence[TrainingSeries],
    sample: Sample,
    options: BatchOptions,
    rng: np.random.Generator,
) -> list[tuple[FeatureBatch, HRMTargets]]:
    """One (batch, targets) per unrolled bar; only the first carries strategic windows."""
    size = sample.rows.shape[0]
    instrument = np.array(
        [instrument_bucket(series[i].symbol, options.instrument_buckets) for i in sample.series]
    )
    dropped = rng.random(size) < options.instrument_dropout
    instrument = np.where(dropped, rng.integers(0, options.instrument_buckets, size), instrument)
    timeframe = np.array([timeframe_index(series[i].interval) for i in sample.series])
    account = _accounts(size, options.account_noise, rng)  # (B, A)
    device = options.device
    ids = torch.from_numpy(instrument.astype(np.int64)).to(device)  # (B,)
    frames = torch.from_numpy(timeframe.astype(np.int64)).to(device)  # (B,)
    acc = torch.from_numpy(account).to(device)
    out: list[tuple[FeatureBatch, HRMTargets]] = []
    for k in range(sample.unroll):
        rows = sample.rows + k
        tactical = scaled_windows(series, sample.series, rows, options.windows.tactical)
        strategic = None
        if k == 0:
            strategic = scaled_windows(series, sample.series, rows, options.windows.strategic)
            strategic = strategic.to(device)  # (B, T_str, F)
        batch = FeatureBatch(tactical.to(device), acc, ids, frames, strategic, None)
        out.append((batch, _targets(series, sample.series, rows, device)))
    return out


def scaled_windows(
    series: Sequence[TrainingSeries], which: np.ndarray, rows: np.ndarray, length: int
) -> torch.Tensor:
    """Scaled windows of `length` rows ending at each row of series `which`. # (B, length, F)"""
    offsets = np.arange(-length + 1, 1)
    stacked = np.stack([series[i].scaled[r + offsets] for i, r in zip(which, rows, strict=True)])
    return torch.from_numpy(np.ascontiguousarray(stacked, dtype=np.float32))


def _targets(
    series: Sequence[TrainingSeries], which: np.ndarray, rows: np.ndarray, device: torch.device
) -> HRMTargets:
    def pick(name: str) -> torch.Tensor:
        values = [getattr(series[i].targets, name)[r] for i, r in zip(which, rows, strict=True)]
        return torch.from_numpy(np.stack(values)).to(device)

    return HRMTargets(
        next_return=pick("next_return"),
        direction=pick("direction"),
        horizon_returns=pick("horizon_returns"),
        regime=pick("regime"),
        stop_loss_atr=pick("stop_loss_atr"),
        take_profit_atr=pick("take_profit_atr"),
        risk_budget=pick("risk_budget"),
    )


def _accounts(size: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Flat accounts, or for a `noise` share of rows random ones in the scaled ranges. # (B, A)"""
    account = np.zeros((size, len(ACCOUNT_FEATURES)), dtype=np.float32)
    noisy = rng.random(size) < noise
    side = rng.choice(np.array([-1.0, 1.0]), size)
    account[:, 0] = side * np.tanh(rng.uniform(0.0, 1.5, size))  # position
    account[:, 1] = np.tanh(rng.normal(0.0, 0.5, size))  # unrealised PnL
    account[:, 2] = np.tanh(rng.exponential(0.2, size))  # drawdown
    account[:, 3] = np.tanh(rng.exponential(0.5, size))  # bars in position
    account[~noisy] = 0.0
    return account

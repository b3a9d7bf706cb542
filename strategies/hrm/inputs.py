"""Reading and checking one symbol's model inputs, and stacking a slice into a FeatureBatch.

Owns the edge between the engine's `SymbolContext` and the model's tensors: the checks that make
bad input a HOLD instead of a trade (non-finite or out-of-range features, wrong window shapes,
impossible account state, unusable price or ATR), each with a stable reason label, and the
stacking of the checked rows into one `FeatureBatch` on the model's device. It must not run the
model or decide anything.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from strategies.base import SymbolContext
from strategies.hrm.heads import FeatureBatch
from strategies.hrm.layers import instrument_bucket, timeframe_index
from trader.features.schema import account_vector

#: Scaled features may sit exactly on the clip bound; allow float rounding on top of it.
_CLIP_SLACK = 1e-4


class InputRejected(Exception):
    """One symbol's inputs are unusable; `reason` is a stable, countable label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SymbolInputs:
    """The checked inputs of one symbol."""

    tactical: np.ndarray  # (T_tac, F) float32
    strategic: np.ndarray | None  # (T_str, F) float32 when the strategic module needs it
    account: np.ndarray  # (A,) float32
    atr: float  # absolute ATR (atr_14 x close), positive
    atr_relative: float  # atr_14 as the feature holds it: ATR / close


def read_inputs(
    context: SymbolContext, *, n_features: int, clip: float, with_strategic: bool
) -> SymbolInputs:
    """Read and check one symbol's inputs.

    Raises:
        InputRejected: with reason `not_ready`, `price_invalid`, `atr_invalid`,
            `account_invalid`, `feature_shape`, `feature_not_finite` or `feature_out_of_range`.
    """
    features = context.features
    if not features.ready:
        raise InputRejected("not_ready")
    close = context.bar.close
    if not (math.isfinite(close) and close > 0.0):
        raise InputRejected("price_invalid")
    atr_relative = features.raw("atr_14")
    if not (math.isfinite(atr_relative) and atr_relative > 0.0):
        raise InputRejected("atr_invalid")
    account = context.account
    try:
        vector = account_vector(
            position_notional=account.position_notional,
            equity=account.equity,
            unrealized_pnl=account.unrealized_pnl,
            drawdown=account.drawdown,
            bars_in_position=account.bars_in_position,
        )
    except ValueError as exc:
        raise InputRejected("account_invalid") from exc
    tactical = _checked(features.tactical_window(), n_features, clip)
    strategic = _checked(features.strategic_window(), n_features, clip) if with_strategic else None
    return SymbolInputs(tactical, strategic, vector, atr_relative * close, atr_relative)


def _checked(window: np.ndarray, n_features: int, clip: float) -> np.ndarray:
    if window.ndim != 2 or window.shape[0] < 1 or window.shape[1] != n_features:
        raise InputRejected("feature_shape")
    # One pass for the usual case: a NaN makes the max NaN and an infinity exceeds the bound,
    # so only a window that fails it needs the second pass that names the reason.
    if not float(np.abs(window).max()) <= clip + _CLIP_SLACK:
        if not np.isfinite(window).all():
            raise InputRejected("feature_not_finite")
        raise InputRejected("feature_out_of_range")
    return np.asarray(window, dtype=np.float32)


def stack_batch(
    symbols: Sequence[str],
    intervals: Sequence[str],
    rows: Sequence[SymbolInputs],
    strategic_rows: Sequence[int],
    *,
    instrument_buckets: int,
    device: torch.device,
) -> FeatureBatch:
    """One batch from checked rows; `strategic_rows` lists the rows whose windows fH reads.

    Raises:
        InputRejected: `feature_shape` when the rows' windows differ in length.
    """
    if len({row.tactical.shape for row in rows}) != 1:
        raise InputRejected("feature_shape")
    tactical = torch.from_numpy(_stacked([row.tactical for row in rows]))  # (B, T_tac, F)
    account = torch.from_numpy(_stacked([row.account for row in rows]))  # (B, A)
    instrument, timeframe = _indices(tuple(symbols), tuple(intervals), instrument_buckets, device)
    strategic = index = None
    if strategic_rows:
        windows = [rows[i].strategic for i in strategic_rows]
        stacked = [w for w in windows if w is not None]
        if len(stacked) != len(windows) or len({w.shape for w in stacked}) != 1:
            raise InputRejected("feature_shape")
        strategic = torch.from_numpy(_stacked(stacked)).to(device)  # (S, T_str, F)
        index = torch.tensor(list(strategic_rows), dtype=torch.long, device=device)  # (S,)
    return FeatureBatch(
        tactical=tactical.to(device),
        account=account.to(device),
        instrument=instrument,
        timeframe=timeframe,
        strategic=strategic,
        strategic_rows=index,
    )


def _stacked(arrays: list[np.ndarray]) -> np.ndarray:
    """`np.stack`, without its copy for the one-row batch of a single symbol.

    A read-only array is still copied: torch warns on wrapping one, and the copy is what
    `np.stack` gave before.
    """
    if len(arrays) == 1 and arrays[0].flags.writeable:
        return np.ascontiguousarray(arrays[0][np.newaxis])
    return np.stack(arrays)


@functools.lru_cache(maxsize=64)
def _indices(
    symbols: tuple[str, ...], intervals: tuple[str, ...], buckets: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Instrument buckets and timeframe indices of a batch's rows. # (B,), (B,) long

    A slice's symbols repeat from bar to bar, and hashing each symbol and building two tensors
    cost a few microseconds per row on every bar, so the tensors are cached and shared by the
    calls (the model only reads them). They are built as normal tensors even if a caller is in
    inference mode, so a later autograd forward could still use them.
    """
    with torch.inference_mode(False):
        instrument = torch.tensor([instrument_bucket(s, buckets) for s in symbols], device=device)
        timeframe = torch.tensor([timeframe_index(i) for i in intervals], device=device)
    return instrument, timeframe

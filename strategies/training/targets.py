"""Supervised targets of one bar series, built strictly from the bars after each decision bar.

Owns the label definitions the HRM and the flat baseline are trained on, per bar t of one
stream (c = close, r_j = ln(c_j / c_{j-1}), atr_t = the `atr_14` feature at t, ATR / close):

    next_return      r_{t+1} / atr_t                                  (ATR units)
    direction        1 when r_{t+1} > 0, else 0 (label smoothing is the loss's business)
    horizon_returns  ln(c_{t+h} / c_t) / atr_t for each model horizon h (ATR units)
    realised_vol     sqrt(mean(r_j^2, j = t+1..t+V)) / atr_t          (ATR units, V = vol_bars)
    regime           over the next `regime_bars`: volatile when realised_vol >= volatile_ratio,
                     else trending when the efficiency |sum r| / sum |r| >= trend_efficiency,
                     else ranging (indices into `heads.REGIMES`)
    stop_loss_atr    stop_vol_multiple x realised_vol, floored at min_stop_atr   (ATR units)
    take_profit_atr  take_vol_multiple x realised_vol, floored at min_stop_atr   (ATR units)
    risk_budget      1 outside the volatile regime, volatile_budget inside it

A target at t reads closes t..t+max(horizon) and the ATR known at t, nothing later; rows whose
future is not in the series are marked invalid. It must not compute features (the feature
kernel does), split series or touch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategies.hrm.heads import REGIMES

_TRENDING, _RANGING, _VOLATILE = (REGIMES.index(n) for n in ("trending", "ranging", "volatile"))


@dataclass(frozen=True, slots=True)
class TargetSettings:
    """Label parameters; thresholds were set so that on the training part of BTC/ETH/SOL 5m
    about a fifth of bars are volatile and a quarter trending (see `regime_shares`).

    Attributes:
        horizons: bar counts of the horizon-return heads (the model's `horizons`).
        vol_bars: bars of the forward realised volatility.
        regime_bars: bars the regime label looks ahead.
        volatile_ratio: forward realised volatility, in ATR units, from which a bar is volatile.
        trend_efficiency: forward efficiency ratio from which a non-volatile bar is trending.
        stop_vol_multiple: stop-loss distance target per unit of forward realised volatility.
        take_vol_multiple: take-profit distance target per unit of forward realised volatility.
        min_stop_atr: floor of both distance targets (the heads' own floor is 0.25 ATR).
        volatile_budget: strategic risk-budget target in the volatile regime (1 elsewhere).
    """

    horizons: tuple[int, ...] = (1, 8, 32)
    vol_bars: int = 32
    regime_bars: int = 32
    volatile_ratio: float = 0.9
    trend_efficiency: float = 0.2
    stop_vol_multiple: float = 3.0
    take_vol_multiple: float = 6.0
    min_stop_atr: float = 0.5
    volatile_budget: float = 0.5

    def __post_init__(self) -> None:
        if not self.horizons or min(self.horizons) < 1:
            raise ValueError(f"horizons must be positive bar counts, got {self.horizons}")
        if min(self.vol_bars, self.regime_bars) < 2:
            raise ValueError("vol_bars and regime_bars must be at least 2")
        if not (self.volatile_ratio > 0.0 and 0.0 < self.trend_efficiency < 1.0):
            raise ValueError("need volatile_ratio > 0 and trend_efficiency in (0, 1)")
        if min(self.stop_vol_multiple, self.take_vol_multiple, self.min_stop_atr) <= 0.0:
            raise ValueError("stop and take multiples and min_stop_atr must be positive")
        if not 0.0 <= self.volatile_budget <= 1.0:
            raise ValueError("volatile_budget must be in [0, 1]")

    @property
    def lookahead(self) -> int:
        """The furthest bar after t any target reads."""
        return max(*self.horizons, self.vol_bars, self.regime_bars)


@dataclass(frozen=True, slots=True)
class SeriesTargets:
    """Targets of every bar of one series; rows where `valid` is False hold zeros."""

    next_return: np.ndarray  # (N,) float32, ATR units
    direction: np.ndarray  # (N,) float32 in {0, 1}
    horizon_returns: np.ndarray  # (N, H) float32, ATR units
    realised_vol: np.ndarray  # (N,) float32, ATR units
    regime: np.ndarray  # (N,) int64 index into REGIMES
    stop_loss_atr: np.ndarray  # (N,) float32, ATR units
    take_profit_atr: np.ndarray  # (N,) float32, ATR units
    risk_budget: np.ndarray  # (N,) float32 in [0, 1]
    valid: np.ndarray  # (N,) bool: the whole lookahead exists and the ATR is usable

    def __len__(self) -> int:
        """Number of bars."""
        return int(self.valid.shape[0])


def build_targets(close: np.ndarray, atr: np.ndarray, settings: TargetSettings) -> SeriesTargets:
    """The targets of one series from its closes and its `atr_14` feature (ATR / close).

    Args:
        close: closes in time order, positive. # (N,)
        atr: the raw `atr_14` feature of each bar (NaN while warming up). # (N,)
        settings: label parameters.

    Raises:
        ValueError: shapes differ or a close is not positive and finite.
    """
    close = np.asarray(close, dtype=np.float64)
    atr = np.asarray(atr, dtype=np.float64)
    if close.ndim != 1 or close.shape != atr.shape:
        raise ValueError(f"close {close.shape} and atr {atr.shape} must be equal 1-d shapes")
    if not (np.isfinite(close).all() and (close > 0).all()):
        raise ValueError("closes must be positive and finite")
    n = close.shape[0]
    log_close = np.log(close)
    returns = np.diff(log_close, prepend=log_close[0])  # (N,) r_t, r_0 = 0
    ahead = settings.lookahead
    valid = np.zeros(n, dtype=bool)
    valid[: max(n - ahead, 0)] = True
    valid &= np.isfinite(atr) & (atr > 0)
    safe_atr = np.where(valid, atr, 1.0)
    horizons = np.stack(
        [_shifted(log_close, h) - log_close for h in settings.horizons], axis=1
    )  # (N, H)
    next_return = (_shifted(log_close, 1) - log_close) / safe_atr
    squares = np.concatenate(([0.0], np.cumsum(returns**2)))  # (N + 1,)
    absolute = np.concatenate(([0.0], np.cumsum(np.abs(returns))))  # (N + 1,)
    rv = np.sqrt(_forward_sum(squares, settings.vol_bars) / settings.vol_bars) / safe_atr
    rv_regime = np.sqrt(_forward_sum(squares, settings.regime_bars) / settings.regime_bars)
    path = _forward_sum(absolute, settings.regime_bars)
    net = np.abs(_shifted(log_close, settings.regime_bars) - log_close)
    efficiency = np.divide(net, path, out=np.zeros(n), where=path > 0)
    regime = np.where(
        rv_regime / safe_atr >= settings.volatile_ratio,
        _VOLATILE,
        np.where(efficiency >= settings.trend_efficiency, _TRENDING, _RANGING),
    )
    mask = valid.astype(np.float64)
    regime = np.where(valid, regime, _RANGING).astype(np.int64)
    floor = settings.min_stop_atr
    return SeriesTargets(
        next_return=(next_return * mask).astype(np.float32),
        direction=((next_return > 0) & valid).astype(np.float32),
        horizon_returns=(horizons / safe_atr[:, None] * mask[:, None]).astype(np.float32),
        realised_vol=(rv * mask).astype(np.float32),
        regime=regime,
        stop_loss_atr=np.maximum(rv * settings.stop_vol_multiple, floor).astype(np.float32),
        take_profit_atr=np.maximum(rv * settings.take_vol_multiple, floor).astype(np.float32),
        risk_budget=np.where(regime == _VOLATILE, settings.volatile_budget, 1.0).astype(np.float32),
        valid=valid,
    )


def regime_shares(targets: SeriesTargets) -> dict[str, float]:
    """Fraction of valid bars per regime (to check the thresholds on a training set)."""
    labels = targets.regime[targets.valid]
    total = max(int(labels.shape[0]), 1)
    return {name: float((labels == i).sum()) / total for i, name in enumerate(REGIMES)}


def _shifted(values: np.ndarray, bars: int) -> np.ndarray:
    """values[t + bars], the last value repeated past the end (those rows are invalid)."""
    index = np.minimum(np.arange(values.shape[0]) + bars, values.shape[0] - 1)
    return np.asarray(values[index])


def _forward_sum(cumulative: np.ndarray, bars: int) -> np.ndarray:
    """sum(x_j, j = t+1..t+bars) from cumsum with a leading 0, clamped at the end. # (N,)"""
    n = cumulative.shape[0] - 1
    t = np.arange(n)
    hi = np.minimum(t + bars, n - 1)
    return np.asarray(cumulative[hi + 1] - cumulative[np.minimum(t + 1, n)], dtype=np.float64)

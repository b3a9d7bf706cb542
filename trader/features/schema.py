"""The feature schema: the names, definitions and scaling class of every model input.

Owns the one list of market features (in the column order the kernel emits them), the account
features and their bounded scaling, the schema version, and the hash a checkpoint stores so a
loader can refuse features that differ from the ones it was trained on. It must not compute
market features (that is `kernel.py`) or hold any state.

Bump `FEATURE_SCHEMA_VERSION` whenever a definition below, its lookback or its scaling class
changes: the hash covers names and parameters, not the arithmetic behind them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from trader.config import FeatureSettings

FEATURE_SCHEMA_VERSION = 1

#: Converts a median absolute deviation into a standard deviation for normal data.
MAD_TO_SIGMA = 1.4826
#: Added to the scaled denominator so a flat window (MAD = 0) divides by a positive number.
SCALE_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One market feature: its name, a one-line definition and how it is scaled.

    `bounded` features already live in [-1, 1] and pass through unscaled (only clipped);
    all others are robust-scaled against their trailing `scale_window` raw values.
    """

    name: str
    definition: str
    bounded: bool = False


# Column order is the kernel's output order; c_t is the close of bar t, r_t = ln(c_t / c_{t-1}).
MARKET_FEATURE_SPECS: tuple[FeatureSpec, ...] = (
    FeatureSpec("ret_1", "ln(c_t / c_{t-1})"),
    FeatureSpec("ret_2", "ln(c_t / c_{t-2})"),
    FeatureSpec("ret_4", "ln(c_t / c_{t-4})"),
    FeatureSpec("ret_8", "ln(c_t / c_{t-8})"),
    FeatureSpec("ret_16", "ln(c_t / c_{t-16})"),
    FeatureSpec("mom_5", "momentum-5 as a rate of change: c_t / c_{t-5} - 1"),
    FeatureSpec("rvol_16", "realised volatility sqrt(mean(r^2)) over the last 16 returns"),
    FeatureSpec("rvol_64", "realised volatility sqrt(mean(r^2)) over the last 64 returns"),
    FeatureSpec(
        "trend_strength_32",
        "regime: Kaufman efficiency |c_t - c_{t-32}| / sum(|c_j - c_{j-1}|, 32 bars), as 2e - 1",
        bounded=True,
    ),
    FeatureSpec(
        "vol_percentile_256",
        "regime: mid-rank of rvol_16 among its last 256 values, mapped to [-1, 1]",
        bounded=True,
    ),
    FeatureSpec("dev_ema_8", "c_t / EMA8 - 1 (EMA seeded with the SMA of its first 8 closes)"),
    FeatureSpec("dev_ema_21", "c_t / EMA21 - 1"),
    FeatureSpec("dev_ema_50", "c_t / EMA50 - 1"),
    FeatureSpec("dev_ema_200", "c_t / EMA200 - 1"),
    FeatureSpec("dev_sma_50", "c_t / SMA50 - 1"),
    FeatureSpec("dev_sma_200", "c_t / SMA200 - 1"),
    FeatureSpec("macd", "MACD line (EMA12 - EMA26) / c_t"),
    FeatureSpec("macd_signal", "signal line EMA9(MACD line, SMA-seeded) / c_t"),
    FeatureSpec("macd_hist", "(MACD line - signal line) / c_t"),
    FeatureSpec("bb_width_20", "Bollinger (20, 2) width (upper - lower) / middle = 4 sd20 / SMA20"),
    FeatureSpec(
        "bb_squeeze",
        "1 if bb_width_20 is in the bottom 20% of its last 128 values (ties count), else 0",
        bounded=True,
    ),
    FeatureSpec(
        "rsi_14",
        "Wilder RSI-14 mapped to [-1, 1]: (RSI - 50) / 50; 0 when price did not move",
        bounded=True,
    ),
    FeatureSpec("atr_14", "Wilder ATR-14 (SMA-seeded true range) / c_t"),
    FeatureSpec("atr_20", "Wilder ATR-20 / c_t"),
    FeatureSpec("hl_range", "(high_t - low_t) / c_t"),
    FeatureSpec("volume_z_20", "(v_t - mean20(v)) / sd20(v), 0 when sd20(v) = 0"),
    FeatureSpec("log_volume", "ln(1 + v_t), volume in base units"),
    FeatureSpec("tod_sin", "sin(2 pi * UTC time of day of the bar start / 1 day)", bounded=True),
    FeatureSpec("tod_cos", "cos(2 pi * UTC time of day of the bar start / 1 day)", bounded=True),
    FeatureSpec("dow_sin", "sin(2 pi * UTC time since Monday 00:00 / 7 days)", bounded=True),
    FeatureSpec("dow_cos", "cos(2 pi * UTC time since Monday 00:00 / 7 days)", bounded=True),
)

MARKET_FEATURES: tuple[str, ...] = tuple(spec.name for spec in MARKET_FEATURE_SPECS)
BOUNDED_FEATURES: frozenset[str] = frozenset(s.name for s in MARKET_FEATURE_SPECS if s.bounded)
#: Column mask of the robust-scaled market features. # (F,)
ROBUST_MASK: np.ndarray = np.array([not s.bounded for s in MARKET_FEATURE_SPECS], dtype=bool)
ROBUST_MASK.flags.writeable = False
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(MARKET_FEATURES)}

ACCOUNT_FEATURES: tuple[str, ...] = ("position", "unrealized_pnl", "drawdown", "bars_in_position")
#: Unrealised PnL of this fraction of equity maps to tanh(1) ~ 0.76.
UNREALIZED_PNL_SCALE = 0.02
#: A drawdown of this fraction of peak equity maps to tanh(1) ~ 0.76.
DRAWDOWN_SCALE = 0.10
#: A position held this many bars maps to tanh(1) ~ 0.76.
BARS_IN_POSITION_SCALE = 64.0


def account_vector(
    *,
    position_notional: float,
    equity: float,
    unrealized_pnl: float,
    drawdown: float,
    bars_in_position: int,
) -> np.ndarray:
    """Scale one symbol's account state into the bounded `ACCOUNT_FEATURES` vector.

    - position: tanh(signed notional / equity), leverage 1 -> 0.76, in (-1, 1);
    - unrealized_pnl: tanh(pnl / equity / UNREALIZED_PNL_SCALE), in (-1, 1);
    - drawdown: tanh(drawdown / DRAWDOWN_SCALE), in [0, 1);
    - bars_in_position: tanh(bars / BARS_IN_POSITION_SCALE), in [0, 1).

    Args:
        position_notional: signed position value in USDT (+ long, - short).
        equity: account equity in USDT; must be positive.
        unrealized_pnl: unrealised PnL of the position in USDT.
        drawdown: fraction of peak equity lost, in [0, 1] (as `Portfolio.drawdown`).
        bars_in_position: bars since the position opened, 0 when flat.

    Returns:
        The four scaled features in `ACCOUNT_FEATURES` order, float32. # (4,)

    Raises:
        ValueError: an input is not finite, equity is not positive, drawdown is outside [0, 1]
            or bars_in_position is negative (these are unit or sign bugs upstream).
    """
    if not all(math.isfinite(x) for x in (position_notional, equity, unrealized_pnl, drawdown)):
        raise ValueError("account inputs must be finite")
    if equity <= 0.0:
        raise ValueError(f"equity must be positive, got {equity}")
    if not 0.0 <= drawdown <= 1.0:
        raise ValueError(f"drawdown must be a fraction in [0, 1], got {drawdown}")
    if bars_in_position < 0:
        raise ValueError(f"bars_in_position must be >= 0, got {bars_in_position}")
    values = (
        math.tanh(position_notional / equity),
        math.tanh(unrealized_pnl / equity / UNREALIZED_PNL_SCALE),
        math.tanh(drawdown / DRAWDOWN_SCALE),
        math.tanh(bars_in_position / BARS_IN_POSITION_SCALE),
    )
    return np.array(values, dtype=np.float32)  # (4,)


def schema_hash_of(features: FeatureSettings) -> str:
    """The feature-schema hash of the `[features]` settings: what a checkpoint must match."""
    return feature_schema_hash(
        tactical_window=features.tactical_window,
        strategic_window=features.strategic_window,
        scale_window=features.scale_window,
        clip=features.clip,
    )


def feature_schema_hash(
    *, tactical_window: int, strategic_window: int, scale_window: int, clip: float
) -> str:
    """A sha256 hex digest of the schema version, feature names, scaling classes and parameters.

    A checkpoint stores it; a loader compares it with the running buffer's and refuses a
    mismatch, so a model never sees columns, windows or scaling it was not trained on.
    """
    payload = {
        "version": FEATURE_SCHEMA_VERSION,
        "market": [[s.name, s.bounded] for s in MARKET_FEATURE_SPECS],
        "account": list(ACCOUNT_FEATURES),
        "account_scales": [UNREALIZED_PNL_SCALE, DRAWDOWN_SCALE, BARS_IN_POSITION_SCALE],
        "tactical_window": int(tactical_window),
        "strategic_window": int(strategic_window),
        "scale_window": int(scale_window),
        # float() so clip=5 and clip=5.0 hash the same; json writes floats with repr (exact).
        "clip": float(clip),
        "mad_to_sigma": MAD_TO_SIGMA,
        "scale_eps": SCALE_EPS,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

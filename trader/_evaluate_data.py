"""Candle files as whole in-memory series for `trader train` and `trader evaluate`.

Owns reading each candle file once through the replay's own candle parser, naming the series
(`BTCUSDT_5m`), splitting it by time (`strategies.training.data.SeriesSplit`: the last 30% held
out), the bar a held-out replay starts from so that the features become ready exactly on the
first held-out bar, the `[features]` settings as training windows and schema hash, and turning
the development part into `TrainingSeries`. It must not train, replay or write anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from strategies.hrm.checkpoint import TrainingWindow
from strategies.training.data import (
    SeriesSplit,
    TrainingSeries,
    WindowSettings,
    build_training_series,
)
from strategies.training.targets import TargetSettings
from trader.config import FeatureSettings
from trader.domain import Bar
from trader.errors import ConfigError
from trader.features.buffer import warmup_bars
from trader.replay.candles import iter_candles

#: Symbols never trained on by default: reported apart as the test of generalisation.
UNSEEN_SYMBOLS = ("ADAUSDT", "DOGEUSDT", "DOTUSDT")


@dataclass(frozen=True, slots=True)
class CandleSeries:
    """One candle file's valid bars, in time order."""

    path: Path
    bars: list[Bar]
    rejected: int

    @property
    def symbol(self) -> str:
        """The series' symbol."""
        return self.bars[0].symbol

    @property
    def interval(self) -> str:
        """The series' Bybit interval code."""
        return self.bars[0].interval

    @property
    def name(self) -> str:
        """`BTCUSDT_5m`, `BTCUSDT_D`: the series' name in reports."""
        label = self.interval if self.interval == "D" else f"{self.interval}m"
        return f"{self.symbol}_{label}"

    def split(self) -> SeriesSplit:
        """The series' time split (held-out tail, validation slice of the development part)."""
        return SeriesSplit.of(len(self.bars))


def load_series(paths: Sequence[Path]) -> list[CandleSeries]:
    """Read every candle file (symbol and interval from the file name).

    Raises:
        ConfigError: a file is missing, holds no valid bar, or two files hold the same series.
    """
    out: list[CandleSeries] = []
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"candle file {path} does not exist", key="FILES")
        bars: list[Bar] = []
        rejected = 0
        for item in iter_candles(path):
            if isinstance(item, Bar):
                bars.append(item)
            else:
                rejected += 1
        if not bars:
            raise ConfigError(f"candle file {path} holds no valid bar", key="FILES")
        out.append(CandleSeries(path, bars, rejected))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"the files hold the same series twice: {sorted(names)}", key="FILES")
    return out


def windows_of(features: FeatureSettings) -> WindowSettings:
    """The `[features]` settings as the training code's window settings."""
    return WindowSettings(
        tactical=features.tactical_window,
        strategic=features.strategic_window,
        scale_window=features.scale_window,
        clip=features.clip,
    )


def replay_start(series: CandleSeries, features: FeatureSettings) -> int:
    """Index of the first bar to replay so the buffer is ready on the first held-out bar.

    Raises:
        ConfigError: the series is too short to warm up before its held-out part.
    """
    warm = warmup_bars(
        strategic_window=features.strategic_window, scale_window=features.scale_window
    )
    start = series.split().heldout_start - (warm - 1)
    if start < 0:
        raise ConfigError(
            f"{series.path} has {len(series.bars)} bars: too few to warm the features "
            f"({warm} bars) before its held-out 30%",
            key="FILES",
        )
    return start


def training_series(
    series: Sequence[CandleSeries], windows: WindowSettings, targets: TargetSettings
) -> list[TrainingSeries]:
    """The development part of each series (nothing of the held-out tail) for training."""
    out = []
    for s in series:
        split = s.split()
        out.append(
            build_training_series(
                s.bars[: split.heldout_start],
                val_start=split.val_start,
                windows=windows,
                targets=targets,
            )
        )
    return out


def training_window(series: Sequence[CandleSeries]) -> TrainingWindow:
    """Symbols, interval(s) and span of the development bars a model is trained on."""
    ends = [s.bars[s.split().heldout_start - 1].start_ms for s in series]
    return TrainingWindow(
        symbols=tuple(s.symbol for s in series),
        interval=",".join(sorted({s.interval for s in series})),
        start_ms=min(s.bars[0].start_ms for s in series),
        end_ms=max(ends),
    )

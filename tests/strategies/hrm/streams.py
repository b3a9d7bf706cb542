"""Real feature buffers fed with real candles, as the engine feeds them, for HRM tests.

Owns a tiny stand-in for the engine's slice loop: one `FeatureBuffer` per symbol, bars fed in
time order, and the `SymbolContext`s of each ready bar. It must not decide anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from strategies.base import AccountState, FeatureView, SymbolContext
from tests.support.candles import load_candles, random_walk_bars
from trader.domain import Bar, Decision
from trader.features.buffer import FeatureBuffer

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FLAT_ACCOUNT = AccountState(10_000.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)


def fixture_bars(symbol: str) -> list[Bar]:
    """The recorded 5m candles of BTCUSDT or ETHUSDT."""
    return load_candles(FIXTURES / f"{symbol}_5m.csv.gz", symbol, "5")


def walk_bars(symbols: Sequence[str], count: int) -> dict[str, list[Bar]]:
    """Seeded random walks sharing bar times, one per symbol."""
    return {s: random_walk_bars(count, seed=i, symbol=s) for i, s in enumerate(symbols)}


class Stream:
    """Feeds bars of several symbols slice by slice into real buffers."""

    def __init__(self, bars: dict[str, list[Bar]]) -> None:
        self.bars = bars
        self.buffers = {s: FeatureBuffer(interval=b[0].interval, symbol=s) for s, b in bars.items()}
        self.index = 0

    def warm(self) -> None:
        """Feed bars until every buffer is ready (the next slice is the first decidable)."""
        while not all(b.ready for b in self.buffers.values()):
            self.step()

    def step(self) -> list[SymbolContext]:
        """Feed the next bar of every symbol; the contexts of the ready ones."""
        contexts = []
        for symbol, bars in self.bars.items():
            bar = bars[self.index]
            buffer = self.buffers[symbol]
            buffer.update(bar)
            if buffer.ready:
                contexts.append(SymbolContext(bar=bar, features=buffer, account=FLAT_ACCOUNT))
        self.index += 1
        return contexts


@dataclasses.dataclass
class PoisonedView:
    """A real buffer whose tactical window gets one bad value (NaN, inf or out of range)."""

    inner: FeatureView
    value: float

    @property
    def ready(self) -> bool:
        return self.inner.ready

    def raw(self, name: str) -> float:
        return self.inner.raw(name)

    def ema(self, period: int) -> float:
        return self.inner.ema(period)

    def tactical_window(self) -> np.ndarray:
        window = self.inner.tactical_window().copy()
        window[-1, 0] = self.value
        return window

    def strategic_window(self) -> np.ndarray:
        return self.inner.strategic_window()


def without_latency(decisions: Sequence[Decision]) -> list[Decision]:
    """Decisions with the (wall-clock) latency zeroed, for equality checks."""
    return [dataclasses.replace(d, latency_us=0) for d in decisions]

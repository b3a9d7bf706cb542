"""Candles for tests and benchmarks: the recorded gzip CSV fixtures, and seeded synthetic walks.

Owns reading `timestamp,open,high,low,close,volume` files with the csv module and drawing
reproducible random-walk bars. It must not validate beyond what parsing needs (the fixtures are
real exchange data) or be used by the daemon (the replay package has its own reader).
"""

from __future__ import annotations

import csv
import gzip
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trader.domain import Bar, BarSource, interval_ms

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def load_candles(path: Path, symbol: str, interval: str) -> list[Bar]:
    """Read a gzip candle CSV into bars, oldest first as stored.

    The files have no turnover column, so turnover is volume * close as a stand-in.

    Args:
        path: a `.csv.gz` with header `timestamp,open,high,low,close,volume` and timestamps
            such as `2025-06-27 12:05:00+00:00`.
        symbol: the symbol to stamp on every bar.
        interval: the Bybit interval code to stamp on every bar.

    Raises:
        ValueError: a timestamp carries no UTC offset.
    """
    bars: list[Bar] = []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            started = datetime.fromisoformat(record["timestamp"])
            if started.tzinfo is None:
                raise ValueError(f"{path}: timestamp {record['timestamp']!r} has no UTC offset")
            close = float(record["close"])
            volume = float(record["volume"])
            bars.append(
                Bar(
                    symbol=symbol,
                    interval=interval,
                    # Integer arithmetic on timedeltas: no float rounding of the epoch ms.
                    start_ms=(started - _EPOCH) // _ONE_MS,
                    open=float(record["open"]),
                    high=float(record["high"]),
                    low=float(record["low"]),
                    close=close,
                    volume=volume,
                    turnover=volume * close,
                    source=BarSource.REPLAY,
                )
            )
    return bars


def random_walk_bars(
    count: int,
    *,
    seed: int = 0,
    symbol: str = "TESTUSDT",
    interval: str = "5",
    start_ms: int = 1_750_000_000_000,
    price: float = 100.0,
    step: float = 0.002,
) -> list[Bar]:
    """Synthetic contiguous bars: a seeded log-normal random walk with plausible OHLCV.

    Args:
        count: number of bars.
        seed: seed of the `random.Random` that draws the walk (same seed, same bars).
        symbol: symbol stamped on every bar.
        interval: Bybit interval code; bars are spaced by its length.
        start_ms: start of the first bar (UTC epoch ms).
        price: first open.
        step: standard deviation of each bar's log return.
    """
    rng = random.Random(seed)
    spacing_ms = interval_ms(interval)
    bars: list[Bar] = []
    close = price
    for i in range(count):
        open_ = close
        close = open_ * math.exp(rng.gauss(0.0, step))
        high = max(open_, close) * math.exp(abs(rng.gauss(0.0, step / 2)))
        low = min(open_, close) * math.exp(-abs(rng.gauss(0.0, step / 2)))
        volume = rng.lognormvariate(3.0, 0.8)
        bars.append(
            Bar(
                symbol=symbol,
                interval=interval,
                start_ms=start_ms + i * spacing_ms,
                open=open_,
                high=high,
                low=low,
                close=close,
                volume=volume,
                turnover=volume * close,
            )
        )
    return bars

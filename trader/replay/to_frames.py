"""Candles -> Bybit v5 kline frames: recordings synthesised from candle files.

Owns the conversion behind ``trader data to-frames``: each bar becomes a few ``confirm=false``
pushes whose values move consistently toward the final candle, then exactly one
``confirm=true`` push with the final values, in the exact linear kline push shape of reference
bybit-v5.md A6 (numbers for start/end/ts/timestamp, decimal strings for prices, volume,
turnover and interval). Replaying the result through `open_source` gives back the original
bars (labelled ``ws``), which makes it a test input for the live path's parser and filter.

The unconfirmed path per bar: the first push holds the open only (open = high = low = close),
the next reaches one extreme (high or low, chosen by the seeded generator), later ones the
other extreme; volume and turnover grow in equal steps. So high never falls, low never rises
and every value stays inside the final bar. Times: pushes spread over the bar, the confirm
push a few ms after the close, ``recv_ts`` a little after ``ts``. Output is a pure function
of the input and `seed`. It must not read files; `write_recording` only writes.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from trader.domain import Bar, interval_ms
from trader.replay.recording import RecordingWriter, format_decimal

#: Exchange push delay after the bar close, ms (Bybit's sample: 12 ms).
_CONFIRM_DELAY_MS = (5, 60)
#: Network latency between the exchange's ts and our receive time, ms.
_RECV_LATENCY_MS = (20, 80)


def candles_to_frames(
    bars: Iterable[Bar], *, updates_per_bar: int = 2, seed: int = 0
) -> Iterator[dict[str, Any]]:
    """Turn bars into recording lines of Bybit kline pushes.

    Bars should come in start order (as `open_source` or `iter_slices` give them); bars with
    the same start (several symbols) have their pushes interleaved by receive time.

    Args:
        bars: Final candles.
        updates_per_bar: Unconfirmed pushes before each confirmed one (0 for none).
        seed: Seed for the extreme order and the time jitter.

    Yields:
        ``{"recv_ts": ..., "frame": {...}}`` lines in receive order.

    Raises:
        ValueError: `updates_per_bar` is negative or too large to spread over a bar.
    """
    if updates_per_bar < 0:
        raise ValueError(f"updates_per_bar must be >= 0, got {updates_per_bar}")
    rng = random.Random(seed)
    for _, group in itertools.groupby(bars, key=lambda bar: bar.start_ms):
        lines = [line for bar in group for line in _bar_lines(bar, updates_per_bar, rng)]
        # Stable sort: equal receive times keep the input (symbol) order.
        lines.sort(key=lambda line: int(line["recv_ts"]))
        yield from lines


def write_recording(lines: Iterable[Mapping[str, Any]], path: str | Path) -> int:
    """Write recording lines to a ``.jsonl`` or ``.jsonl.gz`` file (gzip by suffix).

    Returns:
        The number of lines written.
    """
    with RecordingWriter(path) as writer:
        for line in lines:
            writer.write_line(line)
        return writer.lines_written


def _bar_lines(bar: Bar, updates: int, rng: random.Random) -> list[dict[str, Any]]:
    """The unconfirmed pushes and the confirming push for one bar."""
    length_ms = interval_ms(bar.interval)
    spacing_ms = length_ms // (updates + 1)
    if spacing_ms < 4:
        raise ValueError(f"{updates} updates do not fit in a {bar.interval} bar")
    # Jitter stays under a quarter of the spacing so push times never cross.
    jitter_ms = spacing_ms // 4
    first_extreme, second_extreme = (
        (bar.high, bar.low) if rng.random() < 0.5 else (bar.low, bar.high)
    )
    visited = [bar.open]
    volume_places = _places(bar.volume)
    turnover_places = _places(bar.turnover)
    lines = []
    for step in range(updates):
        if step == 1:
            visited.append(first_extreme)
        elif step == 2:
            visited.append(second_extreme)
        ts_ms = bar.start_ms + (step + 1) * spacing_ms + rng.randrange(jitter_ms)
        fraction = (step + 1) / (updates + 1)
        values = (
            bar.open,
            visited[-1],
            max(visited),
            min(visited),
            round(bar.volume * fraction, volume_places),
            round(bar.turnover * fraction, turnover_places),
        )
        trade_ms = ts_ms - rng.randrange(jitter_ms)
        lines.append(_line(bar, values, confirm=False, ts_ms=ts_ms, trade_ms=trade_ms, rng=rng))
    ts_ms = bar.close_ms + rng.randint(*_CONFIRM_DELAY_MS)
    trade_ms = bar.end_ms - rng.randrange(jitter_ms)
    final = (bar.open, bar.close, bar.high, bar.low, bar.volume, bar.turnover)
    lines.append(_line(bar, final, confirm=True, ts_ms=ts_ms, trade_ms=trade_ms, rng=rng))
    return lines


def _line(
    bar: Bar,
    values: tuple[float, float, float, float, float, float],
    *,
    confirm: bool,
    ts_ms: int,
    trade_ms: int,
    rng: random.Random,
) -> dict[str, Any]:
    """One recording line holding one push.

    `values` are open, close, high, low, volume and turnover, in Bybit's field order.
    """
    open_, close, high, low, volume, turnover = values
    item = {
        "start": bar.start_ms,
        "end": bar.end_ms,
        "interval": bar.interval,
        "open": format_decimal(open_),
        "close": format_decimal(close),
        "high": format_decimal(high),
        "low": format_decimal(low),
        "volume": format_decimal(volume),
        "turnover": format_decimal(turnover),
        "confirm": confirm,
        "timestamp": trade_ms,
    }
    frame = {
        "topic": f"kline.{bar.interval}.{bar.symbol}",
        "data": [item],
        "ts": ts_ms,
        "type": "snapshot",
    }
    return {"recv_ts": ts_ms + rng.randint(*_RECV_LATENCY_MS), "frame": frame}


def _places(value: float) -> int:
    """Decimal places in a value's shortest text, so partial volumes look like the final one."""
    text = format_decimal(value)
    return len(text) - text.index(".") - 1 if "." in text else 0

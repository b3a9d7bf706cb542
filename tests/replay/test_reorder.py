"""Tests of `ReorderBuffer`: recordings put back in start order, REST copies preferred."""

from __future__ import annotations

import pytest

from trader.domain import Bar, BarSource
from trader.replay.rejections import Rejection
from trader.replay.reorder import ReorderBuffer

T0 = 1_699_999_800_000
STEP = 300_000


def _bar(symbol: str, index: int, source: BarSource = BarSource.WS, close: float = 10.5) -> Bar:
    return Bar(symbol, "5", T0 + index * STEP, 10.0, 11.0, 9.0, close, 1.0, 10.5, source)


def _run(buffer: ReorderBuffer, bars: list[Bar]) -> list[Bar | Rejection]:
    out: list[Bar | Rejection] = []
    for line, bar in enumerate(bars, start=1):
        out.extend(buffer.add(bar, line))
    out.extend(buffer.drain())
    return out


def _labels(items: list[Bar | Rejection]) -> list[object]:
    return [
        (item.symbol, (item.start_ms - T0) // STEP, item.source.value)
        if isinstance(item, Bar)
        else (item.reason, item.line)
        for item in items
    ]


def test_gap_fill_recorded_after_a_later_frame_comes_out_in_start_order() -> None:
    """A REST gap fill written after a later websocket bar is released before that bar."""
    items = _run(
        ReorderBuffer("rec"),
        [_bar("BTC", 0), _bar("BTC", 2), _bar("ETH", 2), _bar("BTC", 1, BarSource.REST)],
    )
    assert _labels(items) == [
        ("BTC", 0, "ws"),
        ("BTC", 1, "rest"),
        ("BTC", 2, "ws"),
        ("ETH", 2, "ws"),
    ]


def test_rest_copy_beats_an_earlier_websocket_copy_and_later_repeats_are_rejections() -> None:
    """The REST copy of a bar replaces its websocket copy; every later copy is a rejection."""
    items = _run(
        ReorderBuffer("rec"),
        [
            _bar("BTC", 0),
            _bar("BTC", 0, BarSource.REST),
            _bar("BTC", 0),
            _bar("BTC", 0, BarSource.REST, close=10.6),
        ],
    )
    assert _labels(items) == [
        ("duplicate", 2),
        ("duplicate", 3),
        ("duplicate_conflict", 4),
        ("BTC", 0, "rest"),
    ]


def test_bars_released_once_the_window_has_passed_them() -> None:
    """A bar is held until one `window_bars` or more intervals later arrives, or until drain."""
    buffer = ReorderBuffer("rec", window_bars=2)
    assert list(buffer.add(_bar("BTC", 0), 1)) == []
    assert list(buffer.add(_bar("BTC", 1), 2)) == []
    released = list(buffer.add(_bar("BTC", 3), 3))
    assert _labels(released) == [("BTC", 0, "ws"), ("BTC", 1, "ws")]
    assert _labels(list(buffer.drain())) == [("BTC", 3, "ws")]


def test_window_must_be_positive() -> None:
    """A window of zero bars is refused."""
    with pytest.raises(ValueError, match="window_bars"):
        ReorderBuffer("rec", window_bars=0)

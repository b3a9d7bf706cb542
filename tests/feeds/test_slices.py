"""Tests of `SliceAssembler`: complete slices in order, gaps flagged, REST settling."""

from __future__ import annotations

import pytest

from trader.domain import Bar, BarSource
from trader.feeds.slices import SliceAssembler

T0 = 1_700_000_100_000 - 1_700_000_100_000 % 300_000
STEP = 300_000
GRACE = 5_000


def _bar(symbol: str, index: int, source: BarSource = BarSource.WS) -> Bar:
    return Bar(symbol, "5", T0 + index * STEP, 10.0, 11.0, 9.0, 10.5, 1.0, 10.5, source)


def _starts(slices: list[list[Bar]]) -> list[list[tuple[str, int]]]:
    return [[(bar.symbol, (bar.start_ms - T0) // STEP) for bar in bars] for bars in slices]


def _assembler(last: int = -1) -> SliceAssembler:
    last_start_ms = T0 + last * STEP if last >= 0 else -1
    return SliceAssembler(["ETH", "BTC"], "5", last_start_ms=last_start_ms, grace_ms=GRACE)


def test_slice_released_only_when_every_symbol_arrived_sorted_by_symbol() -> None:
    """A slice waits until every symbol's bar has arrived, then comes out sorted by symbol."""
    assembler = _assembler()
    assert assembler.add(_bar("ETH", 0))
    assert assembler.ready() == []
    assert assembler.add(_bar("BTC", 0))
    assert _starts(assembler.ready()) == [[("BTC", 0), ("ETH", 0)]]
    assert assembler.last_start_ms == T0


def test_repeats_and_bars_at_or_before_the_last_slice_are_refused_and_counted() -> None:
    """Bars at or before the last released slice and repeats of a held bar are refused and
    counted; only the new bar is held."""
    assembler = _assembler(last=3)
    assert not assembler.add(_bar("BTC", 3))
    assert not assembler.add(_bar("BTC", 1))
    assert assembler.add(_bar("BTC", 4))
    assert not assembler.add(_bar("BTC", 4, BarSource.REST))
    assert assembler.refused == 3
    assert assembler.held_bars == 1


@pytest.mark.parametrize(
    ("bars", "now_offset_ms", "overdue"),
    [
        ([("BTC", 4), ("ETH", 4)], None, False),  # complete: nothing to fetch
        ([("BTC", 4)], GRACE, False),  # ETH's confirm may still come
        ([("BTC", 4)], GRACE + 1, True),  # past the grace by exchange time
        ([("BTC", 4)], None, False),  # no exchange time yet
        ([("BTC", 4), ("BTC", 5)], None, True),  # the stream moved on without ETH's bar 4
        ([("BTC", 6), ("ETH", 6)], None, True),  # bars 4 and 5 were skipped (a push pause)
        ([], 10 * STEP, False),  # nothing held
    ],
)
def test_overdue_when_a_confirm_cannot_come_anymore(
    bars: list[tuple[str, int]], now_offset_ms: int | None, overdue: bool
) -> None:
    """A held slice is overdue once its grace has passed by exchange time, a later bar or a
    skipped start shows a confirm is lost; never when complete or nothing is held."""
    assembler = _assembler(last=3)
    for symbol, index in bars:
        assembler.add(_bar(symbol, index))
    close_ms = T0 + 5 * STEP  # the close of bar 4
    now_ms = None if now_offset_ms is None else close_ms + now_offset_ms
    assert assembler.overdue(now_ms) is overdue


def test_rest_gap_fill_goes_before_the_later_bars_held() -> None:
    """A REST bar that fills the gap completes the older slice, which comes out before the later
    slice already held."""
    assembler = _assembler(last=3)
    for bar in (_bar("BTC", 5), _bar("ETH", 5), _bar("ETH", 4)):
        assembler.add(bar)
    assert assembler.ready() == []
    assembler.add(_bar("BTC", 4, BarSource.REST))
    assert _starts(assembler.ready()) == [[("BTC", 4), ("ETH", 4)], [("BTC", 5), ("ETH", 5)]]


def test_settle_releases_incomplete_slices_rest_could_not_fill() -> None:
    """Settling releases held slices up to a start even if incomplete, moves past a start with no
    bar at all, and leaves later complete slices ready."""
    assembler = _assembler(last=3)
    assembler.add(_bar("BTC", 4))
    assembler.add(_bar("BTC", 6))
    assembler.add(_bar("ETH", 6))
    settled = assembler.settle_through(T0 + 5 * STEP)
    assert _starts(settled) == [[("BTC", 4)]]
    assert assembler.last_start_ms == T0 + 5 * STEP  # bar 5 does not exist anywhere
    assert _starts(assembler.ready()) == [[("BTC", 6), ("ETH", 6)]]
    assert not assembler.overdue(None)


def test_unknown_symbol_is_a_wiring_error() -> None:
    """A bar for a symbol not assembled here, or a negative grace, raises ValueError."""
    with pytest.raises(ValueError, match="not assembled here"):
        _assembler().add(_bar("SOL", 0))
    with pytest.raises(ValueError, match="grace_ms"):
        SliceAssembler(["BTC"], "5", grace_ms=-1)

"""Tests for trader.replay.merge: sources merged into bar-close slices."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from trader.domain import Bar, BarSource
from trader.errors import ConfigError
from trader.replay.merge import iter_slices
from trader.replay.rejections import Rejection, RejectionCounter
from trader.replay.sources import open_source

FIXTURES = Path(__file__).parent.parent / "fixtures"
FIVE_MIN_MS = 300_000
T0 = 1751025900000  # first bar of both fixtures, 2025-06-27 12:05 UTC


def _bar(start_ms: int, symbol: str = "BTCUSDT", close: float = 101.0, interval: str = "5") -> Bar:
    return Bar(symbol, interval, start_ms, 100.0, 102.0, 99.0, close, 2.0, 200.0, BarSource.REPLAY)


def _quiet() -> RejectionCounter:
    return RejectionCounter(quiet=True)


def test_slices_hold_both_symbols_in_time_order_when_two_files_are_merged() -> None:
    """BTCUSDT and ETHUSDT fixtures merge into 1,500 slices of two bars, sorted by symbol."""
    sources = [
        open_source(FIXTURES / "ETHUSDT_5m.csv.gz"),
        open_source(FIXTURES / "BTCUSDT_5m.csv.gz"),
    ]

    slices = list(iter_slices(sources, rejections=_quiet()))

    assert len(slices) == 1500
    starts = [bars[0].start_ms for bars in slices]
    assert starts == [T0 + index * FIVE_MIN_MS for index in range(1500)]
    assert all([bar.symbol for bar in bars] == ["BTCUSDT", "ETHUSDT"] for bars in slices)
    assert all(len({bar.start_ms for bar in bars}) == 1 for bars in slices)


def test_bars_kept_from_inclusive_to_exclusive_when_range_is_given() -> None:
    """from_ms keeps its own bar; to_ms stops before its bar."""
    sources = [
        open_source(FIXTURES / "BTCUSDT_5m.csv.gz"),
        open_source(FIXTURES / "ETHUSDT_5m.csv.gz"),
    ]
    from_ms, to_ms = T0 + 10 * FIVE_MIN_MS, T0 + 20 * FIVE_MIN_MS

    slices = list(iter_slices(sources, rejections=_quiet(), from_ms=from_ms, to_ms=to_ms))

    assert [bars[0].start_ms for bars in slices] == list(range(from_ms, to_ms, FIVE_MIN_MS))
    assert sum(len(bars) for bars in slices) == 20


def test_slice_holds_the_bars_present_when_a_symbol_misses_a_start() -> None:
    """A start only one source has gives a one-bar slice."""
    btc = [_bar(T0), _bar(T0 + FIVE_MIN_MS), _bar(T0 + 2 * FIVE_MIN_MS)]
    eth = [_bar(T0, "ETHUSDT"), _bar(T0 + 2 * FIVE_MIN_MS, "ETHUSDT")]

    slices = list(iter_slices([btc, eth], rejections=_quiet()))

    assert [[bar.symbol for bar in bars] for bars in slices] == [
        ["BTCUSDT", "ETHUSDT"],
        ["BTCUSDT"],
        ["BTCUSDT", "ETHUSDT"],
    ]


def test_rejections_counted_when_sources_yield_them() -> None:
    """Rejections among a source's bars are counted and logged, bars still flow."""
    bad = Rejection("non_finite", "open=nan", "BTCUSDT", "a.csv", 3)
    counter = RejectionCounter()

    with capture_logs() as logs:
        slices = list(iter_slices([[_bar(T0), bad, _bar(T0 + FIVE_MIN_MS)]], rejections=counter))

    assert len(slices) == 2
    assert counter.as_dict() == {"non_finite": 1}
    assert [entry["event"] for entry in logs] == ["input_rejected"]


def test_second_copy_dropped_as_duplicate_when_two_sources_hold_the_same_bars() -> None:
    """The same file given twice yields each bar once and counts every copy as a duplicate."""
    path = FIXTURES / "BTCUSDT_5m.csv.gz"
    counter = _quiet()

    slices = list(iter_slices([open_source(path), open_source(path)], rejections=counter))

    assert len(slices) == 1500
    assert all(len(bars) == 1 for bars in slices)
    assert counter.as_dict() == {"duplicate": 1500}


def test_first_source_wins_when_sources_conflict_on_a_bar() -> None:
    """Different values for one (symbol, interval, start) keep the earlier source's bar."""
    counter = _quiet()
    rest = dataclasses.replace(_bar(T0, close=100.5), source=BarSource.REST)

    slices = list(iter_slices([[_bar(T0)], [rest]], rejections=counter))

    assert slices == [[_bar(T0)]]
    assert counter.as_dict() == {"duplicate_conflict": 1}


def test_late_bar_dropped_as_out_of_order_when_its_slice_was_emitted() -> None:
    """A bar older than an emitted slice (late REST backfill in a recording) is out_of_order."""
    counter = _quiet()
    recording = [_bar(T0 + FIVE_MIN_MS), _bar(T0, "ETHUSDT"), _bar(T0 + 2 * FIVE_MIN_MS)]

    slices = list(iter_slices([recording], rejections=counter))

    assert [[bar.start_ms for bar in bars] for bars in slices] == [
        [T0 + FIVE_MIN_MS],
        [T0 + 2 * FIVE_MIN_MS],
    ]
    assert counter.as_dict() == {"out_of_order": 1}


def test_reading_stops_at_to_ms_when_a_source_is_endless() -> None:
    """Sources are pulled lazily, so an endless stream ends at to_ms without being exhausted."""

    def endless() -> Iterator[Bar]:
        for index in itertools.count():
            yield _bar(T0 + index * FIVE_MIN_MS)

    slices = iter_slices([endless()], rejections=_quiet(), to_ms=T0 + 3 * FIVE_MIN_MS)

    assert len(list(slices)) == 3


def test_nothing_yielded_when_sources_are_empty() -> None:
    """No bars means no slices."""
    assert list(iter_slices([[], []], rejections=_quiet())) == []


def test_config_error_names_both_sources_when_first_bars_differ_in_interval() -> None:
    """A 5-minute and a 60-minute source are refused before any slice, naming both files."""
    five = [_bar(T0), _bar(T0 + FIVE_MIN_MS)]
    hourly = [_bar(T0 - T0 % 3_600_000, "ETHUSDT", interval="60")]
    slices = iter_slices(
        [five, hourly], rejections=_quiet(), names=["BTCUSDT_5m.csv", "ETHUSDT_60m.csv"]
    )

    with pytest.raises(ConfigError) as caught:
        next(slices)

    message = str(caught.value)
    assert "BTCUSDT_5m.csv starts with 5 bars" in message
    assert "ETHUSDT_60m.csv with 60 bars" in message
    assert "\n" not in message


def test_later_bar_rejected_as_interval_mismatch_when_a_source_changes_interval() -> None:
    """A recording's later bar of another interval is counted and kept out of every slice."""
    counter = _quiet()
    hourly = _bar(T0 + 11 * FIVE_MIN_MS - (T0 + 11 * FIVE_MIN_MS) % 3_600_000, interval="60")
    recording = [_bar(T0), _bar(T0 + FIVE_MIN_MS), hourly, _bar(T0 + 20 * FIVE_MIN_MS)]

    slices = list(iter_slices([recording], rejections=counter, names=["rec.jsonl"]))

    assert all(bar.interval == "5" for bars in slices for bar in bars)
    assert len(slices) == 3
    assert counter.as_dict() == {"interval_mismatch": 1}

"""The rolling correlation of per-bar returns that groups positions moving together."""

from __future__ import annotations

import json
import math

import pytest

from risk.correlation import RollingCorrelation


def _fed(
    pairs: list[tuple[float, float]], *, window: int = 50, minimum: int = 5
) -> RollingCorrelation:
    rolling = RollingCorrelation(window_bars=window, min_bars=minimum)
    for index, (a, b) in enumerate(pairs):
        rolling.add("A", index * 1_000, a)
        rolling.add("B", index * 1_000, b)
    return rolling


_WAVE = [math.sin(i * 0.7) * 0.01 for i in range(40)]


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        ([x * 3.0 for x in _WAVE], 1.0),  # same moves, scaled
        ([-x for x in _WAVE], -1.0),  # mirror image
        ([x + 0.002 for x in _WAVE], 1.0),  # a constant offset does not matter
    ],
)
def test_correlation_matches_pearson_when_series_are_related(
    second: list[float], expected: float
) -> None:
    """Linearly related return series correlate at +1 or -1."""
    got = _fed(list(zip(_WAVE, second, strict=True))).correlation("A", "B")
    assert got == pytest.approx(expected, abs=1e-9)


def test_correlation_is_unknown_when_too_few_common_bars() -> None:
    """Below `min_bars` common bars the correlation is None, not a noisy guess."""
    assert _fed(list(zip(_WAVE[:4], _WAVE[:4], strict=True))).correlation("A", "B") is None
    assert _fed([]).correlation("A", "B") is None


def test_correlation_is_unknown_when_a_series_is_flat() -> None:
    """A series without variance has no correlation."""
    pairs = [(x, 0.0) for x in _WAVE]
    assert _fed(pairs).correlation("A", "B") is None


def test_correlation_pairs_returns_by_bar_when_one_symbol_misses_bars() -> None:
    """Returns are matched on bar start, so a gap on one symbol does not shift the series."""
    rolling = RollingCorrelation(window_bars=50, min_bars=5)
    for index, value in enumerate(_WAVE):
        rolling.add("A", index, value)
        if index % 3:
            rolling.add("B", index, value * 2)
    assert rolling.correlation("A", "B") == pytest.approx(1.0)


def test_window_forgets_old_returns_when_full() -> None:
    """Only the latest `window_bars` returns count: an old regime ages out."""
    rolling = RollingCorrelation(window_bars=10, min_bars=5)
    for index in range(30):
        a = _WAVE[index]
        rolling.add("A", index, a)
        rolling.add("B", index, -a if index < 20 else a)
    assert rolling.correlation("A", "B") == pytest.approx(1.0)


def test_repeated_bar_counts_once_when_fed_twice() -> None:
    """A bar start not newer than the last one is ignored."""
    rolling = RollingCorrelation(window_bars=10, min_bars=2)
    rolling.add("A", 5, 0.1)
    rolling.add("A", 5, 0.9)
    rolling.add("A", 4, 0.9)
    assert rolling.state_dict() == {"A": [[5, 0.1]]}


def test_state_round_trips_through_json_when_saved() -> None:
    """The windows survive a JSON round trip and give the same correlation."""
    rolling = _fed([(x, x * x) for x in _WAVE])
    restored = RollingCorrelation(window_bars=50, min_bars=5)
    restored.load_state_dict(json.loads(json.dumps(rolling.state_dict())))
    assert restored.correlation("A", "B") == rolling.correlation("A", "B")


def test_symbol_correlates_with_itself_when_asked() -> None:
    """A symbol is perfectly correlated with itself, even before any return."""
    assert RollingCorrelation(window_bars=10, min_bars=2).correlation("A", "A") == 1.0


@pytest.mark.parametrize(("window", "minimum"), [(1, 1), (10, 1), (10, 11)])
def test_bad_window_is_refused_when_building(window: int, minimum: int) -> None:
    """Windows need at least two bars and min_bars within the window."""
    with pytest.raises(ValueError, match="min_bars"):
        RollingCorrelation(window_bars=window, min_bars=minimum)

"""The sliding one-minute window behind max_orders_per_minute, on exchange time."""

from __future__ import annotations

import pytest

from risk.rate import WINDOW_MS, OrderRateWindow


@pytest.mark.parametrize(
    ("sent_ms", "now_ms", "expected"),
    [
        ([], 0, 0),
        ([0, 10, 20], 20, 3),
        ([0, 10, 20], WINDOW_MS - 1, 3),
        ([0, 10, 20], WINDOW_MS, 2),  # the order at 0 left the window at exactly one minute
        ([0, 10, 20], WINDOW_MS + 20, 0),
    ],
)
def test_count_includes_only_last_minute_when_time_moves(
    sent_ms: list[int], now_ms: int, expected: int
) -> None:
    """Orders count while now - 60 s < t <= now."""
    window = OrderRateWindow()
    for t in sent_ms:
        window.record(t)
    assert window.count(now_ms) == expected


def test_state_round_trips_when_saved() -> None:
    """The recorded times survive a save and restore."""
    window = OrderRateWindow()
    for t in (5, 6, 7):
        window.record(t)
    restored = OrderRateWindow()
    restored.load_state_dict(window.state_dict())
    assert restored.state_dict() == [5, 6, 7]
    assert restored.count(WINDOW_MS + 5) == 2

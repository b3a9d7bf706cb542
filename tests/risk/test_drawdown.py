"""Drawdown from peak mark-to-market equity and loss since the start of the UTC day."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from risk.drawdown import DAY_MS, DrawdownTracker

D = Decimal
DAY0 = 19_675 * DAY_MS  # 2023-11-14 00:00 UTC


@pytest.mark.parametrize(
    ("marks", "drawdown", "daily_loss"),
    [
        # (equity, ms into day 0 or later) ... -> figures of the last mark
        ([("10000", 3_600_000)], 0.0, 0.0),
        ([("10000", 3_600_000), ("9000", 7_200_000)], 0.1, 0.1),
        ([("10000", 3_600_000), ("12000", 7_200_000), ("9000", 9_000_000)], 0.25, 0.1),
        # New day at midnight exactly: the midnight mark is the day's start.
        ([("10000", 3_600_000), ("9000", DAY_MS), ("8100", DAY_MS + 600_000)], 0.19, 0.1),
        # New day first marked after midnight: it starts from the last mark before it.
        ([("10000", 3_600_000), ("9000", DAY_MS - 1), ("8100", DAY_MS + 600_000)], 0.19, 0.1),
        # Gains are no loss.
        ([("10000", 0), ("10500", 1)], 0.0, 0.0),
    ],
)
def test_marks_measure_drawdown_and_daily_loss_when_equity_moves(
    marks: list[tuple[str, int]], drawdown: float, daily_loss: float
) -> None:
    """Drawdown is from the peak of every mark; daily loss from the UTC day's first equity."""
    tracker = DrawdownTracker()
    for equity, offset_ms in marks:
        got = tracker.mark(D(equity), DAY0 + offset_ms)
    assert got.drawdown == pytest.approx(drawdown)
    assert got.daily_loss == pytest.approx(daily_loss)


def test_unrealised_losses_count_when_marked() -> None:
    """A losing open position shows in the drawdown before anything is closed."""
    tracker = DrawdownTracker()
    tracker.mark(D("10000"), DAY0)
    # Same cash, but an open position is 1,500 USDT under water.
    got = tracker.mark(D("10000") - D("1500"), DAY0 + 300_000)
    assert got.drawdown == pytest.approx(0.15)


def test_rebase_measures_from_last_equity_when_resumed() -> None:
    """After a rebase both peak and day start are the last equity."""
    tracker = DrawdownTracker()
    tracker.mark(D("10000"), DAY0)
    tracker.mark(D("7000"), DAY0 + 1)
    tracker.rebase()
    got = tracker.mark(D("7000"), DAY0 + 2)
    assert (got.drawdown, got.daily_loss) == (0.0, 0.0)
    assert got.peak_equity == D("7000")


def test_loss_is_total_when_peak_not_positive() -> None:
    """With a non-positive reference any further loss counts as all of it."""
    tracker = DrawdownTracker()
    tracker.mark(D("0"), DAY0)
    assert tracker.mark(D("-5"), DAY0 + 1).drawdown == 1.0


def test_state_round_trips_through_json_when_saved() -> None:
    """Peak, day and start-of-day equity survive a JSON round trip."""
    tracker = DrawdownTracker()
    tracker.mark(D("10000.5"), DAY0)
    tracker.mark(D("9000.25"), DAY0 + 1)
    restored = DrawdownTracker()
    restored.load_state_dict(json.loads(json.dumps(tracker.state_dict())))
    assert restored.mark(D("9000"), DAY0 + 2) == tracker.mark(D("9000"), DAY0 + 2)
    assert restored.last_equity == D("9000")

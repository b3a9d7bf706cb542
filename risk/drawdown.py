"""Drawdown from peak mark-to-market equity, and loss since the start of the UTC day.

Owns the peak of every equity mark it is given (marks include unrealised PnL: a guard that only
looked at closed trades would miss a losing open position), the equity at the start of the
current UTC day of exchange time, and the two ratios derived from them.

It must not decide what a ratio means for trading (that is `risk.machine`), read a clock, or do
I/O: equity and exchange time (epoch ms) are passed to `mark`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

#: Length of a UTC day in epoch milliseconds (epoch ms have no leap seconds).
DAY_MS = 86_400_000
_ZERO = Decimal(0)


# Not frozen: built at every mark, and a frozen dataclass's __init__ costs
# about 4x a plain one's (object.__setattr__ per field). Treat it as read-only.
@dataclass(slots=True)
class AccountMarks:
    """One mark's figures: drawdown from peak and loss since the day started, as fractions."""

    equity: Decimal
    peak_equity: Decimal
    day_start_equity: Decimal
    drawdown: float
    daily_loss: float


class DrawdownTracker:
    """Tracks the equity peak and the start-of-day equity across marks."""

    def __init__(self) -> None:
        self._peak: Decimal | None = None
        self._day: int | None = None
        self._day_start: Decimal | None = None
        self._last: Decimal | None = None

    def mark(self, equity: Decimal, now_ms: int) -> AccountMarks:
        """Take one mark-to-market equity at exchange time `now_ms` and return the figures.

        A new UTC day starts from the equity last marked at or before midnight: the mark at
        exactly 00:00 if there is one (bars close on the boundary), else the previous mark.
        """
        day = now_ms // DAY_MS
        if self._day is None or day != self._day:
            at_midnight = now_ms == day * DAY_MS
            self._day_start = equity if at_midnight or self._last is None else self._last
            self._day = day
        day_start = self._day_start if self._day_start is not None else equity
        peak = equity if self._peak is None else max(self._peak, equity)
        self._peak = peak
        self._last = equity
        return AccountMarks(
            equity=equity,
            peak_equity=peak,
            day_start_equity=day_start,
            drawdown=_loss_fraction(peak, equity),
            daily_loss=_loss_fraction(day_start, equity),
        )

    def rebase(self) -> None:
        """Measure from the last marked equity again (an operator's resume accepts the loss)."""
        if self._last is not None:
            self._peak = self._last
            self._day_start = self._last

    @property
    def last_equity(self) -> Decimal | None:
        """The equity of the latest mark, if any."""
        return self._last

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (Decimals as strings)."""
        return {
            "peak_equity": _text(self._peak),
            "day": self._day,
            "day_start_equity": _text(self._day_start),
            "last_equity": _text(self._last),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self._peak = _number(state["peak_equity"])
        self._day = None if state["day"] is None else int(state["day"])
        self._day_start = _number(state["day_start_equity"])
        self._last = _number(state["last_equity"])


def _loss_fraction(reference: Decimal, equity: Decimal) -> float:
    """How much of `reference` was lost down to `equity` (0 when equity is at or above it)."""
    if equity >= reference:  # the usual case at a new high: no Decimal division
        return 0.0
    if reference <= 0:
        return 1.0
    return float((reference - equity) / reference)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _number(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)

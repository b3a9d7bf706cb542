"""Accounting for rejected input: what was dropped, why, and where it came from.

Owns the `Rejection` value (one per dropped frame, line, row or bar) and the `RejectionCounter`
that tallies them by reason and logs each one once, as the structlog event ``input_rejected``
with key-value context. Sources yield rejections in-line with bars instead of raising, so one
bad row never stops a replay; the counter is the single place they are counted and logged.

It must not decide what is bad (parsers and validators do) nor drop anything itself.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import structlog

from trader.errors import DataError


@dataclass(frozen=True, slots=True)
class Rejection:
    """One rejected input.

    Attributes:
        reason: Stable label, e.g. ``"non_finite"`` or ``"unparseable_row"``.
        detail: Human-readable specifics (offending values).
        symbol: The symbol when known.
        source: Where the input came from (a file path).
        line: 1-based line (CSV: line of the row, header is line 1; Parquet: row number) or
            None when not applicable.
    """

    reason: str
    detail: str
    symbol: str | None
    source: str
    line: int | None

    @classmethod
    def from_error(
        cls, exc: DataError, *, source: str, line: int | None, symbol: str | None = None
    ) -> Rejection:
        """Build a rejection from a `DataError`, keeping its reason, detail and symbol."""
        return cls(exc.reason, exc.detail, exc.symbol or symbol, source, line)


class RejectionCounter:
    """Counts rejections by reason and logs each one once.

    Set `quiet` while a resumed replay re-reads input it already processed: the counts stay
    complete (the summary must match an uninterrupted run) without logging every rejection a
    second time.
    """

    def __init__(self, *, quiet: bool = False) -> None:
        """Create an empty counter.

        Args:
            quiet: Count without logging.
        """
        self.quiet = quiet
        self._counts: Counter[str] = Counter()
        self._log = structlog.get_logger()

    def record(self, rejection: Rejection) -> None:
        """Count one rejection and, unless quiet, log it as ``input_rejected``."""
        self._counts[rejection.reason] += 1
        if not self.quiet:
            self._log.warning(
                "input_rejected",
                reason=rejection.reason,
                detail=rejection.detail,
                symbol=rejection.symbol,
                source=rejection.source,
                line=rejection.line,
            )

    @property
    def total(self) -> int:
        """Number of rejections recorded."""
        return sum(self._counts.values())

    def as_dict(self) -> dict[str, int]:
        """Counts by reason, reasons in alphabetical order (stable for summaries and JSON)."""
        return {reason: self._counts[reason] for reason in sorted(self._counts)}

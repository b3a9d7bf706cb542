"""The unit of work the engine hands to the single database writer.

Owns the shape of one transaction: rows for each table (plain dicts keyed by column name, built
on the hot path without ORM objects) plus the run-state snapshot that makes the rows resumable.
Everything in one batch commits atomically, so a crash leaves the database at a batch boundary
whose snapshot matches its rows exactly. It must not perform I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]


@dataclass(slots=True)
class RunStateSnapshot:
    """Engine state after the last slice of a batch (`run_state` row, upserted by run_id)."""

    run_id: str
    last_slice_start_ms: int
    state: dict[str, Any]


@dataclass(slots=True)
class WriteBatch:
    """Rows for one transaction. Inserts are idempotent on natural keys; orders and positions
    are upserts (status and quantities change)."""

    bars: list[Row] = field(default_factory=list)
    decisions: list[Row] = field(default_factory=list)
    orders: list[Row] = field(default_factory=list)
    fills: list[Row] = field(default_factory=list)
    equity: list[Row] = field(default_factory=list)
    rewards: list[Row] = field(default_factory=list)
    risk_events: list[Row] = field(default_factory=list)
    positions: list[Row] = field(default_factory=list)
    snapshot: RunStateSnapshot | None = None

    def row_count(self) -> int:
        """Number of rows over all tables (the writer's batching measure)."""
        return (
            len(self.bars)
            + len(self.decisions)
            + len(self.orders)
            + len(self.fills)
            + len(self.equity)
            + len(self.rewards)
            + len(self.risk_events)
            + len(self.positions)
        )

    def put_back(self, unsent: WriteBatch) -> None:
        """Put the rows of a batch that was never written in front of this one's.

        Positions and the snapshot are not carried: both describe the state at a flush and are
        taken anew at the next one.
        """
        self.bars[:0] = unsent.bars
        self.decisions[:0] = unsent.decisions
        self.orders[:0] = unsent.orders
        self.fills[:0] = unsent.fills
        self.equity[:0] = unsent.equity
        self.rewards[:0] = unsent.rewards
        self.risk_events[:0] = unsent.risk_events

    def is_empty(self) -> bool:
        """True when there is nothing to write, snapshot included."""
        return self.snapshot is None and self.row_count() == 0

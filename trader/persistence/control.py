"""The `control_events` table: operator commands (kill, resume, flatten) and when they applied.

Owns writing a command (`trader kill`/`resume`, or an MQTT control message the daemon accepted),
reading the commands a daemon has not applied yet, oldest first, and stamping `applied_at`. A
command written while no daemon runs waits here and is applied at the next start, before any
trading. It must not decide what a command does (the daemon and the risk layer do).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update

from trader.domain import ControlCommand
from trader.persistence.models import ControlEventRow
from trader.persistence.repository import Bind, _connect, _from_db, _to_utc

__all__ = ["ControlCommand", "ControlEvent", "mark_applied", "pending", "recent", "request"]


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """One stored command; `flatten` is what a kill asked for (`kill --no-flatten`: False)."""

    id: int
    created_at: datetime
    command: ControlCommand
    reason: str
    source: str
    flatten: bool
    applied_at: datetime | None


async def request(
    bind: Bind, command: ControlCommand, reason: str, *, source: str, flatten: bool = True
) -> int:
    """Store a command for the daemon to apply; return its id."""
    async with _connect(bind, write=True) as conn:
        result = await conn.execute(
            insert(ControlEventRow)
            .values(
                created_at=datetime.now(UTC),
                command=command.value,
                reason=reason,
                source=source,
                flatten=flatten,
                applied_at=None,
            )
            .returning(ControlEventRow.id)
        )
        return int(result.scalar_one())


async def pending(bind: Bind) -> list[ControlEvent]:
    """Commands not applied yet, oldest first."""
    row = ControlEventRow
    stmt = select(row).where(row.applied_at.is_(None)).order_by(row.id)
    async with _connect(bind) as conn:
        return [_event(r) for r in await conn.execute(stmt)]


async def recent(bind: Bind, limit: int = 10) -> list[ControlEvent]:
    """The newest commands, newest first (for `trader status`)."""
    row = ControlEventRow
    stmt = select(row).order_by(row.id.desc()).limit(limit)
    async with _connect(bind) as conn:
        return [_event(r) for r in await conn.execute(stmt)]


async def mark_applied(bind: Bind, event_id: int, applied_at: datetime) -> None:
    """Stamp a command as applied.

    Raises:
        ValueError: `applied_at` is naive (it is stored as UTC).
    """
    async with _connect(bind, write=True) as conn:
        await conn.execute(
            update(ControlEventRow)
            .where(ControlEventRow.id == event_id)
            .values(applied_at=_to_utc(applied_at))
        )


def _event(row: Any) -> ControlEvent:
    return ControlEvent(
        id=row.id,
        created_at=_from_db(row.created_at),
        command=ControlCommand(row.command),
        reason=row.reason,
        source=row.source,
        flatten=row.flatten,
        applied_at=_from_db(row.applied_at) if row.applied_at is not None else None,
    )

"""The `control_events` table: operator commands (kill, resume, flatten) and when they applied.

Owns writing a command (`trader kill`/`resume`, or an MQTT control message the daemon accepted),
reading the commands a daemon has not applied yet, oldest first, and stamping `applied_at`. A
command written while no daemon runs waits here and is applied at the next start, before any
trading. It must not decide what a command does (the daemon and the risk layer do).

Several daemons (one per symbol set) share one database, so "applied" is per run, not per row:
each run keeps a cursor, the id of the last command it applied, as `risk_events` rows of kind
`control_applied` with the detail `#<id> <command>` (`ControlCursor`), and takes the commands
after it. A run's first cursor is the newest command any run has applied (`#<id> start`), so a
new run does not replay old history but still applies what was stored while no daemon ran.
`applied_at` is when the first daemon applied a command, for people; nothing reads it to decide.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import structlog
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from trader.domain import ControlCommand
from trader.errors import first_line
from trader.persistence.models import ControlEventRow, RiskEventRow
from trader.persistence.repository import (
    Bind,
    _connect,
    _from_db,
    _to_utc,
    insert_risk_event,
)
from trader.persistence.writer import is_transient

__all__ = [
    "CURSOR_KIND",
    "ControlCommand",
    "ControlCursor",
    "ControlEvent",
    "WriteRetry",
    "after",
    "is_stored",
    "mark_applied",
    "pending",
    "recent",
    "request",
]

log = structlog.get_logger()
T = TypeVar("T")

#: The `risk_events.kind` of a run's control cursor rows.
CURSOR_KIND: Final = "control_applied"
_CURSOR_DETAIL = re.compile(r"#(\d+) ")


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


async def after(bind: Bind, last_id: int) -> list[ControlEvent]:
    """Commands stored after the one with id `last_id` (applied or not), oldest first."""
    row = ControlEventRow
    stmt = select(row).where(row.id > last_id).order_by(row.id)
    async with _connect(bind) as conn:
        return [_event(r) for r in await conn.execute(stmt)]


async def is_stored(
    bind: Bind, event_id: int, command: ControlCommand, reason: str, *, flatten: bool
) -> bool:
    """Whether row `event_id` holds this very command (an MQTT copy of a stored command)."""
    row = ControlEventRow
    stmt = select(row.command, row.reason, row.flatten).where(row.id == event_id)
    async with _connect(bind) as conn:
        found = (await conn.execute(stmt)).one_or_none()
    return found is not None and tuple(found) == (command.value, reason, flatten)


async def recent(bind: Bind, limit: int = 10) -> list[ControlEvent]:
    """The newest commands, newest first (for `trader status`)."""
    row = ControlEventRow
    stmt = select(row).order_by(row.id.desc()).limit(limit)
    async with _connect(bind) as conn:
        return [_event(r) for r in await conn.execute(stmt)]


async def mark_applied(bind: Bind, event_id: int, applied_at: datetime) -> None:
    """Stamp a command as applied, unless an earlier application (another daemon) did.

    Raises:
        ValueError: `applied_at` is naive (it is stored as UTC).
    """
    row = ControlEventRow
    async with _connect(bind, write=True) as conn:
        await conn.execute(
            update(row)
            .where(row.id == event_id, row.applied_at.is_(None))
            .values(applied_at=_to_utc(applied_at))
        )


class ControlCursor:
    """One run's place in `control_events`: which commands it has applied (module docstring).

    Args:
        bind: The database.
        run_id: The run (it must exist: the cursor rows refer to it).
    """

    def __init__(self, bind: Bind, run_id: str) -> None:
        self._bind = bind
        self._run_id = run_id
        self._last_id: int | None = None

    async def pending(self, now_ms: int) -> list[ControlEvent]:
        """Commands this run has not applied yet, oldest first.

        The first call loads the run's cursor, and for a run that has none stores its start:
        the newest command any run applied (0 when none has been).
        """
        if self._last_id is None:
            self._last_id = await self._load(now_ms)
        return await after(self._bind, self._last_id)

    async def applied(self, event: ControlEvent, now_ms: int) -> None:
        """Move the cursor past `event` (its effects are committed) and stamp `applied_at`."""
        await self._record(now_ms, f"#{event.id} {event.command.value}")
        self._last_id = max(self._last_id or 0, event.id)
        await mark_applied(self._bind, event.id, datetime.now(UTC))

    async def _load(self, now_ms: int) -> int:
        stmt = select(RiskEventRow.detail).where(
            RiskEventRow.run_id == self._run_id, RiskEventRow.kind == CURSOR_KIND
        )
        async with _connect(self._bind) as conn:
            details = list((await conn.execute(stmt)).scalars())
        ids = [int(m.group(1)) for d in details if (m := _CURSOR_DETAIL.match(d))]
        if ids:
            return max(ids)
        applied = ControlEventRow.applied_at.is_not(None)
        async with _connect(self._bind) as conn:
            newest = (
                await conn.execute(select(func.max(ControlEventRow.id)).where(applied))
            ).scalar_one_or_none()
        start_id = int(newest or 0)
        await self._record(now_ms, f"#{start_id} start")
        return start_id

    async def _record(self, now_ms: int, detail: str) -> None:
        """Store one cursor row (`#<id> <what>`) for this run."""
        await insert_risk_event(
            self._bind,
            run_id=self._run_id,
            ts_ms=now_ms,
            kind=CURSOR_KIND,
            symbol="",
            detail=detail,
        )


@dataclass(frozen=True, slots=True)
class WriteRetry:
    """How a control write that failed transiently (a locked SQLite file, a PostgreSQL
    restart; `trader.persistence.writer.is_transient`) is retried: `attempts` in all, waiting
    `base_s` doubling to `cap_s` in between. The daemon's MQTT intake uses it."""

    attempts: int = 8
    base_s: float = 0.1
    cap_s: float = 2.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def run(self, write: Callable[[], Awaitable[T]], *, what: str) -> T:
        """`write()`, retried on transient failures; raises the last failure."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await write()
            except (SQLAlchemyError, OSError) as exc:
                if attempt == self.attempts or not is_transient(exc):
                    raise
                delay_s = min(self.base_s * 2 ** (attempt - 1), self.cap_s)
                log.warning(
                    "control_write_retried",
                    what=what,
                    attempt=attempt,
                    delay_s=delay_s,
                    error=first_line(exc),
                )
                await self.sleep(delay_s)
        raise AssertionError("unreachable: the last attempt returns or raises")


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

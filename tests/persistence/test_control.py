"""`control_events` on both dialects: commands stored, pending in order, stamped when applied;
and the sqlite3 fast path writes rows SQLAlchemy reads back identically."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from trader.domain import ControlCommand
from trader.persistence import control
from trader.persistence._control_sqlite import request_fast
from trader.persistence.database import make_engine
from trader.persistence.migrate import ensure_schema


async def test_pending_commands_in_order_until_applied(db_url: str) -> None:
    """Commands come back pending in the order stored, with reason, source and flatten, until
    marked applied; recent lists the newest first with its applied time."""
    engine = make_engine(db_url)
    try:
        await ensure_schema(engine)
        kill = await control.request(engine, ControlCommand.KILL, "a", source="cli", flatten=False)
        resume = await control.request(engine, ControlCommand.RESUME, "b", source="mqtt")
        pending = await control.pending(engine)
        await control.mark_applied(engine, kill, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
        after = await control.pending(engine)
        recent = await control.recent(engine)
    finally:
        await engine.dispose()
    assert [(e.id, e.command, e.reason, e.source, e.flatten) for e in pending] == [
        (kill, ControlCommand.KILL, "a", "cli", False),
        (resume, ControlCommand.RESUME, "b", "mqtt", True),
    ]
    assert [e.id for e in after] == [resume]
    assert recent[1].applied_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert recent[0].applied_at is None


async def test_fast_path_rows_read_back_like_the_general_path(tmp_path: Path) -> None:
    """A fast-path row follows the general path's id and reads back the same through SQLAlchemy;
    a missing file, an in-memory database or PostgreSQL gives None."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'trader.db'}"
    assert request_fast(url, "kill", "x", source="cli", flatten=True, busy_timeout_ms=100) is None
    engine = make_engine(url)
    try:
        await ensure_schema(engine)
        slow = await control.request(engine, ControlCommand.KILL, "slow", source="cli")
        fast = request_fast(url, "kill", "fast", source="cli", flatten=False, busy_timeout_ms=100)
        events = await control.pending(engine)
    finally:
        await engine.dispose()
    assert fast == slow + 1
    assert [(e.reason, e.flatten) for e in events] == [("slow", True), ("fast", False)]
    assert events[1].created_at.tzinfo is UTC
    assert abs(events[1].created_at - events[0].created_at).total_seconds() < 60
    for other in ("sqlite+aiosqlite:///:memory:", "postgresql+asyncpg://localhost/x"):
        assert (
            request_fast(other, "kill", "x", source="cli", flatten=True, busy_timeout_ms=1) is None
        )

"""The kill switch's fast path: one `control_events` row into a SQLite file with `sqlite3`.

`trader kill` is an emergency tool, and importing SQLAlchemy and Alembic is most of its start-up
time. For a SQLite file whose schema is already in place this writes the same row with the
standard library in a few milliseconds; anything else (PostgreSQL, an in-memory or missing
database, a missing table or column) returns None and the caller takes the normal path through
`trader.persistence.control.request`. It must not import SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

_PREFIX = "sqlite+aiosqlite:///"


def request_fast(
    url: str, command: str, reason: str, *, source: str, flatten: bool, busy_timeout_ms: int
) -> int | None:
    """Insert the command and return its id, or None when this path does not apply."""
    if not url.startswith(_PREFIX) or url.endswith(":memory:") or "?" in url:
        return None
    path = Path(url.removeprefix(_PREFIX))
    if not path.is_file():
        return None
    try:
        with sqlite3.connect(path, timeout=busy_timeout_ms / 1_000) as conn:
            cursor = conn.execute(
                "INSERT INTO control_events (created_at, command, reason, source, flatten, "
                "applied_at) VALUES (?, ?, ?, ?, ?, NULL)",
                # The same text form SQLAlchemy's SQLite dialect stores for a naive UTC datetime.
                (
                    datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds"),
                    command,
                    reason,
                    source,
                    int(flatten),
                ),
            )
            return cursor.lastrowid
    except sqlite3.OperationalError:
        return None

"""Dump a run's tables from a SQLite file, for comparing two runs row by row."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

#: Tables compared row by row: (ORDER BY, the one column that legitimately differs or "").
TABLES: dict[str, tuple[str, str]] = {
    "bars": ("symbol, interval, start_ms", ""),
    "decisions": ("id", "latency_us"),
    "orders": ("id", ""),
    "fills": ("order_id, seq", "id"),
    "positions": ("run_id, symbol", ""),
    "equity": ("ts_ms", "id"),
    "rewards": ("decision_id", ""),
    "risk_events": ("ts_ms, kind, symbol", "id"),
}


def dump_tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the run tables in a stable order, minus autoincrement ids and latency."""
    with sqlite3.connect(db) as conn:
        out = {}
        for table, (order_by, skip) in TABLES.items():
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            keep = ", ".join(c for c in columns if c != skip)
            # Names come from the TABLES constant above, never from input.
            query = f"SELECT {keep} FROM {table} ORDER BY {order_by}"  # noqa: S608
            out[table] = conn.execute(query).fetchall()
        return out

"""Compiled statements: how a `WriteBatch` becomes the SQL of one transaction.

Owns the `INSERT .. ON CONFLICT` statements (compiled once per table and column set for a
dialect), row encoding into positional tuples, SQLite's multi-row chunking, the foreign-key write
order, and running one compiled batch on a synchronous connection. Both the writer task and the
SQLite writer process use it. It must not own connections, tasks or retry policy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from operator import itemgetter
from typing import Any, Final

from sqlalchemy import Boolean, Float, Table
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.expression import Executable

from trader.persistence.batch import Row, RunStateSnapshot, WriteBatch
from trader.persistence.database import insert_for
from trader.persistence.models import Base, detail_sha256

#: Batch fields in the order they are written: parents before the rows that reference them.
WRITE_ORDER: Final = (
    "bars",
    "decisions",
    "orders",
    "fills",
    "positions",
    "equity",
    "rewards",
    "risk_events",
)
#: Columns a later row for the same key overwrites; every other table is insert-if-absent.
_UPSERT_KEYS: Final = {"orders": ("id",), "positions": ("run_id", "symbol")}
_ORDER_UPDATES: Final = ("status", "reject_reason")


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


#: SQLite binds at most 32,766 variables per statement (3.32+); chunks stay well below that.
_SQLITE_MAX_VARIABLES: Final = 30_000
#: Rows per multi-row INSERT. Fixed, so each table's statement is compiled once and then found
#: in sqlite3's statement cache: SQLite compiles VALUES rows into code row by row, so a statement
#: sized to each batch (thousands of rows, a new size every time) spent as long in compilation
#: as in inserting. With 128-row statements a replay's writes took less than half the CPU
#: (about 6 instead of 13 us per bar of four rows; measured standalone on the real schema).
SQLITE_ROWS_PER_STATEMENT: Final = 128


@dataclass(frozen=True, slots=True)
class _Statement:
    table: str
    sql: str
    columns: tuple[str, ...]
    converters: tuple[Callable[[Any], Any] | None, ...]

    def multi_row_sql(self, rows: int) -> str:
        """The same statement with `rows` VALUES groups (qmark placeholders only).

        SQLite's executemany releases and re-takes the GIL around every row, which makes the
        writer thread and the engine's loop fight over the GIL; one statement per chunk of rows
        releases it once for the whole chunk.
        """
        return _multi_row_sql(self.sql, rows)

    def encode(self, rows: Sequence[Row], *, convert: bool = True) -> list[tuple[Any, ...]]:
        """Rows as positional tuples; money columns become float (Decimal is accepted).

        Args:
            rows: dicts with exactly this statement's columns.
            convert: apply the per-column converters. SQLite needs none (sqlite3 adapts
                Decimal itself, see `_sqlite_thread`), so its rows take one C-level
                `itemgetter` call each, which matters at tens of thousands of rows per second.
        """
        if set(map(len, rows)) != {len(self.columns)}:
            raise ValueError(f"the {self.table} rows of one batch differ in their column names")
        if not convert:
            return list(map(itemgetter(*self.columns), rows))
        values: list[Any] = []
        for column, converter in zip(self.columns, self.converters, strict=True):
            cells = map(itemgetter(column), rows)
            values.append(list(cells if converter is None else map(converter, cells)))
        return list(zip(*values, strict=True))


class Statements:
    """Compiles and caches one `INSERT .. ON CONFLICT` per table and column set for a dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._cache: dict[tuple[str, tuple[str, ...]], _Statement] = {}
        self._tables = Base.metadata.tables

    def for_rows(self, table_name: str, rows: Sequence[Row]) -> _Statement:
        columns = tuple(rows[0])
        key = (table_name, columns)
        statement = self._cache.get(key)
        if statement is None:
            statement = self._compile(self._tables[table_name], columns)
            self._cache[key] = statement
        return statement

    def snapshot(self) -> Executable:
        table = self._tables["run_state"]
        stmt = insert_for(self._dialect.name, table)
        return stmt.on_conflict_do_update(
            index_elements=[table.c.run_id],
            set_={
                name: stmt.excluded[name] for name in ("last_slice_start_ms", "state", "updated_at")
            },
        )

    def _compile(self, table: Table, columns: tuple[str, ...]) -> _Statement:
        stmt = insert_for(self._dialect.name, table)
        keys = _UPSERT_KEYS.get(table.name)
        if keys is None:
            stmt = stmt.on_conflict_do_nothing()
        else:
            updated = _ORDER_UPDATES if table.name == "orders" else columns
            stmt = stmt.on_conflict_do_update(
                index_elements=[table.c[name] for name in keys],
                set_={
                    name: stmt.excluded[name]
                    for name in updated
                    if name in columns and name not in keys
                },
            )
        compiled = stmt.compile(dialect=self._dialect, column_keys=list(columns))
        # The positional order the driver expects; it only holds the rows' own columns because
        # the tables written here have no Python-side defaults (see models).
        order = tuple(compiled.positiontup or ())
        if sorted(order) != sorted(columns):
            raise ValueError(f"cannot bind {table.name} rows with columns {columns}")
        converters = tuple(_converter(table, name) for name in order)
        return _Statement(
            table=table.name, sql=compiled.string, columns=order, converters=converters
        )


@functools.lru_cache(maxsize=256)
def _multi_row_sql(sql: str, rows: int) -> str:
    """`sql` with its VALUES group repeated `rows` times (cached: the full-chunk text of each
    table is asked for on every batch)."""
    head, values, tail = _split_values(sql)
    return head + ", ".join([values] * rows) + tail


def _split_values(sql: str) -> tuple[str, str, str]:
    """Split `INSERT .. VALUES (?, ..) ON CONFLICT ..` around its one placeholder group."""
    start = sql.index(" VALUES (") + len(" VALUES ")
    end = sql.index(")", start) + 1
    return sql[:start], sql[start:end], sql[end:]


def _chunked_inserts(statement: _Statement, params: list[tuple[Any, ...]]) -> list[tuple[str, Any]]:
    """SQLite: fixed-size multi-row statements over flattened parameters, one execute per chunk.

    Every chunk but the last has `SQLITE_ROWS_PER_STATEMENT` rows (fewer for very wide tables),
    so they share one compiled statement; the last one is smaller and cheap to compile.
    """
    per_statement = min(SQLITE_ROWS_PER_STATEMENT, _SQLITE_MAX_VARIABLES // len(statement.columns))
    out: list[tuple[str, Any]] = []
    for begin in range(0, len(params), per_statement):
        chunk = params[begin : begin + per_statement]
        out.append((statement.multi_row_sql(len(chunk)), tuple(chain.from_iterable(chunk))))
    return out


def _converter(table: Table, name: str) -> Callable[[Any], Any] | None:
    column = table.c[name]
    if isinstance(column.type, Float):
        return _optional_float if column.nullable else float
    if isinstance(column.type, Boolean):
        # asyncpg binds only real bools; numpy bools and 0/1 ints are normalised here.
        return bool
    return None


@dataclass(frozen=True, slots=True)
class Work:
    """A batch compiled for one dialect: what one transaction executes."""

    # (sql, params): a list of row tuples for executemany, or one flat tuple for a chunk.
    inserts: list[tuple[str, Any]]
    snapshot: dict[str, Any] | None
    rows: int


def compile_batch(statements: Statements, batch: WriteBatch, *, multi_row: bool) -> Work:
    """The batch as (sql, params) pairs in FK order plus its snapshot parameters.

    Args:
        statements: the dialect's statement cache.
        batch: the rows and snapshot of one transaction.
        multi_row: SQLite: chunked multi-row VALUES over unconverted tuples.
    """
    inserts = []
    for name in WRITE_ORDER:
        rows: list[Row] = getattr(batch, name)
        if name == "orders":
            rows = [_with_order_ids(row) for row in rows]
        elif name == "risk_events":
            rows = [_with_detail_digest(row) for row in rows]
        if rows:
            statement = statements.for_rows(name, rows)
            params = statement.encode(rows, convert=not multi_row)
            if multi_row:
                inserts.extend(_chunked_inserts(statement, params))
            else:
                inserts.append((statement.sql, params))
    return Work(inserts=inserts, snapshot=_snapshot_params(batch.snapshot), rows=batch.row_count())


def write_sync(conn: Connection, work: Work, snapshot_stmt: Executable) -> None:
    """Execute one compiled batch on a synchronous connection (inside its transaction)."""
    for sql, params in work.inserts:
        conn.exec_driver_sql(sql, params)
    if work.snapshot is not None:
        conn.execute(snapshot_stmt, work.snapshot)


def _with_order_ids(row: Row) -> Row:
    """`orders.id` and `client_order_id` hold the same value; either one may be given."""
    if "id" in row and "client_order_id" in row:
        return row
    order_id = row.get("id", row.get("client_order_id"))
    return {**row, "id": order_id, "client_order_id": order_id}


def _with_detail_digest(row: Row) -> Row:
    """`risk_events.detail_sha256`, part of the natural key, is derived here from `detail`.

    A missing detail is left for the database's NOT NULL check to reject with the batch.
    """
    detail = row.get("detail")
    return {**row, "detail_sha256": None if detail is None else detail_sha256(detail)}


def _snapshot_params(snapshot: RunStateSnapshot | None) -> dict[str, Any] | None:
    if snapshot is None:
        return None
    return {
        "run_id": snapshot.run_id,
        "last_slice_start_ms": snapshot.last_slice_start_ms,
        "state": snapshot.state,
        "updated_at": datetime.now(UTC),
    }

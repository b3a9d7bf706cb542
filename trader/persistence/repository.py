"""The queries the engine, replay and CLI run outside the batching writer.

Owns run bookkeeping (create, end, latest), resuming (`load_run_state`), and the reads behind
`trader status` and `trader report`, each returning small frozen records. Every function takes
the database handle explicitly: an `AsyncEngine` (the function opens and closes its own short
transaction) or an `AsyncConnection` (the caller's transaction is used and not committed). It
must not write the per-bar tables (only `BatchWriter` does) or compute trading metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trader.domain import Bar, BarSource
from trader.persistence.batch import RunStateSnapshot
from trader.persistence.database import insert_for
from trader.persistence.models import (
    BarRow,
    Base,
    DecisionRow,
    EquityRow,
    FillRow,
    PositionRow,
    RewardRow,
    Run,
    RunState,
    detail_sha256,
)

Bind = AsyncEngine | AsyncConnection


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A `runs` row; datetimes are tz-aware UTC."""

    id: str
    mode: str
    started_at: datetime
    ended_at: datetime | None
    config: dict[str, Any]
    strategy: str
    interval: str
    symbols: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EquityRecord:
    """An `equity` row: the account marked at `ts_ms`."""

    ts_ms: int
    equity: float
    cash: float
    unrealized_pnl: float
    drawdown: float
    peak_equity: float
    gross_exposure_usdt: float


@dataclass(frozen=True, slots=True)
class FillRecord:
    """A `fills` row; `qty` is positive, `side` is `buy` or `sell`."""

    id: int
    order_id: str
    seq: int
    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    ts_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A `decisions` row."""

    id: str
    symbol: str
    bar_start_ms: int
    action: str
    size: float
    confidence: float
    stop_loss: float | None
    take_profit: float | None
    strategic: bool
    act_steps: int
    decision_type: str
    model_version: str
    latency_us: int


@dataclass(frozen=True, slots=True)
class PositionRecord:
    """A `positions` row; `qty` is signed (> 0 long, < 0 short)."""

    symbol: str
    qty: float
    avg_price: float
    realized_pnl: float
    fees: float
    updated_ms: int


@dataclass(frozen=True, slots=True)
class RewardRecord:
    """A `rewards` row: the raw (USDT) and HICRA-shaped reward of one decision."""

    decision_id: str
    symbol: str
    bar_start_ms: int
    raw_reward: float
    raw_return: float
    shaped_reward: float
    decision_type: str
    weight: float


@asynccontextmanager
async def _connect(bind: Bind, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
    if isinstance(bind, AsyncConnection):
        yield bind
    elif write:
        async with bind.begin() as conn:
            yield conn
    else:
        async with bind.connect() as conn:
            yield conn


def _to_utc(value: datetime) -> datetime:
    """UTC for storage; SQLite keeps no offset, so a naive or non-UTC value would be misread."""
    if value.tzinfo is None:
        raise ValueError(f"datetime {value.isoformat()} must be timezone-aware (UTC)")
    return value.astimezone(UTC)


def _from_db(value: datetime) -> datetime:
    """SQLite returns naive datetimes; they were stored as UTC by `_to_utc`."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def create_run(
    bind: Bind,
    *,
    run_id: str,
    mode: str,
    config: dict[str, Any],
    strategy: str,
    interval: str,
    symbols: list[str] | tuple[str, ...],
    started_at: datetime,
) -> None:
    """Record a run unless one with this id exists (a resumed run keeps its first row).

    Args:
        config: the settings with secrets already removed.
        started_at: tz-aware start time.
    """
    async with _connect(bind, write=True) as conn:
        stmt = insert_for(conn.dialect.name, Base.metadata.tables["runs"]).values(
            id=run_id,
            mode=mode,
            started_at=_to_utc(started_at),
            ended_at=None,
            config=config,
            strategy=strategy,
            interval=interval,
            symbols=list(symbols),
        )
        await conn.execute(stmt.on_conflict_do_nothing())


async def get_run(bind: Bind, run_id: str) -> RunRecord | None:
    """The run named `run_id`, or None."""
    async with _connect(bind) as conn:
        row = (await conn.execute(select(Run.__table__).where(Run.id == run_id))).first()
    if row is None:
        return None
    return RunRecord(
        id=row.id,
        mode=row.mode,
        started_at=_from_db(row.started_at),
        ended_at=_from_db(row.ended_at) if row.ended_at is not None else None,
        config=row.config,
        strategy=row.strategy,
        interval=row.interval,
        symbols=tuple(row.symbols),
    )


async def end_run(
    bind: Bind, run_id: str, ended_at: datetime, *, symbols: Sequence[str] | None = None
) -> None:
    """Mark a run finished at `ended_at` (tz-aware), optionally recording every symbol it saw.

    A run is created at its first slice, which may not hold every symbol (a series that starts
    later); the final list makes the report cover them all.
    """
    values: dict[str, Any] = {"ended_at": _to_utc(ended_at)}
    if symbols is not None:
        values["symbols"] = list(symbols)
    async with _connect(bind, write=True) as conn:
        await conn.execute(update(Run).where(Run.id == run_id).values(**values))


async def latest_run_id(bind: Bind, *, mode: str | None = None) -> str | None:
    """The id of the most recently started run (of `mode`, when given), or None."""
    stmt = select(Run.id).order_by(Run.started_at.desc(), Run.id.desc()).limit(1)
    if mode is not None:
        stmt = stmt.where(Run.mode == mode)
    async with _connect(bind) as conn:
        return (await conn.execute(stmt)).scalar_one_or_none()


async def load_run_state(bind: Bind, run_id: str) -> RunStateSnapshot | None:
    """The snapshot committed with the run's last batch, or None for a run not yet written."""
    stmt = select(RunState.last_slice_start_ms, RunState.state).where(RunState.run_id == run_id)
    async with _connect(bind) as conn:
        row = (await conn.execute(stmt)).first()
    if row is None:
        return None
    return RunStateSnapshot(run_id=run_id, last_slice_start_ms=row[0], state=row[1])


#: The `EquityRecord` fields, in order.
_EQUITY_COLUMNS = (
    EquityRow.ts_ms,
    EquityRow.equity,
    EquityRow.cash,
    EquityRow.unrealized_pnl,
    EquityRow.drawdown,
    EquityRow.peak_equity,
    EquityRow.gross_exposure_usdt,
)


async def fetch_equity(bind: Bind, run_id: str) -> list[EquityRecord]:
    """The run's equity curve, oldest first."""
    stmt = select(*_EQUITY_COLUMNS).where(EquityRow.run_id == run_id).order_by(EquityRow.ts_ms)
    async with _connect(bind) as conn:
        return [EquityRecord(**row._asdict()) for row in await conn.execute(stmt)]


async def latest_equity(bind: Bind, run_id: str) -> EquityRecord | None:
    """The run's newest equity row (one indexed row, not the curve), or None before its first."""
    stmt = (
        select(*_EQUITY_COLUMNS)
        .where(EquityRow.run_id == run_id)
        .order_by(EquityRow.ts_ms.desc())
        .limit(1)
    )
    async with _connect(bind) as conn:
        row = (await conn.execute(stmt)).first()
    return EquityRecord(**row._asdict()) if row is not None else None


async def fetch_fills(bind: Bind, run_id: str) -> list[FillRecord]:
    """The run's fills in execution order (`ts_ms`, then insertion)."""
    stmt = (
        select(
            FillRow.id,
            FillRow.order_id,
            FillRow.seq,
            FillRow.symbol,
            FillRow.side,
            FillRow.qty,
            FillRow.price,
            FillRow.fee,
            FillRow.ts_ms,
            FillRow.reason,
        )
        .where(FillRow.run_id == run_id)
        .order_by(FillRow.ts_ms, FillRow.id)
    )
    async with _connect(bind) as conn:
        return [FillRecord(**row._asdict()) for row in await conn.execute(stmt)]


async def fetch_decisions(bind: Bind, run_id: str) -> list[DecisionRecord]:
    """The run's decisions ordered by bar, then symbol."""
    d = DecisionRow
    stmt = (
        select(
            d.id,
            d.symbol,
            d.bar_start_ms,
            d.action,
            d.size,
            d.confidence,
            d.stop_loss,
            d.take_profit,
            d.strategic,
            d.act_steps,
            d.decision_type,
            d.model_version,
            d.latency_us,
        )
        .where(d.run_id == run_id)
        .order_by(d.bar_start_ms, d.symbol)
    )
    async with _connect(bind) as conn:
        return [DecisionRecord(**row._asdict()) for row in await conn.execute(stmt)]


async def count_decisions(
    bind: Bind, run_id: str, *, since_bar_ms: int | None = None
) -> dict[str, int]:
    """How many decisions the run made, by action (actions never taken are absent); with
    `since_bar_ms`, only those on bars starting at or after it."""
    stmt = select(DecisionRow.action, func.count()).where(DecisionRow.run_id == run_id)
    if since_bar_ms is not None:
        stmt = stmt.where(DecisionRow.bar_start_ms >= since_bar_ms)
    stmt = stmt.group_by(DecisionRow.action).order_by(DecisionRow.action)
    async with _connect(bind) as conn:
        return {action: count for action, count in await conn.execute(stmt)}


async def fetch_positions(bind: Bind, run_id: str) -> list[PositionRecord]:
    """The run's positions by symbol (flat ones included once they have traded)."""
    p = PositionRow
    stmt = (
        select(p.symbol, p.qty, p.avg_price, p.realized_pnl, p.fees, p.updated_ms)
        .where(p.run_id == run_id)
        .order_by(p.symbol)
    )
    async with _connect(bind) as conn:
        return [PositionRecord(**row._asdict()) for row in await conn.execute(stmt)]


async def fetch_bars(bind: Bind, symbol: str, interval: str, from_ms: int, to_ms: int) -> list[Bar]:
    """Stored bars with `from_ms <= start_ms < to_ms`, oldest first."""
    b = BarRow
    stmt = (
        select(b.start_ms, b.open, b.high, b.low, b.close, b.volume, b.turnover, b.source)
        .where(b.symbol == symbol, b.interval == interval)
        .where(b.start_ms >= from_ms, b.start_ms < to_ms)
        .order_by(b.start_ms)
    )
    async with _connect(bind) as conn:
        rows = await conn.execute(stmt)
        return [
            Bar(symbol, interval, start, o, h, low, c, v, t, BarSource(source))
            for start, o, h, low, c, v, t, source in rows
        ]


async def fetch_rewards(bind: Bind, run_id: str) -> list[RewardRecord]:
    """The run's rewards ordered by bar, then symbol."""
    r = RewardRow
    stmt = (
        select(
            r.decision_id,
            r.symbol,
            r.bar_start_ms,
            r.raw_reward,
            r.raw_return,
            r.shaped_reward,
            r.decision_type,
            r.weight,
        )
        .where(r.run_id == run_id)
        .order_by(r.bar_start_ms, r.symbol)
    )
    async with _connect(bind) as conn:
        return [RewardRecord(**row._asdict()) for row in await conn.execute(stmt)]


async def last_bar_starts(bind: Bind, run_id: str) -> dict[str, int]:
    """The start of the last bar the run processed, per symbol (from its decisions)."""
    stmt = (
        select(DecisionRow.symbol, func.max(DecisionRow.bar_start_ms))
        .where(DecisionRow.run_id == run_id)
        .group_by(DecisionRow.symbol)
    )
    async with _connect(bind) as conn:
        return {symbol: start for symbol, start in await conn.execute(stmt)}


async def fetch_run_bars(bind: Bind, run_id: str, interval: str, through_ms: int) -> list[Bar]:
    """The stored bars a run processed (those with its decisions), start <= `through_ms`.

    Ordered by start, then symbol: the slices in the order the engine saw them, which is what
    a restarted daemon re-feeds to its features.
    """
    b, d = BarRow, DecisionRow
    stmt = (
        select(b.symbol, b.start_ms, b.open, b.high, b.low, b.close, b.volume, b.turnover, b.source)
        .join(d, (d.symbol == b.symbol) & (d.bar_start_ms == b.start_ms))
        .where(d.run_id == run_id, b.interval == interval, b.start_ms <= through_ms)
        .order_by(b.start_ms, b.symbol)
    )
    async with _connect(bind) as conn:
        rows = await conn.execute(stmt)
        return [
            Bar(symbol, interval, start, o, h, low, c, v, t, BarSource(source))
            for symbol, start, o, h, low, c, v, t, source in rows
        ]


async def latest_model_version(bind: Bind, run_id: str) -> str | None:
    """The model version of the run's newest decision, or None before its first."""
    d = DecisionRow
    stmt = (
        select(d.model_version).where(d.run_id == run_id).order_by(d.bar_start_ms.desc()).limit(1)
    )
    async with _connect(bind) as conn:
        return (await conn.execute(stmt)).scalar_one_or_none()


async def insert_risk_event(
    bind: Bind, *, run_id: str, ts_ms: int, kind: str, symbol: str, detail: str
) -> None:
    """Store one risk event outside the engine's batches (a rejected control command)."""
    async with _connect(bind, write=True) as conn:
        stmt = insert_for(conn.dialect.name, Base.metadata.tables["risk_events"]).values(
            run_id=run_id,
            ts_ms=ts_ms,
            kind=kind,
            symbol=symbol,
            detail=detail,
            detail_sha256=detail_sha256(detail),
        )
        await conn.execute(stmt.on_conflict_do_nothing())

"""The batching writer against real SQLite and PostgreSQL: atomicity, idempotence, failure, flow."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import structlog
from sqlalchemy import event, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.runs import add_run
from trader.errors import FatalError
from trader.persistence import repository
from trader.persistence._statements import WRITE_ORDER
from trader.persistence.batch import Row, RunStateSnapshot, WriteBatch
from trader.persistence.database import make_engine
from trader.persistence.migrate import upgrade
from trader.persistence.models import Base
from trader.persistence.writer import BatchWriter

RUN = "run-1"
STEP_MS = 300_000
T0_MS = 1_700_000_000_000
COUNTED = (*WRITE_ORDER, "run_state")


@pytest.fixture(autouse=True)
def _captured_logs() -> Iterator[None]:
    """Keep the writer's error tracebacks out of the console renderer, which is slow."""
    with structlog.testing.capture_logs():
        yield


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database holding the run `RUN`."""
    engine = make_engine(db_url)
    await upgrade(engine)
    await repository.create_run(
        engine,
        run_id=RUN,
        mode="replay",
        config={"settings": {}},
        strategy="ema_cross",
        interval="5",
        symbols=["BTCUSDT"],
        started_at=datetime(2024, 1, 1, tzinfo=UTC),
    )
    yield engine
    await engine.dispose()


@pytest.fixture
async def lockable(db_url: str, engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """A second engine on the same database whose SQLite statements give up on a lock quickly."""
    other = make_engine(db_url, busy_timeout_ms=20)
    yield other
    await other.dispose()


def _writer(engine: AsyncEngine, **overrides: Any) -> BatchWriter:
    options: dict[str, Any] = {
        "queue_max_batches": 4,
        "retry_attempts": 3,
        "retry_backoff_s": 0.001,
        "enqueue_timeout_s": 10.0,
        "drain_timeout_s": 10.0,
    }
    return BatchWriter(engine, **(options | overrides))


def _bars(first: int, count: int, *, snapshot: bool = True) -> WriteBatch:
    """The engine's per-bar mix: one bar, decision, reward and equity row per bar."""
    batch = WriteBatch()
    for index in range(first, first + count):
        start_ms = T0_MS + index * STEP_MS
        decision_id = f"{RUN}:BTCUSDT:{start_ms}"
        batch.bars.append(
            {"symbol": "BTCUSDT", "interval": "5", "start_ms": start_ms, "open": 100.0}
            | {"high": 101.0, "low": 99.0, "close": 100.5, "volume": 3.0, "turnover": 301.5}
            | {"source": "replay"}
        )
        batch.decisions.append(_decision(decision_id, start_ms))
        batch.rewards.append(
            {"decision_id": decision_id, "run_id": RUN, "symbol": "BTCUSDT"}
            | {"bar_start_ms": start_ms, "raw_reward": 1.5, "raw_return": 0.001}
            | {"shaped_reward": 0.75, "decision_type": "procedural", "weight": 0.5}
        )
        batch.equity.append(
            {"run_id": RUN, "ts_ms": start_ms + STEP_MS, "equity": 10_000.0, "cash": 9_000.0}
            | {"unrealized_pnl": 0.0, "drawdown": 0.0, "peak_equity": 10_000.0}
        )
    if snapshot:
        last = T0_MS + (first + count - 1) * STEP_MS
        batch.snapshot = RunStateSnapshot(RUN, last, {"slices": first + count})
    return batch


def _decision(decision_id: str, start_ms: int) -> Row:
    return {
        "id": decision_id,
        "run_id": RUN,
        "symbol": "BTCUSDT",
        "bar_start_ms": start_ms,
        "action": "HOLD",
        "size": 0.0,
        "confidence": 0.4,
        "stop_loss": None,
        "take_profit": None,
        "strategic": False,
        "act_steps": 2,
        "decision_type": "procedural",
        "model_version": "test",
        "latency_us": 150,
    }


def _order(order_id: str, status: str, reason: str | None = None) -> Row:
    return {
        "id": order_id,
        "client_order_id": order_id,
        "run_id": RUN,
        "decision_id": f"{RUN}:BTCUSDT:{T0_MS}",
        "symbol": "BTCUSDT",
        "side": "buy",
        "qty": 0.01,
        "status": status,
        "reject_reason": reason,
        "leg": "entry",
        "reduce_only": False,
        "created_ms": T0_MS,
        "stop_loss": 95.0,
        "take_profit": None,
    }


def _fill(order_id: str, seq: int) -> Row:
    return {
        "run_id": RUN,
        "order_id": order_id,
        "seq": seq,
        "symbol": "BTCUSDT",
        "side": "buy",
        "qty": 0.01,
        "price": 100.6,
        "fee": 0.00055,
        "ts_ms": T0_MS + STEP_MS,
        "reason": "market",
    }


def _position(qty: float | Decimal) -> Row:
    return {"run_id": RUN, "symbol": "BTCUSDT", "qty": qty, "avg_price": Decimal("100.6")} | {
        "realized_pnl": 0.0,
        "fees": Decimal("0.00055"),
        "updated_ms": T0_MS,
    }


def _trade_batch() -> WriteBatch:
    """A decision, its order, the order's fill and reward, all new in one batch."""
    batch = _bars(0, 1)
    batch.orders = [_order("order-1", "submitted"), _order("order-1", "filled")]
    batch.fills = [_fill("order-1", 0)]
    batch.positions = [_position(0.01)]
    batch.risk_events = [{"run_id": RUN, "ts_ms": T0_MS, "kind": "denied", "symbol": ""}]
    batch.risk_events[0]["detail"] = "max_orders_per_minute"
    return batch


async def _counts(engine: AsyncEngine) -> dict[str, int]:
    tables = Base.metadata.tables
    async with engine.connect() as conn:
        return {
            name: (await conn.execute(select(func.count()).select_from(tables[name]))).scalar_one()
            for name in COUNTED
        }


@asynccontextmanager
async def _write_locked(url: str) -> AsyncIterator[None]:
    """Hold the database's write lock (SQLite) or the `bars` table lock (PostgreSQL)."""
    if url.startswith("sqlite"):
        blocker = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        return
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE bars IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


async def _write_through(writer: BatchWriter, *batches: WriteBatch, flush: bool = True) -> None:
    """Enter the writer, submit the batches, optionally flush, and exit."""
    async with writer:
        for batch in batches:
            await writer.submit(batch)
        if flush:
            await writer.flush()


async def test_flush_commits_every_table_when_batch_holds_them_all(engine: AsyncEngine) -> None:
    """One batch with rows for every table and a snapshot lands completely."""
    async with _writer(engine) as writer:
        await writer.submit(_trade_batch())
        await writer.flush()
        committed = writer.committed_batches
    counts = await _counts(engine)
    assert committed == 1
    assert counts == {name: 1 for name in COUNTED}


async def test_row_counts_stay_equal_when_the_same_batch_is_submitted_twice(
    engine: AsyncEngine,
) -> None:
    """Insert-if-absent on natural keys makes a replayed batch a no-op."""
    async with _writer(engine) as writer:
        await writer.submit(_trade_batch())
        await writer.flush()
        first = await _counts(engine)
        await writer.submit(_trade_batch())
        await writer.flush()
    assert await _counts(engine) == first


def _risk_event(kind: str, detail: str) -> Row:
    return {"run_id": RUN, "ts_ms": T0_MS, "kind": kind, "symbol": "", "detail": detail}


async def test_every_risk_event_is_kept_when_events_share_instant_kind_and_symbol(
    engine: AsyncEngine,
) -> None:
    """Events told apart only by their detail (kill, resume and kill again in one control poll,
    a reason too long for PostgreSQL to index) are all stored, and writing them again adds none."""
    long_reason = "".join(hashlib.sha256(bytes([i])).hexdigest() for i in range(100))
    events = [
        _risk_event("halted", "kill: first kill"),
        _risk_event("active", "resume: oops"),
        _risk_event("halted", "kill: second kill"),
        _risk_event("halted", f"kill: {long_reason}"),
    ]
    async with _writer(engine) as writer:
        await writer.submit(WriteBatch(risk_events=[dict(row) for row in events]))
        await writer.submit(WriteBatch(risk_events=[dict(row) for row in events]))
        await writer.flush()
    table = Base.metadata.tables["risk_events"]
    async with engine.connect() as conn:
        stored = await conn.execute(
            select(table.c.kind, table.c.detail, table.c.detail_sha256).order_by(table.c.id)
        )
        rows = stored.all()
    assert [(kind, detail) for kind, detail, _ in rows] == [
        (row["kind"], row["detail"]) for row in events
    ]
    assert [digest for _, _, digest in rows] == [
        hashlib.sha256(row["detail"].encode()).hexdigest() for row in events
    ]


async def test_order_status_is_updated_when_a_later_row_has_the_same_id(
    engine: AsyncEngine,
) -> None:
    """Orders are upserts: the last row for an id sets status and reject_reason."""
    orders = Base.metadata.tables["orders"]
    first = _bars(0, 1)
    first.orders = [_order("order-1", "submitted")]
    second = WriteBatch(orders=[_order("order-1", "rejected", "max_position_notional")])
    async with _writer(engine) as writer:
        await writer.submit(first)
        await writer.submit(second)
    async with engine.connect() as conn:
        rows = (await conn.execute(select(orders.c.status, orders.c.reject_reason))).all()
    assert [tuple(row) for row in rows] == [("rejected", "max_position_notional")]


async def test_position_is_replaced_when_a_later_row_has_the_same_symbol(
    engine: AsyncEngine,
) -> None:
    """Positions are upserts keyed by (run_id, symbol)."""
    async with _writer(engine) as writer:
        await writer.submit(WriteBatch(positions=[_position(0.01)]))
        await writer.submit(WriteBatch(positions=[_position(-0.02)]))
    positions = await repository.fetch_positions(engine, RUN)
    assert [(p.symbol, p.qty) for p in positions] == [("BTCUSDT", -0.02)]


async def test_money_columns_are_stored_as_float_when_rows_carry_decimals(
    engine: AsyncEngine,
) -> None:
    """Decimal quantities from the portfolio are accepted and stored as double precision."""
    async with _writer(engine) as writer:
        await writer.submit(WriteBatch(positions=[_position(Decimal("0.015"))]))
    (position,) = await repository.fetch_positions(engine, RUN)
    assert (position.qty, position.avg_price, position.fees) == (0.015, 100.6, 0.00055)


async def test_snapshot_is_replaced_when_a_later_batch_carries_one(engine: AsyncEngine) -> None:
    """run_state keeps one row per run: the snapshot of the last committed batch."""
    async with _writer(engine) as writer:
        await writer.submit(_bars(0, 3))
        await writer.submit(_bars(3, 2))
    snapshot = await repository.load_run_state(engine, RUN)
    assert snapshot == RunStateSnapshot(RUN, T0_MS + 4 * STEP_MS, {"slices": 5})
    assert (await _counts(engine))["run_state"] == 1


async def test_children_commit_when_their_parents_arrive_in_the_same_batch(
    engine: AsyncEngine,
) -> None:
    """Tables are written in foreign-key order, so a fill's order and decision may be new too."""
    async with _writer(engine) as writer:
        await writer.submit(_trade_batch())
    fills = await repository.fetch_fills(engine, RUN)
    assert [(f.order_id, f.seq) for f in fills] == [("order-1", 0)]


async def test_nothing_of_a_batch_is_committed_when_its_last_table_fails(
    engine: AsyncEngine,
) -> None:
    """A NOT NULL violation in the last table rolls back every earlier table and the snapshot."""
    batch = _trade_batch()
    batch.risk_events[0]["kind"] = None
    fatal: list[BaseException] = []
    writer = _writer(engine, on_fatal=fatal.append)
    with pytest.raises(FatalError, match="writer failed"):
        await _write_through(writer, batch)
    assert isinstance(writer.failed, sa_exc.IntegrityError)
    assert fatal == [writer.failed]
    assert await _counts(engine) == {name: 0 for name in COUNTED}


async def test_writer_fails_without_retrying_when_error_is_not_transient(
    engine: AsyncEngine,
) -> None:
    """An integrity error would fail again, so it is not retried."""
    batch = _bars(0, 1)
    batch.equity[0]["run_id"] = "no-such-run"
    writer = _writer(engine, retry_attempts=5)
    with pytest.raises(FatalError):
        await _write_through(writer, batch)
    assert writer.failed_attempts == 1


async def test_writer_fails_when_rows_of_one_table_have_different_columns(
    engine: AsyncEngine,
) -> None:
    """Rows of one table must share their columns; a mismatch is a bug and stops the writer."""
    batch = _bars(0, 2)
    del batch.decisions[1]["stop_loss"]
    writer = _writer(engine)
    with pytest.raises(FatalError):
        await _write_through(writer, batch)
    assert isinstance(writer.failed, ValueError)


async def test_writer_fails_after_retries_when_sqlite_stays_locked(sqlite_url: str) -> None:
    """A lock held past every retry makes the writer fail, call on_fatal and refuse more work."""
    engine = make_engine(sqlite_url, busy_timeout_ms=1)
    await upgrade(engine)
    await add_run(engine, RUN, mode="replay", strategy="noop")
    fatal: list[BaseException] = []
    try:
        async with _write_locked(sqlite_url):
            writer = _writer(engine, retry_attempts=3, on_fatal=fatal.append)
            with pytest.raises(FatalError, match="locked"):
                await _write_through(writer, _bars(0, 1))
            with pytest.raises(FatalError):
                await writer.submit(_bars(1, 1))
        assert writer.failed_attempts == 3
        assert fatal == [writer.failed]
        assert isinstance(writer.failed, sa_exc.OperationalError)
        assert (await _counts(engine))["bars"] == 0
    finally:
        await engine.dispose()


async def test_writer_fails_after_retries_when_server_refuses_connections() -> None:
    """Connection errors (a PostgreSQL server that is down) are retried, then fatal."""
    engine = make_engine("postgresql+asyncpg://postgres@127.0.0.1:1/trader")
    attempts: list[object] = []
    event.listen(engine.sync_engine, "do_connect", lambda *args: attempts.append(args))
    fatal: list[BaseException] = []
    try:
        writer = _writer(engine, retry_attempts=4, on_fatal=fatal.append)
        with pytest.raises(FatalError):
            await _write_through(writer, _bars(0, 1))
    finally:
        await engine.dispose()
    assert len(attempts) == 4
    assert isinstance(writer.failed, OSError)
    assert fatal == [writer.failed]


async def test_flush_returns_when_every_submitted_batch_is_committed(engine: AsyncEngine) -> None:
    """After flush, the batches submitted before it are visible to other connections."""
    async with _writer(engine, queue_max_batches=2) as writer:
        for index in range(6):
            await writer.submit(_bars(index * 10, 10))
        await writer.flush()
        counts = await _counts(engine)
        assert (writer.committed_batches, writer.pending_batches) == (6, 0)
        assert writer.committed_rows == 6 * 10 * 4
    assert counts["bars"] == counts["decisions"] == counts["equity"] == 60


async def test_submit_ignores_the_batch_when_it_is_empty(engine: AsyncEngine) -> None:
    """An empty batch (no rows, no snapshot) is not queued and commits nothing."""
    async with _writer(engine) as writer:
        await writer.submit(WriteBatch())
        await writer.flush()
        assert writer.committed_batches == 0


async def test_exit_commits_queued_batches_when_context_closes_without_flush(
    engine: AsyncEngine,
) -> None:
    """Leaving the context drains the queue before the task stops."""
    async with _writer(engine, queue_max_batches=8) as writer:
        for index in range(5):
            await writer.submit(_bars(index * 3, 3))
    assert writer.committed_batches == 5
    assert (await _counts(engine))["decisions"] == 15


async def test_exit_raises_fatal_error_when_drain_times_out(
    db_url: str, lockable: AsyncEngine
) -> None:
    """A queue that cannot drain in time is reported, not waited on forever."""
    writer = _writer(lockable, retry_attempts=10_000, drain_timeout_s=0.05)
    async with _write_locked(db_url):
        with pytest.raises(FatalError, match="did not drain"):
            async with writer:
                await writer.submit(_bars(0, 1))
    assert writer.pending_batches == 1
    assert (await _counts(lockable))["bars"] == 0


async def test_exit_reraises_cancellation_when_cancelled_while_draining(
    db_url: str, lockable: AsyncEngine
) -> None:
    """Cancelling the owner during the drain stops the writer task and propagates."""
    writer = _writer(lockable, retry_attempts=10_000)
    submitted = asyncio.Event()

    async def produce() -> None:
        async with writer:
            await writer.submit(_bars(0, 1))
            submitted.set()

    async with _write_locked(db_url):
        producer = asyncio.create_task(produce(), name="test.producer")
        # The producer next suspends in __aexit__'s drain, the only wait left.
        await submitted.wait()
        producer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await producer
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert "persistence.writer" not in names


async def test_submit_waits_when_queue_is_full(db_url: str, lockable: AsyncEngine) -> None:
    """With the writer stuck and the queue full, submit blocks until the writer catches up."""
    writer = _writer(lockable, queue_max_batches=1, retry_attempts=10_000)
    async with writer:
        async with _write_locked(db_url):
            await writer.submit(_bars(0, 1))
            await writer.submit(_bars(1, 1))
            blocked = asyncio.create_task(writer.submit(_bars(2, 1)), name="test.blocked")
            for _ in range(20):
                await asyncio.sleep(0)
            assert not blocked.done()
        await blocked
        await writer.flush()
    assert writer.committed_batches == 3


async def test_submit_raises_fatal_error_when_queue_stays_full_past_timeout(
    db_url: str, lockable: AsyncEngine
) -> None:
    """A producer that waits longer than enqueue_timeout_s halts instead of buffering."""
    fatal: list[BaseException] = []
    writer = _writer(
        lockable,
        queue_max_batches=1,
        retry_attempts=10_000,
        enqueue_timeout_s=0.2,
        on_fatal=fatal.append,
    )
    async with _write_locked(db_url):
        with pytest.raises(FatalError, match="fell behind"):
            await _write_through(writer, *(_bars(index, 1) for index in range(3)), flush=False)
    assert fatal == [writer.failed]
    with pytest.raises(FatalError):
        await writer.flush()


async def test_submit_raises_runtime_error_when_writer_is_not_entered(
    engine: AsyncEngine,
) -> None:
    """Batches cannot be queued without a running writer task."""
    with pytest.raises(RuntimeError, match="outside"):
        await _writer(engine).submit(_bars(0, 1))


async def test_enter_raises_runtime_error_when_writer_is_already_entered(
    engine: AsyncEngine,
) -> None:
    """The writer can be reused after exit but never entered twice at once."""
    writer = _writer(engine)
    async with writer:
        with pytest.raises(RuntimeError, match="re-entered"):
            await writer.__aenter__()
    async with writer:
        await writer.submit(_bars(0, 1))
    assert writer.committed_batches == 1


async def test_every_row_lands_in_order_when_a_batch_spans_several_statements(
    engine: AsyncEngine,
) -> None:
    """SQLite writes fixed-size multi-row statements plus a shorter last one: every row of a
    batch bigger than one statement lands once, and an order's later row (in a later
    statement) still wins its upsert."""
    from trader.persistence._statements import SQLITE_ROWS_PER_STATEMENT

    count = 2 * SQLITE_ROWS_PER_STATEMENT + 5
    batch = _bars(0, count)
    ids = [f"order-{index}" for index in range(SQLITE_ROWS_PER_STATEMENT + 2)]
    batch.orders = [_order(order_id, "submitted") for order_id in ids]
    batch.orders += [_order(order_id, "filled") for order_id in ids]
    tables = Base.metadata.tables
    async with _writer(engine) as writer:
        await writer.submit(batch)
        await writer.flush()
    async with engine.connect() as conn:
        starts = (await conn.execute(select(tables["bars"].c.start_ms))).scalars().all()
        statuses = (await conn.execute(select(tables["orders"].c.status))).scalars().all()
        decisions = await conn.execute(select(func.count()).select_from(tables["decisions"]))
    assert sorted(starts) == [T0_MS + index * STEP_MS for index in range(count)]
    assert decisions.scalar_one() == count
    assert sorted(statuses) == ["filled"] * len(ids)

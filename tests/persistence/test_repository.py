"""Run bookkeeping and the read queries, on rows written through the real writer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from trader.domain import Bar, BarSource
from trader.persistence import repository
from trader.persistence.batch import Row, RunStateSnapshot, WriteBatch
from trader.persistence.database import make_engine
from trader.persistence.migrate import upgrade
from trader.persistence.writer import BatchWriter

RUN = "replay-1"
STEP_MS = 300_000
T0_MS = 1_700_000_100_000
STARTED = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated, empty database."""
    engine = make_engine(db_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


async def _create(
    bind: repository.Bind,
    run_id: str = RUN,
    *,
    strategy: str = "ema_cross",
    started_at: datetime = STARTED,
) -> None:
    await repository.create_run(
        bind,
        run_id=run_id,
        mode="replay",
        config={"settings": {"broker": {"initial_equity": 10_000}}},
        strategy=strategy,
        interval="5",
        symbols=["BTCUSDT", "ETHUSDT"],
        started_at=started_at,
    )


async def _write(engine: AsyncEngine, *batches: WriteBatch) -> None:
    async with BatchWriter(
        engine,
        queue_max_batches=4,
        retry_attempts=1,
        retry_backoff_s=0.001,
        enqueue_timeout_s=10.0,
    ) as writer:
        for batch in batches:
            await writer.submit(batch)


def _decision(symbol: str, index: int, action: str) -> Row:
    start_ms = T0_MS + index * STEP_MS
    return {
        "id": f"{RUN}:{symbol}:{start_ms}",
        "run_id": RUN,
        "symbol": symbol,
        "bar_start_ms": start_ms,
        "action": action,
        "size": 0.5,
        "confidence": 0.8,
        "stop_loss": 90.0,
        "take_profit": None,
        "strategic": index % 2 == 0,
        "act_steps": 3,
        "decision_type": "tactical",
        "model_version": "v1",
        "latency_us": 200,
    }


def _bar(symbol: str, index: int) -> Row:
    return {
        "symbol": symbol,
        "interval": "5",
        "start_ms": T0_MS + index * STEP_MS,
        **dict(zip(("open", "high", "low", "close"), _prices(index), strict=True)),
        "volume": 5.0,
        "turnover": 505.0,
        "source": "ws",
    }


def _prices(index: int) -> tuple[float, float, float, float]:
    return 100.0 + index, 102.0 + index, 99.0 + index, 101.0 + index


def _equity(index: int) -> Row:
    return {
        "run_id": RUN,
        "ts_ms": T0_MS + index * STEP_MS,
        "equity": 10_000.0 + index,
        "cash": 10_000.0,
        "unrealized_pnl": float(index),
        "drawdown": 0.0,
        "peak_equity": 10_000.0 + index,
    }


def _fill(order_id: str, seq: int, ts_ms: int) -> Row:
    return {
        "run_id": RUN,
        "order_id": order_id,
        "seq": seq,
        "symbol": "BTCUSDT",
        "side": "sell",
        "qty": 0.5,
        "price": 101.0,
        "fee": 0.03,
        "ts_ms": ts_ms,
        "reason": "stop_loss",
    }


def _order(order_id: str) -> Row:
    return {
        "id": order_id,
        "client_order_id": order_id,
        "run_id": RUN,
        "decision_id": None,
        "symbol": "BTCUSDT",
        "side": "sell",
        "qty": 1.0,
        "status": "filled",
        "reject_reason": None,
        "leg": "stop_loss",
        "reduce_only": True,
        "created_ms": T0_MS,
        "stop_loss": None,
        "take_profit": None,
    }


async def test_create_run_keeps_the_first_row_when_run_id_exists(engine: AsyncEngine) -> None:
    """Creating a run twice (a resumed replay) leaves the original row untouched."""
    await _create(engine)
    await _create(engine, strategy="hrm", started_at=STARTED + timedelta(hours=1))
    run = await repository.get_run(engine, RUN)
    assert run == repository.RunRecord(
        id=RUN,
        mode="replay",
        started_at=STARTED,
        ended_at=None,
        config={"settings": {"broker": {"initial_equity": 10_000}}},
        strategy="ema_cross",
        interval="5",
        symbols=("BTCUSDT", "ETHUSDT"),
    )


async def test_get_run_returns_utc_when_started_at_had_another_offset(engine: AsyncEngine) -> None:
    """Datetimes are stored as UTC and come back tz-aware on both dialects."""
    tokyo = timezone(timedelta(hours=9))
    await _create(engine, started_at=datetime(2024, 3, 1, 21, 0, tzinfo=tokyo))
    run = await repository.get_run(engine, RUN)
    assert run is not None
    assert run.started_at.tzinfo is UTC
    assert run.started_at == STARTED


async def test_create_run_raises_when_started_at_is_naive(engine: AsyncEngine) -> None:
    """A naive datetime is refused rather than stored as an unknown local time."""
    with pytest.raises(ValueError, match="timezone-aware"):
        await _create(engine, started_at=datetime(2024, 3, 1, 12, 0))  # noqa: DTZ001


async def test_get_run_returns_none_when_run_is_unknown(engine: AsyncEngine) -> None:
    """An unknown run id is not an error."""
    assert await repository.get_run(engine, "missing") is None


async def test_end_run_sets_ended_at_when_run_exists(engine: AsyncEngine) -> None:
    """Ending a run records when it finished."""
    await _create(engine)
    await repository.end_run(engine, RUN, STARTED + timedelta(minutes=5))
    run = await repository.get_run(engine, RUN)
    assert run is not None
    assert run.ended_at == STARTED + timedelta(minutes=5)


async def test_latest_run_id_picks_the_latest_start_when_several_runs_exist(
    engine: AsyncEngine,
) -> None:
    """`trader status` and `trader report` default to the most recently started run."""
    assert await repository.latest_run_id(engine) is None
    await _create(engine, "b-older", started_at=STARTED)
    await _create(engine, "a-newer", started_at=STARTED + timedelta(days=1))
    assert await repository.latest_run_id(engine) == "a-newer"


async def test_functions_use_the_callers_transaction_when_given_a_connection(
    engine: AsyncEngine,
) -> None:
    """On an AsyncConnection the caller owns the transaction; a rollback undoes the call."""
    async with engine.connect() as conn:
        await _create(conn)
        assert await repository.latest_run_id(conn) == RUN
        await conn.rollback()
    assert await repository.get_run(engine, RUN) is None


async def test_load_run_state_returns_none_when_nothing_was_committed(engine: AsyncEngine) -> None:
    """A run without any committed batch has no snapshot to resume from."""
    await _create(engine)
    assert await repository.load_run_state(engine, RUN) is None


async def test_load_run_state_returns_the_snapshot_when_a_batch_committed(
    engine: AsyncEngine,
) -> None:
    """The snapshot comes back with its JSON state intact."""
    await _create(engine)
    state = {"portfolio": {"cash": "10000.5"}, "open_orders": [], "nested": [1, 2.5, None]}
    await _write(engine, WriteBatch(snapshot=RunStateSnapshot(RUN, T0_MS, state)))
    assert await repository.load_run_state(engine, RUN) == RunStateSnapshot(RUN, T0_MS, state)


async def test_fetch_equity_orders_by_time_when_rows_arrive_out_of_order(
    engine: AsyncEngine,
) -> None:
    """The equity curve is returned oldest first."""
    await _create(engine)
    await _write(
        engine, WriteBatch(equity=[_equity(2), _equity(0)]), WriteBatch(equity=[_equity(1)])
    )
    curve = await repository.fetch_equity(engine, RUN)
    assert [point.ts_ms for point in curve] == [T0_MS, T0_MS + STEP_MS, T0_MS + 2 * STEP_MS]
    assert curve[2] == repository.EquityRecord(
        ts_ms=T0_MS + 2 * STEP_MS,
        equity=10_002.0,
        cash=10_000.0,
        unrealized_pnl=2.0,
        drawdown=0.0,
        peak_equity=10_002.0,
        gross_exposure_usdt=0.0,
    )


async def test_latest_equity_is_the_newest_row_when_rows_arrive_out_of_order(
    engine: AsyncEngine,
) -> None:
    """`trader status` reads the newest equity row alone; None before the first."""
    await _create(engine)
    assert await repository.latest_equity(engine, RUN) is None
    await _write(
        engine, WriteBatch(equity=[_equity(2), _equity(0)]), WriteBatch(equity=[_equity(1)])
    )
    curve = await repository.fetch_equity(engine, RUN)
    assert await repository.latest_equity(engine, RUN) == curve[-1]
    assert curve[-1].ts_ms == T0_MS + 2 * STEP_MS


async def test_fetch_fills_orders_by_time_then_insertion_when_times_tie(
    engine: AsyncEngine,
) -> None:
    """Fills sharing a timestamp keep the order they were written in."""
    await _create(engine)
    fills = [_fill("o-2", 0, T0_MS + STEP_MS), _fill("o-1", 0, T0_MS), _fill("o-1", 1, T0_MS)]
    await _write(engine, WriteBatch(orders=[_order("o-1"), _order("o-2")], fills=fills))
    stored = await repository.fetch_fills(engine, RUN)
    assert [(f.order_id, f.seq) for f in stored] == [("o-1", 0), ("o-1", 1), ("o-2", 0)]
    assert (stored[0].side, stored[0].qty, stored[0].reason) == ("sell", 0.5, "stop_loss")


async def test_decision_queries_order_and_count_when_run_has_decisions(
    engine: AsyncEngine,
) -> None:
    """Decisions come back by bar then symbol, counted by action, with the last bar per symbol."""
    await _create(engine)
    decisions = [
        _decision("ETHUSDT", 1, "HOLD"),
        _decision("BTCUSDT", 1, "BUY_LONG"),
        _decision("BTCUSDT", 0, "HOLD"),
        _decision("ETHUSDT", 0, "HOLD"),
    ]
    await _write(engine, WriteBatch(decisions=decisions))
    stored = await repository.fetch_decisions(engine, RUN)
    assert [(d.bar_start_ms - T0_MS, d.symbol) for d in stored] == [
        (0, "BTCUSDT"),
        (0, "ETHUSDT"),
        (STEP_MS, "BTCUSDT"),
        (STEP_MS, "ETHUSDT"),
    ]
    assert (stored[0].strategic, stored[0].stop_loss, stored[0].take_profit) == (True, 90.0, None)
    assert await repository.count_decisions(engine, RUN) == {"BUY_LONG": 1, "HOLD": 3}
    since = T0_MS + STEP_MS
    assert await repository.count_decisions(engine, RUN, since_bar_ms=since) == {
        "BUY_LONG": 1,
        "HOLD": 1,
    }
    last = await repository.last_bar_starts(engine, RUN)
    assert last == {"BTCUSDT": T0_MS + STEP_MS, "ETHUSDT": T0_MS + STEP_MS}


async def test_fetch_rewards_orders_by_bar_when_run_has_rewards(engine: AsyncEngine) -> None:
    """Rewards (RL transition labels) come back by bar, then symbol."""
    await _create(engine)
    decisions = [_decision("BTCUSDT", 1, "HOLD"), _decision("BTCUSDT", 0, "BUY_LONG")]
    rewards = [
        {"decision_id": d["id"], "run_id": RUN, "symbol": "BTCUSDT"}
        | {"bar_start_ms": d["bar_start_ms"], "raw_reward": 2.0, "raw_return": 0.002}
        | {"shaped_reward": 1.0, "decision_type": "tactical", "weight": 0.7}
        for d in decisions
    ]
    await _write(engine, WriteBatch(decisions=decisions, rewards=rewards))
    stored = await repository.fetch_rewards(engine, RUN)
    assert [r.bar_start_ms for r in stored] == [T0_MS, T0_MS + STEP_MS]
    assert stored[0].decision_id == f"{RUN}:BTCUSDT:{T0_MS}"


async def test_fetch_positions_lists_symbols_when_positions_exist(engine: AsyncEngine) -> None:
    """Positions come back one per symbol, signed."""
    await _create(engine)
    positions = [
        {"run_id": RUN, "symbol": symbol, "qty": qty, "avg_price": 100.0}
        | {"realized_pnl": 1.0, "fees": 0.1, "updated_ms": T0_MS}
        for symbol, qty in (("ETHUSDT", -2.0), ("BTCUSDT", 0.5))
    ]
    await _write(engine, WriteBatch(positions=positions))
    stored = await repository.fetch_positions(engine, RUN)
    assert [(p.symbol, p.qty) for p in stored] == [("BTCUSDT", 0.5), ("ETHUSDT", -2.0)]


async def test_fetch_bars_returns_the_half_open_range_when_bars_surround_it(
    engine: AsyncEngine,
) -> None:
    """Bars with from_ms <= start_ms < to_ms of one symbol and interval come back as domain Bars."""
    bars = [_bar("BTCUSDT", index) for index in range(5)] + [_bar("ETHUSDT", 1)]
    await _write(engine, WriteBatch(bars=bars))
    stored = await repository.fetch_bars(
        engine, "BTCUSDT", "5", T0_MS + STEP_MS, T0_MS + 3 * STEP_MS
    )
    assert stored == [
        Bar("BTCUSDT", "5", T0_MS + STEP_MS, 101.0, 103.0, 100.0, 102.0, 5.0, 505.0, BarSource.WS),
        Bar(
            "BTCUSDT",
            "5",
            T0_MS + 2 * STEP_MS,
            102.0,
            104.0,
            101.0,
            103.0,
            5.0,
            505.0,
            BarSource.WS,
        ),
    ]


async def test_insert_risk_event_keeps_distinct_details_when_written_twice(
    engine: AsyncEngine,
) -> None:
    """Rejections at one instant differing only in detail are both stored, each exactly once."""
    await _create(engine)
    for _ in range(2):
        for detail in ("forged signature", "unknown command"):
            await repository.insert_risk_event(
                engine, run_id=RUN, ts_ms=T0_MS, kind="control_rejected", symbol="", detail=detail
            )
    async with engine.connect() as conn:
        stored = await conn.execute(text("SELECT detail FROM risk_events ORDER BY id"))
        details = stored.scalars().all()
    assert details == ["forged signature", "unknown command"]

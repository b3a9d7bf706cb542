"""Exits nobody decided (risk flattens, the kill switch, a bust account) and feed outages, end to
end through the engine with a scripted strategy on synthetic bars."""

from __future__ import annotations

from typing import Any

from risk.state import TradingState
from tests.support.engine_harness import ListSink, ScriptedStrategy, settings_for
from trader.domain import Action, Bar, DecisionType
from trader.engine import Engine
from trader.features.buffer import warmup_bars
from trader.pipeline import build_engine

INTERVAL_MS = 300_000
START_MS = 1_700_006_400_000  # a UTC midnight
FEATURES = {"tactical_window": 32, "strategic_window": 64, "scale_window": 32}
WARM = warmup_bars(strategic_window=64, scale_window=32)


def _bar(index: int, close: float, *, open_: float | None = None) -> Bar:
    """A 5m BTCUSDT bar `index` intervals after START_MS (a narrow range around its prices)."""
    open_ = close if open_ is None else open_
    return Bar(
        symbol="BTCUSDT",
        interval="5",
        start_ms=START_MS + index * INTERVAL_MS,
        open=open_,
        high=max(open_, close) + 0.1,
        low=min(open_, close) - 0.1,
        close=close,
        volume=1.0,
        turnover=close,
    )


def _engine(
    script: dict[int, tuple[Action, DecisionType]], **sections: dict[str, Any]
) -> tuple[Engine, ListSink]:
    sink = ListSink()
    settings = settings_for("noop", features=FEATURES, **sections)
    engine = build_engine(settings, run_id="t", sink=sink, strategy=ScriptedStrategy(script))
    return engine, sink


async def _run(engine: Engine, bars: list[Bar]) -> None:
    for bar in bars:
        await engine.process_slice([bar])


def _long_at(index: int) -> dict[int, tuple[Action, DecisionType]]:
    return {START_MS + index * INTERVAL_MS: (Action.BUY_LONG, DecisionType.TACTICAL)}


async def test_first_bar_after_a_feed_gap_opens_nothing() -> None:
    """A BUY on the first bar back after `stale_feed_bars` missing bars is denied as a stale
    feed; the same BUY one bar later passes."""
    bars = [_bar(i, 100.0) for i in range(WARM + 2)]
    back = WARM + 2 + 5  # five bars never arrive
    bars += [_bar(back, 100.0), _bar(back + 1, 100.0), _bar(back + 2, 100.0)]
    script = _long_at(back) | _long_at(back + 1)
    engine, sink = _engine(script, risk={"stale_feed_bars": 3})
    await _run(engine, bars)
    await engine.flush(wait=True)
    orders = {row["created_ms"] // INTERVAL_MS: row for row in sink.rows("orders")}
    first = orders[(START_MS + (back + 1) * INTERVAL_MS) // INTERVAL_MS]
    assert first["status"] == "rejected"
    assert first["reject_reason"] == "stale_feed"
    second = orders[(START_MS + (back + 2) * INTERVAL_MS) // INTERVAL_MS]
    assert second["status"] == "filled"


async def test_risk_flatten_credits_the_open_reward_as_strategic() -> None:
    """A drawdown halt flattens at the next open; the reward of the (procedural HOLD)
    decision whose bar holds that fill is credited as strategic."""
    entry = WARM + 1
    bars = [_bar(i, 100.0) for i in range(entry + 3)]
    crash = len(bars)
    bars += [_bar(crash, 90.0), _bar(crash + 1, 90.0), _bar(crash + 2, 90.0)]
    engine, sink = _engine(_long_at(entry), risk={"max_drawdown": 0.02, "soft_drawdown": 0.01})
    await _run(engine, bars)
    await engine.flush(wait=True)
    assert engine.risk.state is TradingState.HALTED
    flatten_fills = [row for row in sink.rows("fills") if row["reason"] == "flatten"]
    assert len(flatten_fills) == 1
    decisions = {row["id"]: row for row in sink.rows("decisions")}
    credited = [
        (decisions[row["decision_id"]], row)
        for row in sink.rows("rewards")
        if decisions[row["decision_id"]]["bar_start_ms"] == flatten_fills[0]["ts_ms"] - INTERVAL_MS
    ]
    assert len(credited) == 1
    decision, reward = credited[0]
    assert decision["decision_type"] == "procedural"  # the strategy only held
    assert reward["decision_type"] == "strategic"
    assert reward["weight"] == 2.0
    weighted = [
        r["decision_id"] for r in sink.rows("rewards") if r["decision_type"] != "procedural"
    ]
    entry_id = next(d["id"] for d in decisions.values() if d["action"] == "BUY_LONG")
    assert weighted == [entry_id, reward["decision_id"]]  # nothing else was re-credited


async def test_kill_flatten_credits_the_open_reward_as_strategic() -> None:
    """The kill switch's emergency close falls in the open decision's reward: strategic."""
    entry = WARM + 1
    engine, sink = _engine(_long_at(entry))
    await _run(engine, [_bar(i, 100.0) for i in range(entry + 3)])
    await engine.kill(reason="test", now_ms=START_MS, flatten=True, price_of=lambda _: 99.0)
    await _run(engine, [_bar(entry + 3, 99.0)])
    await engine.flush(wait=True)
    last = sink.rows("rewards")[-1]
    assert last["decision_id"].endswith(f":{START_MS + (entry + 2) * INTERVAL_MS}")
    assert last["decision_type"] == "strategic"
    assert last["raw_reward"] < 0  # the close at 99 and its fee


async def test_bust_account_still_halts_and_stores_its_flatten() -> None:
    """Equity below zero at a close (a 45% gap against 20x leverage) halts and stores the
    flatten and every row of the slice instead of aborting it on every restart."""
    entry = WARM + 1
    bars = [_bar(i, 100.0) for i in range(entry + 2)]
    gap = _bar(entry + 2, 55.0, open_=55.0)
    risk = {
        "max_leverage": 20.0,
        "max_gross_exposure": 20.0,
        "max_position_notional_usdt": 1e9,
    }
    engine, sink = _engine(_long_at(entry), risk=risk)
    await _run(engine, [*bars, gap])
    await engine.flush(wait=True)
    assert engine.portfolio.equity < 0
    assert engine.risk.state is TradingState.HALTED
    assert engine.last_slice_start_ms == gap.start_ms
    assert any(row["leg"] == "flatten" for row in sink.rows("orders"))
    assert sink.rows("decisions")[-1]["bar_start_ms"] == gap.start_ms
    await _run(engine, [_bar(entry + 3, 55.0)])
    await engine.flush(wait=True)
    bust = sink.rows("rewards")[-1]
    assert bust["raw_return"] == 0.0
    assert bust["raw_reward"] != 0.0

"""The engine's kill switch: flat at once at the latest price, HALTED until resume, restart-proof.

Also the error halt, whose flatten is owed until the next mark (placing orders needs the loop).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from risk.state import TradingState
from tests.support.candles import load_candles
from tests.support.daemon_harness import FIXTURES
from tests.support.engine_harness import ListSink, run_engine, settings_for, slices
from trader.config import Settings
from trader.domain import Order, Side
from trader.engine import Engine
from trader.pipeline import build_engine

_SLICES = slices(load_candles(FIXTURES / "BTCUSDT_5m.csv.gz", "BTCUSDT", "5")[:700])
_FEATURES = {"tactical_window": 32, "strategic_window": 64, "scale_window": 32}
#: Mid-bar: a kill arrives between bar closes, on exchange time.
_KILL_DELAY_MS = 123_456


def _settings() -> Settings:
    return settings_for("random", features=_FEATURES, strategy={"seed": 5})


def _any_queued(orders: list[Order]) -> bool:
    return bool(orders)


def _flip_queued(orders: list[Order]) -> bool:
    """A close leg and an open leg queued: the strategy reversed the position."""
    return {order.reduce_only for order in orders} == {True, False}


def _top_up_queued(orders: list[Order]) -> bool:
    """Only orders adding to the position queued."""
    return bool(orders) and not any(order.reduce_only for order in orders)


async def _positioned_with_orders_pending(
    wanted: Callable[[list[Order]], bool] = _any_queued,
) -> tuple[Engine, ListSink, int]:
    """An engine run until it holds a position and the orders queued for the next open are
    `wanted`.

    Returns the engine, its sink and the number of slices processed.
    """
    sink = ListSink()
    engine = build_engine(_settings(), run_id="t", sink=sink)
    for index, bar_slice in enumerate(_SLICES, start=1):
        await engine.process_slice(bar_slice)
        held = engine.portfolio.position("BTCUSDT").qty
        if held != 0 and wanted(engine._broker.pending_orders()):
            return engine, sink, index
    raise AssertionError("the random strategy never held a position with such orders queued")


def _kill_ms(done: int) -> int:
    return _SLICES[done - 1][-1].close_ms + _KILL_DELAY_MS


def _last_close(done: int) -> float:
    return _SLICES[done - 1][-1].close


def _emergency_price(engine: Engine, price: float, held: Decimal) -> tuple[Side, float]:
    """The side and price of the fill closing `held` at `price`: slipped against the taker
    and rounded to the tick against it, as the paper broker fills every order."""
    side = Side.SELL if held > 0 else Side.BUY
    slippage = Decimal(repr(_settings().broker.slippage_bps)) / 10_000
    slipped = Decimal(repr(price)) * (1 - slippage if side is Side.SELL else 1 + slippage)
    return side, float(engine._instruments.get("BTCUSDT").round_price(slipped, side))


async def test_positions_flat_at_latest_price_when_killed_with_flatten() -> None:
    """A kill closes every position at once with a flatten-marked fill at the latest price."""
    engine, sink, done = await _positioned_with_orders_pending()
    held = engine.portfolio.position("BTCUSDT").qty
    pending = [order.client_order_id for order in engine._broker.pending_orders()]
    now_ms, latest = _kill_ms(done), _last_close(done) * 1.01

    await engine.kill(reason="operator", now_ms=now_ms, flatten=True, price_of=lambda _: latest)
    await engine.flush(wait=True)

    assert engine.portfolio.position("BTCUSDT").qty == 0
    assert engine._broker.pending_orders() == []
    assert engine.risk.state is TradingState.HALTED
    (fill,) = [row for row in sink.rows("fills") if row["ts_ms"] == now_ms]
    side, price = _emergency_price(engine, latest, held)
    assert (fill["reason"], fill["side"], fill["qty"]) == ("flatten", side.value, float(abs(held)))
    assert fill["price"] == price
    final_status = {row["id"]: row for row in sink.rows("orders")}
    flatten_order = final_status[fill["order_id"]]
    assert (flatten_order["leg"], flatten_order["status"]) == ("flatten", "filled")
    assert flatten_order["reduce_only"]
    assert flatten_order["created_ms"] == now_ms
    assert all(final_status[order_id]["status"] == "cancelled" for order_id in pending)
    (event,) = [row for row in sink.rows("risk_events") if row["ts_ms"] == now_ms]
    assert (event["kind"], event["detail"]) == ("halted", "kill: operator")


async def test_last_close_used_when_no_latest_price_is_known() -> None:
    """Without a traded price for a symbol, the kill flattens at its last bar close."""
    engine, sink, done = await _positioned_with_orders_pending()
    held = engine.portfolio.position("BTCUSDT").qty
    now_ms = _kill_ms(done)

    await engine.kill(reason="no ticker", now_ms=now_ms, flatten=True, price_of=lambda _: None)
    await engine.flush(wait=True)

    (fill,) = [row for row in sink.rows("fills") if row["ts_ms"] == now_ms]
    assert (fill["reason"], fill["price"]) == (
        "flatten",
        _emergency_price(engine, _last_close(done), held)[1],
    )


async def test_position_kept_and_opening_orders_cancelled_when_killed_without_flatten() -> None:
    """A --no-flatten kill leaves the position and its queued close, and cancels the queued
    opening leg of a reversal."""
    engine, sink, done = await _positioned_with_orders_pending(_flip_queued)
    held = engine.portfolio.position("BTCUSDT").qty
    queued = engine._broker.pending_orders()
    now_ms = _kill_ms(done)

    await engine.kill(reason="freeze", now_ms=now_ms, flatten=False, price_of=lambda _: None)

    assert engine.risk.state is TradingState.HALTED
    assert engine.portfolio.position("BTCUSDT").qty == held
    assert engine._broker.pending_orders() == [order for order in queued if order.reduce_only]
    await run_engine(_settings(), _SLICES[done : done + 1], engine=engine, sink=sink)
    final_status = {row["id"]: row["status"] for row in sink.rows("orders")}
    assert {order.leg: final_status[order.client_order_id] for order in queued} == {
        "close": "filled",
        "open": "cancelled",
    }
    assert engine.portfolio.position("BTCUSDT").qty == 0
    next_open_ms = _SLICES[done][0].start_ms
    fills = [row["reason"] for row in sink.rows("fills") if row["ts_ms"] >= next_open_ms]
    assert fills == ["market"]


def _opened_after(sink: ListSink, after_ms: int) -> list[dict[str, object]]:
    """Opening orders (approved or denied) created after `after_ms`."""
    return [
        row
        for row in sink.rows("orders")
        if row["created_ms"] > after_ms and not row["reduce_only"]
    ]


async def test_nothing_opens_until_resume_when_killed() -> None:
    """After a kill every opening decision is denied as halted; a resume lets them through."""
    engine, sink, done = await _positioned_with_orders_pending()
    now_ms = _kill_ms(done)
    await engine.kill(reason="stop", now_ms=now_ms, flatten=True, price_of=lambda _: None)
    halted_until = done + 150
    await run_engine(_settings(), _SLICES[done:halted_until], engine=engine, sink=sink)

    denied = _opened_after(sink, now_ms)
    assert denied  # the strategy kept trying
    assert {(row["status"], row["reject_reason"]) for row in denied} == {
        ("rejected", "state_halted")
    }
    assert engine.portfolio.position("BTCUSDT").qty == 0

    resumed_ms = _kill_ms(halted_until)
    await engine.resume(reason="all clear", now_ms=resumed_ms)
    await run_engine(_settings(), _SLICES[halted_until:], engine=engine, sink=sink)

    assert engine.risk.state is TradingState.ACTIVE
    (event,) = [row for row in sink.rows("risk_events") if row["ts_ms"] == resumed_ms]
    assert (event["kind"], event["detail"]) == ("active", "resume: all clear")
    assert any(row["status"] == "filled" for row in _opened_after(sink, resumed_ms))


def _restored(snapshot_state: dict[str, Any], done: int) -> tuple[Engine, ListSink]:
    """A fresh engine loaded from a snapshot taken after `done` slices, features re-warmed."""
    sink = ListSink()
    engine = build_engine(_settings(), run_id="t", sink=sink)
    engine.load_state_dict(snapshot_state)
    for bar_slice in _SLICES[:done]:
        engine.warm(bar_slice)
    return engine, sink


async def test_kill_holds_on_a_fresh_engine_when_restored_from_the_snapshot() -> None:
    """A killed run restored from its snapshot is still HALTED for the kill and opens nothing."""
    engine, sink, done = await _positioned_with_orders_pending()
    now_ms = _kill_ms(done)
    await engine.kill(reason="restart test", now_ms=now_ms, flatten=True, price_of=lambda _: None)
    await engine.flush(wait=True)
    snapshot = sink.batches[-1].snapshot
    assert snapshot is not None

    restored, restored_sink = _restored(snapshot.state, done)
    assert restored.risk.state is TradingState.HALTED
    assert restored.risk.status()["reason"] == "kill"
    assert restored.portfolio.position("BTCUSDT").qty == 0
    await run_engine(_settings(), _SLICES[done:], engine=restored, sink=restored_sink)

    assert restored.risk.state is TradingState.HALTED
    opened = _opened_after(restored_sink, now_ms)
    assert opened
    assert {(row["status"], row["reject_reason"]) for row in opened} == {
        ("rejected", "state_halted")
    }
    assert restored_sink.rows("fills") == []


async def test_flatten_owed_until_next_mark_when_halted_on_error() -> None:
    """An error halt cancels queued opening orders at once and flattens at the next mark, even
    when the engine is restored from the snapshot in between."""
    engine, sink, done = await _positioned_with_orders_pending(_top_up_queued)
    held = engine.portfolio.position("BTCUSDT").qty
    (top_up,) = engine._broker.pending_orders()
    now_ms = _kill_ms(done)
    engine.halt_on_error("feed task crashed", now_ms)
    await engine.flush(wait=True)
    snapshot = sink.batches[-1].snapshot
    assert snapshot is not None
    assert engine._broker.pending_orders() == []
    last_order = sink.rows("orders")[-1]
    assert (last_order["id"], last_order["status"]) == (top_up.client_order_id, "cancelled")
    (event,) = [row for row in sink.rows("risk_events") if row["ts_ms"] == now_ms]
    assert (event["kind"], event["detail"]) == ("halted", "error: feed task crashed")

    restored, restored_sink = _restored(snapshot.state, done)
    await run_engine(_settings(), _SLICES[done : done + 2], engine=restored, sink=restored_sink)

    next_close = _SLICES[done][-1].close_ms
    (flatten,) = [row for row in restored_sink.rows("orders") if row["status"] == "filled"]
    assert (flatten["leg"], flatten["created_ms"], flatten["qty"]) == (
        "flatten",
        next_close,
        float(abs(held)),
    )
    assert restored.portfolio.position("BTCUSDT").qty == 0
    assert restored.risk.state is TradingState.HALTED

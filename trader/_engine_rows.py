"""The rows the engine writes per table.

Owns turning `Bar`, `Decision`, `Order`, `Fill` and `Position` values into the plain dicts of the
bars, decisions, orders, fills and positions tables, and the orders row of an exit the broker
triggered itself (an order's snapshot form is `Order.to_state`). It must not decide anything or
do I/O: the engine calls it.
"""

from __future__ import annotations

from typing import Any

from trader.domain import Bar, Decision, Fill, FillReason, Order, Position

# Rows built for every bar read an enum's value as `_value_`, a plain attribute: `.value` is a
# Python-level descriptor on Enum and costs several times more.

#: The order leg of a fill the broker made without an engine order (protective exits).
_LEG_BY_REASON = {
    FillReason.STOP_LOSS: "sl",
    FillReason.TAKE_PROFIT: "tp",
    FillReason.FLATTEN: "flatten",
}


def bar_row(bar: Bar) -> dict[str, Any]:
    """The `bars` row of one confirmed bar."""
    return {
        "symbol": bar.symbol,
        "interval": bar.interval,
        "start_ms": bar.start_ms,
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
        "turnover": bar.turnover,
        "source": bar.source._value_,
    }


def decision_row(
    decision_id: str, run_id: str, bar: Bar, decision: Decision, latency_us: int
) -> dict[str, Any]:
    """The `decisions` row of a decision on `bar` (`latency_us`: bar received to decided)."""
    return {
        "id": decision_id,
        "run_id": run_id,
        "symbol": bar.symbol,
        "bar_start_ms": bar.start_ms,
        "action": decision.action._value_,
        "size": decision.size,
        "confidence": decision.confidence,
        "stop_loss": decision.stop_loss,
        "take_profit": decision.take_profit,
        "strategic": decision.strategic,
        "act_steps": decision.act_steps,
        "decision_type": decision.decision_type._value_,
        "model_version": decision.model_version,
        "latency_us": latency_us,
    }


def order_row(order: Order, status: str, reject_reason: str | None = None) -> dict[str, Any]:
    """The `orders` row of `order` in `status` (upserted by id as the status changes)."""
    return {
        "id": order.client_order_id,
        "client_order_id": order.client_order_id,
        "run_id": order.run_id,
        "decision_id": order.decision_id,
        "symbol": order.symbol,
        "side": order.side.value,
        "qty": float(order.qty),
        "status": status,
        "reject_reason": reject_reason,
        "leg": order.leg,
        "reduce_only": order.reduce_only,
        "created_ms": order.created_ms,
        "stop_loss": order.stop_loss,
        "take_profit": order.take_profit,
    }


def fill_row(run_id: str, fill: Fill) -> dict[str, Any]:
    """The `fills` row of one execution."""
    return {
        "run_id": run_id,
        "order_id": fill.order_id,
        "seq": fill.seq,
        "symbol": fill.symbol,
        "side": fill.side.value,
        "qty": float(fill.qty),
        "price": float(fill.price),
        "fee": float(fill.fee),
        "ts_ms": fill.ts_ms,
        "reason": fill.reason.value,
    }


def position_row(run_id: str, position: Position, updated_ms: int) -> dict[str, Any]:
    """The `positions` row of a symbol (upserted), as of its latest fill at `updated_ms`."""
    return {
        "run_id": run_id,
        "symbol": position.symbol,
        "qty": float(position.qty),
        "avg_price": float(position.avg_price),
        "realized_pnl": float(position.realized_pnl),
        "fees": float(position.fees),
        "updated_ms": updated_ms,
    }


def protective_order(run_id: str, fill: Fill, bar_start_ms: int) -> Order:
    """The order behind an exit the broker triggered itself (stop-loss, take-profit)."""
    return Order(
        client_order_id=fill.order_id,
        run_id=run_id,
        decision_id=None,
        symbol=fill.symbol,
        side=fill.side,
        qty=fill.qty,
        reduce_only=True,
        leg=_LEG_BY_REASON.get(fill.reason, "exit"),
        created_ms=bar_start_ms,
    )

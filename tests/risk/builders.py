"""Small builders for risk tests: limits, bars, decisions, contexts and a warmed-up layer."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from risk.context import RiskContext
from risk.gate import SymbolLimits
from risk.layer import RiskLayer
from risk.limits import RiskLimits
from trader.domain import Action, Bar, Decision

#: Bar length of the "5" interval, and a bar start aligned to it: 2023-11-14 01:00 UTC, so 276
#: bars pass before the next UTC day starts.
INTERVAL_MS = 300_000
T0_MS = 1_699_923_600_000
DAY_MS = 86_400_000
BTC = SymbolLimits(
    qty_step=Decimal("0.001"), min_qty=Decimal("0.001"), min_notional_usdt=Decimal(5)
)
ETH = SymbolLimits(qty_step=Decimal("0.01"), min_qty=Decimal("0.01"), min_notional_usdt=Decimal(5))


def risk_limits(**overrides: Any) -> RiskLimits:
    """The contract's default `[risk]` settings, with `overrides` applied."""
    values: dict[str, Any] = {
        "max_drawdown": 0.20,
        "soft_drawdown": 0.10,
        "max_daily_loss": 0.05,
        "max_position_notional_usdt": 5_000.0,
        "max_gross_exposure": 2.0,
        "max_leverage": 3.0,
        "max_orders_per_minute": 60,
        "min_confidence": 0.0,
        "stale_feed_bars": 3,
    }
    values.update(overrides)
    return RiskLimits(**values)


def bar(
    symbol: str, index: int, close: float, *, spread: float = 0.002, previous: float | None = None
) -> Bar:
    """Bar number `index` after `T0_MS`, ranging `spread` of its close around it."""
    high = close * (1 + spread / 2)
    low = close * (1 - spread / 2)
    return Bar(
        symbol=symbol,
        interval="5",
        start_ms=T0_MS + index * INTERVAL_MS,
        open=close if previous is None else previous,
        high=max(high, close),
        low=min(low, close),
        close=close,
        volume=1.0,
        turnover=close,
    )


def feed(layer: RiskLayer, symbol: str, closes: list[float], *, first_index: int = 0) -> int:
    """Feed consecutive bars; returns exchange time after the last one closed (its close_ms)."""
    for offset, close in enumerate(closes):
        layer.on_bar(bar(symbol, first_index + offset, close))
    return T0_MS + (first_index + len(closes)) * INTERVAL_MS


def decision(
    action: Action,
    symbol: str = "BTCUSDT",
    *,
    size: float = 1.0,
    confidence: float = 1.0,
    stop_loss: float | None = None,
    take_profit: float | None = None,
) -> Decision:
    """A decision on the first bar (its bar time does not matter to risk)."""
    return Decision(
        symbol=symbol,
        bar_start_ms=T0_MS,
        action=action,
        size=size,
        confidence=confidence,
        stop_loss=stop_loss,
        take_profit=take_profit,
    )


def context(
    now_ms: int,
    *,
    equity: str = "10000",
    positions: Mapping[str, str] | None = None,
    limits: SymbolLimits = BTC,
    risk_budget: float | None = None,
) -> RiskContext:
    """A review context; positions as {symbol: signed qty text}."""
    return RiskContext(
        now_ms=now_ms,
        equity=Decimal(equity),
        positions={s: Decimal(q) for s, q in (positions or {}).items()},
        limits=limits,
        risk_budget=risk_budget,
    )


def flat_layer(
    closes: int = 20, price: float = 50_000.0, **overrides: Any
) -> tuple[RiskLayer, int]:
    """A layer fed `closes` flat BTC bars at `price`, and the exchange time after them."""
    layer = RiskLayer(risk_limits(**overrides))
    now_ms = feed(layer, "BTCUSDT", [price] * closes)
    return layer, now_ms

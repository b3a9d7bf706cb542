"""Position sizing: how large a position a decision may have, and its default protective levels.

Owns volatility targeting (a position whose ATR stop would lose `risk_per_trade` of equity), the
scaling of that by the decision's size, confidence and the strategic risk budget, rounding a
quantity down to the instrument's step, and stop-loss / take-profit levels from the ATR when the
strategy gives none.

It must not check limits (that is `risk.checks`), hold state, or do I/O. Money is Decimal; the
ATR, size, confidence and budget are floats and enter Decimal maths through `Decimal(repr(x))`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import ROUND_DOWN, Decimal

from trader.domain import Side

_ZERO = Decimal(0)


def to_decimal(value: float) -> Decimal:
    """The shortest decimal that reads back as `value` (no binary-float tail)."""
    return Decimal(repr(value))


def unit_fraction(value: float | None) -> Decimal:
    """A size-like factor clamped to [0, 1]; None means 1 (no scaling), NaN means 0."""
    if value is None:
        return Decimal(1)
    if not math.isfinite(value):
        return _ZERO
    return to_decimal(min(max(value, 0.0), 1.0))


def vol_target_notional(
    *,
    equity: Decimal,
    price: float,
    atr: float | None,
    risk_per_trade: float,
    stop_atr_multiple: float,
) -> Decimal | None:
    """The position value whose stop `stop_atr_multiple` ATRs away loses `risk_per_trade` of equity.

    quantity = equity x risk_per_trade / (stop_atr_multiple x ATR), valued at `price`. None when
    the ATR is not known yet (warm-up) or not positive: sizing then rests on the hard caps alone.
    """
    if atr is None or not math.isfinite(atr) or atr <= 0.0 or equity <= 0:
        return None
    stop_distance = to_decimal(stop_atr_multiple) * to_decimal(atr)
    return equity * to_decimal(risk_per_trade) * to_decimal(price) / stop_distance


def target_notional(
    caps: Iterable[Decimal | None],
    *,
    size: float,
    confidence: float,
    risk_budget: float | None = None,
) -> Decimal:
    """The smallest known cap times size x confidence x risk budget (each clamped to [0, 1])."""
    known = [cap for cap in caps if cap is not None]
    if not known:
        return _ZERO
    largest = max(min(known), _ZERO)
    return largest * unit_fraction(size) * unit_fraction(confidence) * unit_fraction(risk_budget)


def round_down_to_step(qty: Decimal, step: Decimal) -> Decimal:
    """Round a quantity down to a whole number of steps (negative becomes zero)."""
    if qty <= 0:
        return _ZERO
    return (qty / step).to_integral_value(rounding=ROUND_DOWN) * step


def default_protection(
    *,
    side: Side,
    price: float,
    atr: float | None,
    stop_loss: float | None,
    take_profit: float | None,
    stop_atr_multiple: float,
    take_profit_atr_multiple: float,
) -> tuple[float | None, float | None]:
    """The strategy's stop-loss and take-profit, each filled in from the ATR when it gave none.

    A long stops `stop_atr_multiple` ATRs below `price` and takes profit
    `take_profit_atr_multiple` ATRs above it; a short mirrors that. Without a known ATR, or where
    the level would not be a positive price, the missing level stays None.
    """
    if atr is None or not math.isfinite(atr) or atr <= 0.0:
        return stop_loss, take_profit
    direction = 1.0 if side is Side.BUY else -1.0
    if stop_loss is None:
        stop_loss = _positive(price - direction * stop_atr_multiple * atr)
    if take_profit is None:
        take_profit = _positive(price + direction * take_profit_atr_multiple * atr)
    return stop_loss, take_profit


def _positive(level: float) -> float | None:
    return level if math.isfinite(level) and level > 0.0 else None

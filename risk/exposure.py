"""Exposure around one order: what is held, what else is held, and what moves with it.

Owns valuing the account's positions around the symbol of an order under review (its own
position, the gross of every other position, and the part of that correlated with the order's
direction), the room those leave under the exposure caps, and running every size limit on a
final quantity.

Correlated means *directionally*: a position counts with the order when
``sign(order) x sign(position) x correlation >= threshold``, so a long BTC and a long ETH that
move together count together, while a long BTC hedged by a short ETH does not. The correlated
cap binds only a group: an order with no other position moving with it is limited by the
per-symbol, leverage and gross caps alone.

It must not hold state, size orders, or do I/O; prices and correlations come in as callables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from risk.checks import (
    CheckResult,
    Deny,
    DenyReason,
    check_correlated_exposure,
    check_gross_exposure,
    check_leverage,
    check_order_size,
    check_position_notional,
)
from risk.gate import SymbolLimits
from risk.sizing import to_decimal

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Exposure:
    """Position values around one symbol, in USDT, before the order under review.

    Attributes:
        held_usdt: the symbol's own position (zero after the closing leg of a flip).
        others_usdt: every other symbol's position.
        group_usdt: the other positions correlated with the order's direction.
    """

    held_usdt: Decimal
    others_usdt: Decimal
    group_usdt: Decimal


@dataclass(frozen=True, slots=True)
class ExposureCaps:
    """The caps an order's size must respect (multiples are of equity)."""

    max_position_notional_usdt: Decimal
    max_leverage: Decimal
    max_gross_exposure: Decimal
    max_correlated_exposure: Decimal


def exposure_around(
    symbol: str,
    *,
    direction: int,
    position: Decimal,
    positions: Mapping[str, Decimal],
    price_of: Callable[[str], float | None],
    correlation_of: Callable[[str, str], float | None],
    threshold: float,
) -> Exposure | Deny:
    """Value the positions around an order on `symbol` in `direction` (+1 buy, -1 sell).

    Args:
        symbol: the order's symbol; `position` is its (signed) quantity.
        direction: +1 for a buy, -1 for a sell.
        position: the symbol's signed position the order adds to.
        positions: signed quantity per symbol (the symbol itself is skipped).
        price_of: latest price of a symbol, None when unknown.
        correlation_of: return correlation of two symbols, None when unknown (not counted).
        threshold: directional correlation from which a position counts with the order.

    Returns:
        The exposure, or a Deny when a held symbol has no usable price (fail closed).
    """
    others = group = _ZERO
    for other, qty in positions.items():
        if other == symbol or qty == 0:
            continue
        price = price_of(other)
        if price is None or not math.isfinite(price) or price <= 0.0:
            return Deny(DenyReason.PRICE_INVALID, f"no price for held {other}")
        value = abs(qty) * to_decimal(price)
        others += value
        correlation = correlation_of(symbol, other)
        same_way = 1 if (qty > 0) == (direction > 0) else -1
        if correlation is not None and same_way * correlation >= threshold:
            group += value
    held = _ZERO
    own_price = price_of(symbol)
    if position != 0 and own_price is not None:
        held = abs(position) * to_decimal(own_price)
    return Exposure(held_usdt=held, others_usdt=others, group_usdt=group)


def room_usdt(exposure: Exposure, *, equity: Decimal, caps: ExposureCaps) -> Decimal:
    """How much more position value the gross and correlated caps leave for this order."""
    gross_room = caps.max_gross_exposure * equity - exposure.others_usdt - exposure.held_usdt
    if exposure.group_usdt <= 0:
        return gross_room  # nothing moves with it: a lone position is no correlated group
    group_room = caps.max_correlated_exposure * equity - exposure.group_usdt - exposure.held_usdt
    return min(gross_room, group_room)


def check_limits(
    qty: Decimal,
    *,
    price: Decimal,
    exposure: Exposure,
    equity: Decimal,
    limits: SymbolLimits,
    caps: ExposureCaps,
) -> CheckResult:
    """Every size limit on an order of `qty` at `price` on top of `exposure`; first Deny wins."""
    notional = exposure.held_usdt + qty * price
    return (
        check_order_size(qty=qty, price=price, limits=limits)
        or check_position_notional(
            notional_usdt=notional, max_notional_usdt=caps.max_position_notional_usdt
        )
        or check_leverage(notional_usdt=notional, equity=equity, max_leverage=caps.max_leverage)
        or check_gross_exposure(
            gross_usdt=exposure.others_usdt + notional,
            equity=equity,
            max_gross_exposure=caps.max_gross_exposure,
        )
        or (
            check_correlated_exposure(
                group_usdt=exposure.group_usdt + notional,
                equity=equity,
                max_correlated_exposure=caps.max_correlated_exposure,
            )
            if exposure.group_usdt > 0
            else None
        )
    )

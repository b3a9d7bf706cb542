"""Pre-trade checks: pure functions that approve an opening order or deny it with a reason.

Owns the stable reason labels (`DenyReason`, stored in `orders.reject_reason` and
`risk_events.detail`) and one function per rule. Each returns None to approve, or a `Deny`
naming the rule and the numbers that broke it. The caller decides which orders a rule applies
to: the layer runs them on orders that open or add to a position; an order that only reduces a
position is never held back by them (cutting risk must always be possible).

It must not hold state, read a clock, or do I/O: every input, "now" included, is an argument.
Money and quantities are Decimal; ratios (confidence, price jump, correlation) are floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from risk.gate import SymbolLimits
from risk.state import TradingState


class DenyReason(StrEnum):
    """Stable labels of denials; operators and dashboards match on these strings."""

    STATE_HALTED = "state_halted"
    STATE_REDUCING = "state_reducing"
    MAX_POSITION_NOTIONAL = "max_position_notional"
    MAX_GROSS_EXPOSURE = "max_gross_exposure"
    MAX_LEVERAGE = "max_leverage"
    MAX_CORRELATED_EXPOSURE = "max_correlated_exposure"
    QTY_STEP = "qty_step"
    BELOW_MIN_QTY = "below_min_qty"
    BELOW_MIN_NOTIONAL = "below_min_notional"
    MAX_ORDERS_PER_MINUTE = "max_orders_per_minute"
    MIN_CONFIDENCE = "min_confidence"
    STALE_FEED = "stale_feed"
    PRICE_INVALID = "price_invalid"
    PRICE_JUMP = "price_jump"


@dataclass(frozen=True, slots=True)
class Deny:
    """A check's refusal: the stable `reason` label and a human-readable `detail`."""

    reason: DenyReason
    detail: str


#: What every check returns: None approves, a `Deny` refuses.
CheckResult = Deny | None


def check_state(state: TradingState) -> CheckResult:
    """Only ACTIVE lets an order open or add to a position."""
    if state is TradingState.HALTED:
        return Deny(DenyReason.STATE_HALTED, "trading is HALTED")
    if state is TradingState.REDUCING:
        return Deny(DenyReason.STATE_REDUCING, "trading is REDUCING: only reducing orders pass")
    return None


def check_position_notional(*, notional_usdt: Decimal, max_notional_usdt: Decimal) -> CheckResult:
    """The symbol's absolute position value after the order stays within the per-symbol cap."""
    if notional_usdt > max_notional_usdt:
        return Deny(
            DenyReason.MAX_POSITION_NOTIONAL, f"position {notional_usdt} > {max_notional_usdt} USDT"
        )
    return None


def check_gross_exposure(
    *, gross_usdt: Decimal, equity: Decimal, max_gross_exposure: Decimal
) -> CheckResult:
    """The sum of absolute position values after the order stays within a multiple of equity."""
    limit = max_gross_exposure * equity
    if equity <= 0 or gross_usdt > limit:
        return Deny(
            DenyReason.MAX_GROSS_EXPOSURE,
            f"gross {gross_usdt} > {max_gross_exposure} x equity {equity}",
        )
    return None


def check_leverage(
    *, notional_usdt: Decimal, equity: Decimal, max_leverage: Decimal
) -> CheckResult:
    """One symbol's position value after the order stays within `max_leverage` x equity.

    This is the leverage an isolated-margin position would need if all equity were its margin;
    the account-wide multiple is `check_gross_exposure`.
    """
    if equity <= 0 or notional_usdt > max_leverage * equity:
        return Deny(
            DenyReason.MAX_LEVERAGE, f"position {notional_usdt} > {max_leverage} x equity {equity}"
        )
    return None


def check_correlated_exposure(
    *, group_usdt: Decimal, equity: Decimal, max_correlated_exposure: Decimal
) -> CheckResult:
    """Positions that move together (see `risk.correlation`) stay within a multiple of equity."""
    if equity <= 0 or group_usdt > max_correlated_exposure * equity:
        return Deny(
            DenyReason.MAX_CORRELATED_EXPOSURE,
            f"correlated group {group_usdt} > {max_correlated_exposure} x equity {equity}",
        )
    return None


def check_order_size(*, qty: Decimal, price: Decimal, limits: SymbolLimits) -> CheckResult:
    """The quantity is a whole number of qty steps and meets the minimum qty and notional."""
    if qty % limits.qty_step != 0:
        return Deny(DenyReason.QTY_STEP, f"qty {qty} is not a multiple of {limits.qty_step}")
    if qty < limits.min_qty:
        return Deny(DenyReason.BELOW_MIN_QTY, f"qty {qty} < min {limits.min_qty}")
    if qty * price < limits.min_notional_usdt:
        return Deny(
            DenyReason.BELOW_MIN_NOTIONAL,
            f"notional {qty * price} < min {limits.min_notional_usdt} USDT",
        )
    return None


def check_order_rate(*, orders_in_window: int, max_orders_per_minute: int) -> CheckResult:
    """Fewer than `max_orders_per_minute` orders went out in the last minute of exchange time."""
    if orders_in_window >= max_orders_per_minute:
        return Deny(
            DenyReason.MAX_ORDERS_PER_MINUTE,
            f"{orders_in_window} orders in the last minute (max {max_orders_per_minute})",
        )
    return None


def check_confidence(*, confidence: float, min_confidence: float) -> CheckResult:
    """The strategy's confidence is a number at least `min_confidence`."""
    if not math.isfinite(confidence) or confidence < min_confidence:
        return Deny(DenyReason.MIN_CONFIDENCE, f"confidence {confidence} < {min_confidence}")
    return None


def check_stale_feed(
    *,
    last_bar_start_ms: int | None,
    interval_ms: int,
    now_ms: int,
    stale_feed_bars: int,
    gap_bars: int = 0,
) -> CheckResult:
    """The feed is live and was not just back from an outage of `stale_feed_bars` bars.

    The newest bar closed at ``last_bar_start_ms + interval_ms``; the feed is stale once
    `stale_feed_bars` further bars should have closed since then without arriving. The engine
    decides on the bar that just closed, so in practice the outage shows as `gap_bars`: bars
    missing right before the newest one. Its first bar back opens nothing (features, ATR and
    the price-jump reference all span the hole); the next one may.
    """
    if last_bar_start_ms is None:
        return Deny(DenyReason.STALE_FEED, "no bar seen for the symbol")
    missing = (now_ms - (last_bar_start_ms + interval_ms)) // interval_ms
    if missing >= stale_feed_bars:
        return Deny(
            DenyReason.STALE_FEED,
            f"{missing} bars missing since {last_bar_start_ms} (limit {stale_feed_bars})",
        )
    if gap_bars >= stale_feed_bars:
        return Deny(
            DenyReason.STALE_FEED,
            f"first bar after {gap_bars} missing bars (limit {stale_feed_bars})",
        )
    return None


def check_price(
    *, price: float, previous_price: float | None, max_price_jump: float
) -> CheckResult:
    """The price is finite and positive and moved at most `max_price_jump` from the last one."""
    if not math.isfinite(price) or price <= 0.0:
        return Deny(DenyReason.PRICE_INVALID, f"price {price}")
    if previous_price is None or not math.isfinite(previous_price) or previous_price <= 0.0:
        return None
    jump = abs(price / previous_price - 1.0)
    if jump > max_price_jump:
        return Deny(
            DenyReason.PRICE_JUMP,
            f"price {price} moved {jump:.4f} from {previous_price} (max {max_price_jump})",
        )
    return None

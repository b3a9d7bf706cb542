"""Each pure pre-trade check approves (None) or denies with its stable reason label."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from risk.checks import (
    Deny,
    DenyReason,
    check_confidence,
    check_correlated_exposure,
    check_gross_exposure,
    check_leverage,
    check_order_rate,
    check_order_size,
    check_position_notional,
    check_price,
    check_stale_feed,
    check_state,
)
from risk.gate import SymbolLimits
from risk.state import TradingState

D = Decimal
BTC = SymbolLimits(qty_step=D("0.001"), min_qty=D("0.002"), min_notional_usdt=D("5"))


def _reason(result: Deny | None) -> DenyReason | None:
    return None if result is None else result.reason


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (TradingState.ACTIVE, None),
        (TradingState.REDUCING, DenyReason.STATE_REDUCING),
        (TradingState.HALTED, DenyReason.STATE_HALTED),
    ],
)
def test_state_check_allows_opening_only_when_active(
    state: TradingState, expected: DenyReason | None
) -> None:
    """Only ACTIVE lets an order open; REDUCING and HALTED deny with their own label."""
    assert _reason(check_state(state)) == expected


@pytest.mark.parametrize(
    ("notional", "cap", "expected"),
    [
        ("4999.99", "5000", None),
        ("5000", "5000", None),
        ("5000.01", "5000", DenyReason.MAX_POSITION_NOTIONAL),
        ("0", "5000", None),
    ],
)
def test_position_notional_check_denies_when_above_cap(
    notional: str, cap: str, expected: DenyReason | None
) -> None:
    """A position worth more than the per-symbol cap is denied; the cap itself is allowed."""
    result = check_position_notional(notional_usdt=D(notional), max_notional_usdt=D(cap))
    assert _reason(result) == expected


@pytest.mark.parametrize(
    ("gross", "equity", "multiple", "expected"),
    [
        ("20000", "10000", "2", None),
        ("20000.01", "10000", "2", DenyReason.MAX_GROSS_EXPOSURE),
        ("100", "0", "2", DenyReason.MAX_GROSS_EXPOSURE),
        ("100", "-50", "2", DenyReason.MAX_GROSS_EXPOSURE),
        ("5000", "10000", "0.5", None),
    ],
)
def test_gross_exposure_check_denies_when_above_multiple_of_equity(
    gross: str, equity: str, multiple: str, expected: DenyReason | None
) -> None:
    """Gross exposure above the multiple of equity, or any exposure without equity, is denied."""
    result = check_gross_exposure(
        gross_usdt=D(gross), equity=D(equity), max_gross_exposure=D(multiple)
    )
    assert _reason(result) == expected


@pytest.mark.parametrize(
    ("notional", "equity", "leverage", "expected"),
    [
        ("30000", "10000", "3", None),
        ("30000.5", "10000", "3", DenyReason.MAX_LEVERAGE),
        ("10", "0", "3", DenyReason.MAX_LEVERAGE),
        ("5000", "10000", "0.5", None),
        ("5001", "10000", "0.5", DenyReason.MAX_LEVERAGE),
    ],
)
def test_leverage_check_denies_when_position_above_leverage_times_equity(
    notional: str, equity: str, leverage: str, expected: DenyReason | None
) -> None:
    """One position worth more than max_leverage x equity is denied."""
    result = check_leverage(notional_usdt=D(notional), equity=D(equity), max_leverage=D(leverage))
    assert _reason(result) == expected


@pytest.mark.parametrize(
    ("group", "equity", "multiple", "expected"),
    [
        ("10000", "10000", "1", None),
        ("10000.1", "10000", "1", DenyReason.MAX_CORRELATED_EXPOSURE),
        ("1", "0", "1", DenyReason.MAX_CORRELATED_EXPOSURE),
    ],
)
def test_correlated_exposure_check_denies_when_group_above_cap(
    group: str, equity: str, multiple: str, expected: DenyReason | None
) -> None:
    """A correlated group worth more than its multiple of equity is denied."""
    result = check_correlated_exposure(
        group_usdt=D(group), equity=D(equity), max_correlated_exposure=D(multiple)
    )
    assert _reason(result) == expected


@pytest.mark.parametrize(
    ("qty", "price", "expected"),
    [
        ("0.002", "50000", None),
        ("1.234", "50000", None),
        ("0.0025", "50000", DenyReason.QTY_STEP),
        ("0.001", "50000", DenyReason.BELOW_MIN_QTY),
        ("0", "50000", DenyReason.BELOW_MIN_QTY),
        ("0.002", "2000", DenyReason.BELOW_MIN_NOTIONAL),  # 4 USDT < 5
        ("0.003", "2000", None),  # 6 USDT
    ],
)
def test_order_size_check_enforces_step_and_minimums(
    qty: str, price: str, expected: DenyReason | None
) -> None:
    """A qty off the step, under the minimum qty, or under the minimum notional is denied."""
    assert _reason(check_order_size(qty=D(qty), price=D(price), limits=BTC)) == expected


@pytest.mark.parametrize(
    ("in_window", "maximum", "expected"),
    [
        (0, 1, None),
        (59, 60, None),
        (60, 60, DenyReason.MAX_ORDERS_PER_MINUTE),
        (61, 60, DenyReason.MAX_ORDERS_PER_MINUTE),
    ],
)
def test_order_rate_check_denies_when_window_is_full(
    in_window: int, maximum: int, expected: DenyReason | None
) -> None:
    """An order is denied once the last minute already holds the maximum number of orders."""
    result = check_order_rate(orders_in_window=in_window, max_orders_per_minute=maximum)
    assert _reason(result) == expected


@pytest.mark.parametrize(
    ("confidence", "minimum", "expected"),
    [
        (0.5, 0.5, None),
        (0.49, 0.5, DenyReason.MIN_CONFIDENCE),
        (0.0, 0.0, None),
        (math.nan, 0.0, DenyReason.MIN_CONFIDENCE),
    ],
)
def test_confidence_check_denies_when_below_minimum(
    confidence: float, minimum: float, expected: DenyReason | None
) -> None:
    """A decision less confident than the minimum (or with NaN confidence) is denied."""
    result = check_confidence(confidence=confidence, min_confidence=minimum)
    assert _reason(result) == expected


@pytest.mark.parametrize(
    ("last_start_ms", "now_ms", "expected"),
    [
        # Bars of 1,000 ms, limit 3 missing bars. The bar starting at 0 closes at 1,000.
        (0, 1_000, None),  # decided right at the close
        (0, 3_999, None),  # two bars late, the third not yet due
        (0, 4_000, DenyReason.STALE_FEED),  # three bars missing
        (5_000, 4_000, None),  # a clock behind the feed is not stale
        (None, 4_000, DenyReason.STALE_FEED),  # never seen a bar
    ],
)
def test_stale_feed_check_denies_when_bars_are_missing(
    last_start_ms: int | None, now_ms: int, expected: DenyReason | None
) -> None:
    """Opening is denied once `stale_feed_bars` bars are overdue by exchange time."""
    result = check_stale_feed(
        last_bar_start_ms=last_start_ms, interval_ms=1_000, now_ms=now_ms, stale_feed_bars=3
    )
    assert _reason(result) == expected


@pytest.mark.parametrize(
    ("gap_bars", "expected"),
    [(0, None), (2, None), (3, DenyReason.STALE_FEED), (50, DenyReason.STALE_FEED)],
)
def test_stale_feed_check_denies_the_first_bar_after_a_gap(
    gap_bars: int, expected: DenyReason | None
) -> None:
    """A bar that arrives after `stale_feed_bars` missing ones opens nothing, though it is new."""
    result = check_stale_feed(
        last_bar_start_ms=0, interval_ms=1_000, now_ms=1_000, stale_feed_bars=3, gap_bars=gap_bars
    )
    assert _reason(result) == expected


@pytest.mark.parametrize(
    ("price", "previous", "expected"),
    [
        (100.0, None, None),
        (100.0, 90.0, None),  # +11 %
        (100.0, 80.0, DenyReason.PRICE_JUMP),  # +25 %
        (60.0, 80.0, DenyReason.PRICE_JUMP),  # -25 %
        (0.0, 80.0, DenyReason.PRICE_INVALID),
        (-1.0, None, DenyReason.PRICE_INVALID),
        (math.nan, 80.0, DenyReason.PRICE_INVALID),
        (math.inf, 80.0, DenyReason.PRICE_INVALID),
        (100.0, math.nan, None),  # no usable previous price: nothing to compare
    ],
)
def test_price_check_denies_when_invalid_or_jumping(
    price: float, previous: float | None, expected: DenyReason | None
) -> None:
    """Non-finite or non-positive prices, and moves beyond the bound, are denied."""
    result = check_price(price=price, previous_price=previous, max_price_jump=0.2)
    assert _reason(result) == expected


def test_denials_carry_detail_when_refusing() -> None:
    """A denial names the numbers that broke the rule, for the risk_events detail."""
    result = check_position_notional(notional_usdt=D("6000"), max_notional_usdt=D("5000"))
    assert result is not None
    assert "6000" in result.detail
    assert "5000" in result.detail

"""The full risk layer: sizing a decision into intents, every check in place, and the states."""

from __future__ import annotations

import dataclasses
import json
import math
from decimal import Decimal

import pytest

from risk.base import RiskLayerPolicy
from risk.gate import OrderIntent
from risk.layer import ORDER_DENIED, RiskLayer
from risk.machine import StateReason
from risk.state import TradingState
from tests.risk.builders import (
    ETH,
    INTERVAL_MS,
    bar,
    context,
    decision,
    feed,
    flat_layer,
    risk_limits,
)
from trader.domain import Action, Side

D = Decimal


def _legs(approved: list[OrderIntent]) -> list[tuple[Side, Decimal, bool, str]]:
    return [(i.side, i.qty, i.reduce_only, i.leg) for i in approved]


@pytest.mark.parametrize(
    ("action", "position", "expected"),
    [
        (Action.HOLD, "0", []),
        (Action.BUY_LONG, "0", [(Side.BUY, "0.100", False, "open")]),
        (Action.BUY_LONG, "0.04", [(Side.BUY, "0.060", False, "open")]),
        (Action.BUY_LONG, "0.100", []),
        (
            Action.BUY_LONG,
            "-0.05",
            [(Side.BUY, "0.05", True, "close"), (Side.BUY, "0.100", False, "open")],
        ),
        (Action.SELL_SHORT, "0", [(Side.SELL, "0.100", False, "open")]),
        (Action.CLOSE_LONG, "0.05", [(Side.SELL, "0.05", True, "close")]),
        (Action.CLOSE_LONG, "-0.05", []),
        (Action.CLOSE_SHORT, "-0.05", [(Side.BUY, "0.05", True, "close")]),
        (Action.CLOSE_SHORT, "0", []),
    ],
)
def test_review_sizes_legs_when_deciding(
    action: Action, position: str, expected: list[tuple[Side, str, bool, str]]
) -> None:
    """Each action becomes the right legs for the current position (size 1 = the 5,000 cap)."""
    layer, now_ms = flat_layer()
    verdict = layer.review(
        decision(action), context=context(now_ms, positions={"BTCUSDT": position})
    )
    assert _legs(verdict.approved) == [(s, D(q), r, leg) for s, q, r, leg in expected]
    assert verdict.denied == []
    assert verdict.events == []


def test_opening_gets_atr_stops_when_strategy_gives_none() -> None:
    """An opening without levels gets a stop 2 ATRs and a take-profit 3 ATRs away."""
    layer, now_ms = flat_layer()  # bars range 0.2 % of 50,000: ATR 100
    verdict = layer.review(decision(Action.SELL_SHORT), context=context(now_ms))
    (intent,) = verdict.approved
    assert (intent.stop_loss, intent.take_profit) == pytest.approx((50_200.0, 49_700.0))
    given = layer.review(
        decision(Action.BUY_LONG, stop_loss=49_000.0, take_profit=55_000.0), context=context(now_ms)
    )
    assert (given.approved[0].stop_loss, given.approved[0].take_profit) == (49_000.0, 55_000.0)


def test_opening_gets_only_strategy_levels_when_it_declines_default_exits() -> None:
    """`default_exits=False` (buy_hold): no ATR level is added, a level the strategy gave stays,
    and the size is the same volatility-targeted one."""
    layer, now_ms = flat_layer()
    bare = dataclasses.replace(decision(Action.BUY_LONG), default_exits=False)
    (intent,) = layer.review(bare, context=context(now_ms)).approved
    assert (intent.stop_loss, intent.take_profit) == (None, None)
    layer, now_ms = flat_layer()
    (protected,) = layer.review(decision(Action.BUY_LONG), context=context(now_ms)).approved
    assert intent.qty == protected.qty
    stop_only = dataclasses.replace(bare, stop_loss=49_000.0)
    layer, now_ms = flat_layer()
    (kept,) = layer.review(stop_only, context=context(now_ms)).approved
    assert (kept.stop_loss, kept.take_profit) == (49_000.0, None)


@pytest.mark.parametrize(
    ("size", "confidence", "budget", "qty"),
    [
        (1.0, 1.0, None, "0.100"),
        (0.5, 1.0, None, "0.050"),
        (1.0, 0.5, None, "0.050"),
        (1.0, 1.0, 0.25, "0.025"),
        (0.5, 0.5, 0.5, "0.012"),  # 625 USDT = 0.0125 BTC, rounded down
    ],
)
def test_size_scales_by_confidence_and_budget_when_given(
    size: float, confidence: float, budget: float | None, qty: str
) -> None:
    """The target is the cap times size, confidence and the strategic risk budget."""
    layer, now_ms = flat_layer()
    verdict = layer.review(
        decision(Action.BUY_LONG, size=size, confidence=confidence),
        context=context(now_ms, risk_budget=budget),
    )
    assert [i.qty for i in verdict.approved] == [D(qty)]


def test_volatility_target_binds_when_atr_is_large() -> None:
    """With a 2 % bar range (ATR 1,000) the 1 % risk target is 2,500 USDT, under the cap."""
    layer = RiskLayer(risk_limits())
    now_ms = 0
    for index in range(20):
        layer.on_bar(bar("BTCUSDT", index, 50_000.0, spread=0.02))
        now_ms = bar("BTCUSDT", index, 50_000.0).close_ms
    verdict = layer.review(decision(Action.BUY_LONG), context=context(now_ms))
    assert [i.qty for i in verdict.approved] == [D("0.050")]


def test_leverage_caps_position_when_equity_is_small() -> None:
    """With 1,000 USDT equity and leverage 3, a position is worth at most 3,000 USDT."""
    layer, now_ms = flat_layer(max_gross_exposure=5.0, risk_per_trade=0.1)
    verdict = layer.review(decision(Action.BUY_LONG), context=context(now_ms, equity="1000"))
    assert [i.qty for i in verdict.approved] == [D("0.060")]


def _denied(
    layer: RiskLayer,
    action: Action,
    now_ms: int,
    *,
    equity: str = "10000",
    positions: dict[str, str] | None = None,
) -> list[str]:
    """Review `action` and return the denial reasons (each must come with its event)."""
    verdict = layer.review(
        decision(action), context=context(now_ms, equity=equity, positions=positions)
    )
    assert [event.kind for event in verdict.events] == [ORDER_DENIED] * len(verdict.denied)
    return [denial.reason for denial in verdict.denied]


def test_opening_is_denied_but_closing_passes_when_halted() -> None:
    """Once HALTED nothing opens; closes still pass; each denial yields an order_denied event."""
    layer, now_ms = flat_layer()
    layer.kill(reason="test", now_ms=now_ms)
    assert _denied(layer, Action.BUY_LONG, now_ms) == ["state_halted"]
    closing = layer.review(
        decision(Action.CLOSE_LONG), context=context(now_ms, positions={"BTCUSDT": "0.1"})
    )
    assert [i.leg for i in closing.approved] == ["close"]


def test_flip_closes_but_does_not_reopen_when_reducing() -> None:
    """In REDUCING the closing leg of a flip passes and the opening leg is denied."""
    layer, now_ms = flat_layer(max_daily_loss=0.5)
    layer.on_mark(equity=D("10000"), now_ms=now_ms)
    assert layer.on_mark(equity=D("8900"), now_ms=now_ms).events[0].kind == "reducing"
    verdict = layer.review(
        decision(Action.SELL_SHORT), context=context(now_ms, positions={"BTCUSDT": "0.05"})
    )
    assert _legs(verdict.approved) == [(Side.SELL, D("0.05"), True, "close")]
    assert [d.reason for d in verdict.denied] == ["state_reducing"]
    assert verdict.events[0].detail.startswith("state_reducing: ")


def test_opening_is_denied_when_feed_is_stale() -> None:
    """Three overdue bars stop openings on the symbol; closing it still passes."""
    layer, now_ms = flat_layer()
    stale_ms = now_ms + 3 * INTERVAL_MS
    assert _denied(layer, Action.BUY_LONG, stale_ms) == ["stale_feed"]
    assert _denied(layer, Action.BUY_LONG, stale_ms - 1) == []
    closing = layer.review(
        decision(Action.CLOSE_SHORT), context=context(stale_ms, positions={"BTCUSDT": "-1"})
    )
    assert len(closing.approved) == 1


def test_opening_is_denied_when_price_jumps_or_is_unknown() -> None:
    """A close 30 % off the previous one opens nothing; nor does a symbol never seen."""
    layer, now_ms = flat_layer()
    layer.on_bar(bar("BTCUSDT", 20, 65_000.0))
    assert _denied(layer, Action.BUY_LONG, now_ms + INTERVAL_MS) == ["price_jump"]
    unknown = layer.review(decision(Action.BUY_LONG, "SOLUSDT"), context=context(now_ms))
    assert [(d.reason, d.intent.qty) for d in unknown.denied] == [("price_invalid", D(0))]


def test_opening_is_denied_when_a_held_symbol_has_no_price() -> None:
    """Exposure cannot be valued without every held symbol's price: fail closed."""
    layer, now_ms = flat_layer()
    got = _denied(layer, Action.BUY_LONG, now_ms, positions={"XRPUSDT": "100"})
    assert got == ["price_invalid"]


def test_opening_is_denied_when_confidence_is_low() -> None:
    """Decisions under min_confidence open nothing."""
    layer, now_ms = flat_layer(min_confidence=0.6)
    verdict = layer.review(decision(Action.BUY_LONG, confidence=0.5), context=context(now_ms))
    assert [d.reason for d in verdict.denied] == ["min_confidence"]


def test_opening_is_denied_when_rate_window_is_full() -> None:
    """After max_orders_per_minute orders in a minute openings wait; reducing orders do not."""
    layer, now_ms = flat_layer(max_orders_per_minute=2)
    for _ in range(2):
        assert len(layer.review(decision(Action.BUY_LONG), context=context(now_ms)).approved) == 1
    assert _denied(layer, Action.BUY_LONG, now_ms) == ["max_orders_per_minute"]
    closing = layer.review(
        decision(Action.CLOSE_LONG), context=context(now_ms, positions={"BTCUSDT": "1"})
    )
    assert len(closing.approved) == 1
    later = now_ms + 60_000
    assert len(layer.review(decision(Action.BUY_LONG), context=context(later)).approved) == 1


def test_order_is_cut_to_gross_room_when_other_positions_are_large() -> None:
    """Holding 17,000 USDT of ETH at 2x gross on 10,000 equity leaves 3,000 USDT for BTC."""
    layer, now_ms = flat_layer()
    feed(layer, "ETHUSDT", [2_000.0] * 20)
    verdict = layer.review(
        decision(Action.BUY_LONG), context=context(now_ms, positions={"ETHUSDT": "-8.5"})
    )
    assert [i.qty for i in verdict.approved] == [D("0.060")]


def test_opening_is_denied_when_no_gross_room_is_left() -> None:
    """With the gross cap used up the order is denied naming that cap."""
    layer, now_ms = flat_layer()
    feed(layer, "ETHUSDT", [2_000.0] * 20)
    assert _denied(layer, Action.BUY_LONG, now_ms, positions={"ETHUSDT": "10"}) == [
        "max_gross_exposure"
    ]


@pytest.mark.parametrize(
    ("eth_qty", "btc_action", "eth_moves", "qty"),
    [
        ("4", Action.BUY_LONG, 1.0, "0.040"),  # long with long, moving together: 2,000 room
        ("4", Action.SELL_SHORT, 1.0, "0.100"),  # a short against a correlated long is a hedge
        ("-4", Action.SELL_SHORT, 1.0, "0.040"),  # two shorts moving together count together
        ("-4", Action.BUY_LONG, -1.0, "0.040"),  # long BTC + short ETH that moves opposite
        ("4", Action.BUY_LONG, 0.0, "0.100"),  # unrelated moves: not counted together
    ],
)
def test_correlated_positions_share_a_cap_when_moving_together(
    eth_qty: str, btc_action: Action, eth_moves: float, qty: str
) -> None:
    """Positions whose direction-adjusted return correlation >= 0.7 share 1 x equity."""
    layer = RiskLayer(risk_limits(max_correlated_exposure=1.0))
    wave = [math.sin(i * 0.9) * 0.004 for i in range(40)]
    other = [math.cos(i * 2.3) * 0.004 for i in range(40)]
    btc = [50_000.0 * (1 + w) for w in wave]
    eth = [
        2_000.0 * (1 + (eth_moves * w if eth_moves else o))
        for w, o in zip(wave, other, strict=True)
    ]
    now_ms = feed(layer, "BTCUSDT", btc)
    feed(layer, "ETHUSDT", eth)
    # ETH long 4 x ~2,000 = ~8,000 USDT of the 10,000 cap; sized on the last close.
    eth_value = D(eth_qty).copy_abs() * D(repr(eth[-1]))
    verdict = layer.review(
        decision(btc_action), context=context(now_ms, positions={"ETHUSDT": eth_qty})
    )
    expected = D(qty)
    if qty == "0.040":  # the room is what ETH leaves of 10,000 at its last price
        room = (D(10_000) - eth_value) / D(repr(btc[-1]))
        expected = room.quantize(D("0.001"), rounding="ROUND_DOWN")
    assert [i.qty for i in verdict.approved] == [expected]


def test_opening_is_denied_when_correlated_group_is_full() -> None:
    """A long ETH moving with BTC that already fills the group's cap leaves no room for BTC."""
    layer = RiskLayer(risk_limits(max_correlated_exposure=1.0))
    wave = [math.sin(i * 0.9) * 0.004 for i in range(40)]
    now_ms = feed(layer, "BTCUSDT", [50_000.0 * (1 + w) for w in wave])
    feed(layer, "ETHUSDT", [2_000.0 * (1 + w) for w in wave])
    got = _denied(layer, Action.BUY_LONG, now_ms, positions={"ETHUSDT": "5.5"})
    assert got == ["max_correlated_exposure"]


def test_opening_is_denied_when_below_minimum_from_flat() -> None:
    """A tiny target from flat is denied as below the minimum; a tiny top-up is simply skipped."""
    layer, now_ms = flat_layer()
    tiny = layer.review(decision(Action.BUY_LONG, size=0.0005), context=context(now_ms))
    assert [d.reason for d in tiny.denied] == ["below_min_qty"]
    top_up = layer.review(
        decision(Action.BUY_LONG), context=context(now_ms, positions={"BTCUSDT": "0.0995"})
    )
    assert (top_up.approved, top_up.denied) == ([], [])


def test_opening_is_denied_when_below_min_notional() -> None:
    """An ETH order worth under 5 USDT is denied as below the minimum notional."""
    layer = RiskLayer(risk_limits())
    now_ms = feed(layer, "ETHUSDT", [400.0] * 20)
    verdict = layer.review(
        decision(Action.BUY_LONG, "ETHUSDT", size=0.0009), context=context(now_ms, limits=ETH)
    )
    assert [d.reason for d in verdict.denied] == ["below_min_notional"]


def test_drawdown_halts_and_flattens_when_marked_below_limit() -> None:
    """Mark-to-market equity 20 % under its peak halts with reason max_drawdown and flattens."""
    layer, now_ms = flat_layer()
    layer.on_mark(equity=D("12000"), now_ms=now_ms)
    outcome = layer.on_mark(equity=D("9600"), now_ms=now_ms + INTERVAL_MS)
    assert (layer.state, layer.reason) == (TradingState.HALTED, StateReason.MAX_DRAWDOWN)
    assert outcome.flatten
    assert [e.kind for e in outcome.events] == ["halted"]
    assert layer.status()["drawdown"] == pytest.approx(0.2)


def test_resume_measures_from_current_equity_when_lifting_halt() -> None:
    """After resume the old peak no longer counts, so the next mark does not re-halt."""
    layer, now_ms = flat_layer()
    layer.on_mark(equity=D("10000"), now_ms=now_ms)
    layer.on_mark(equity=D("7000"), now_ms=now_ms + 1)
    assert layer.resume(reason="reviewed", now_ms=now_ms + 2).events[0].kind == "active"
    assert layer.on_mark(equity=D("7000"), now_ms=now_ms + 3).events == []
    assert layer.state is TradingState.ACTIVE
    assert len(layer.review(decision(Action.BUY_LONG), context=context(now_ms)).approved) == 1


def test_kill_survives_restart_when_state_is_saved() -> None:
    """A killed layer restored from JSON state is still HALTED by kill until resume."""
    layer, now_ms = flat_layer()
    layer.kill(reason="ops", now_ms=now_ms, flatten=False)
    saved = json.loads(json.dumps(layer.state_dict()))
    restored = RiskLayer(risk_limits())
    restored.load_state_dict(saved)
    feed(restored, "BTCUSDT", [50_000.0] * 20)  # the engine's warm() re-feeds the bars
    assert (restored.state, restored.reason) == (TradingState.HALTED, StateReason.KILL)
    restored.on_mark(equity=D("10000"), now_ms=now_ms)
    assert _denied(restored, Action.BUY_LONG, now_ms) == ["state_halted"]
    restored.resume(reason="ok", now_ms=now_ms)
    assert _denied(restored, Action.BUY_LONG, now_ms) == []


def test_restored_layer_reviews_alike_when_state_round_trips() -> None:
    """Drawdown and rate state survive JSON, and the market view (ATR, correlation) is rebuilt
    from the same bars, as the engine's warm() re-feeds them: same input, same verdict."""
    layer, now_ms = flat_layer(max_orders_per_minute=3, max_daily_loss=0.5)
    layer.on_mark(equity=D("10000"), now_ms=now_ms)
    layer.review(decision(Action.BUY_LONG), context=context(now_ms))
    restored = RiskLayer(risk_limits(max_orders_per_minute=3, max_daily_loss=0.5))
    restored.load_state_dict(json.loads(json.dumps(layer.state_dict())))
    feed(restored, "BTCUSDT", [50_000.0] * 20)
    assert restored.state_dict() == layer.state_dict()
    assert "market" not in layer.state_dict()  # a pure function of the bars: not in snapshots
    for one in (layer, restored):
        one.on_bar(bar("BTCUSDT", 20, 50_100.0))
    after = now_ms + INTERVAL_MS
    got = [
        one.review(decision(Action.BUY_LONG), context=context(after)) for one in (layer, restored)
    ]
    assert got[0] == got[1]
    assert restored.on_mark(equity=D("8900"), now_ms=after).events[0].kind == "reducing"


def test_gate_state_is_kept_when_loading_foundation_snapshot() -> None:
    """A run saved by the foundation gate resumes HALTED with the gate's text as detail."""
    layer = RiskLayer(risk_limits())
    layer.load_state_dict({"state": "HALTED", "reason": "max_drawdown 0.2100 >= 0.2"})
    assert (layer.state, layer.reason) == (TradingState.HALTED, StateReason.MAX_DRAWDOWN)
    assert layer.status()["detail"] == "max_drawdown 0.2100 >= 0.2"


def test_flatten_closes_every_position_when_halting() -> None:
    """Flatten intents are reduce-only and cover every non-zero position, sorted by symbol."""
    layer = RiskLayer(risk_limits())
    intents = layer.flatten_intents({"ETHUSDT": D("-2"), "BTCUSDT": D("0.5"), "SOLUSDT": D(0)})
    assert [(i.symbol, i.side, i.qty, i.reduce_only, i.leg) for i in intents] == [
        ("BTCUSDT", Side.SELL, D("0.5"), True, "flatten"),
        ("ETHUSDT", Side.BUY, D("2"), True, "flatten"),
    ]


def test_layer_meets_policy_protocol_when_used_by_engine() -> None:
    """RiskLayer is what the engine's RiskLayerPolicy seam expects (checked by mypy too)."""
    policy: RiskLayerPolicy = RiskLayer(risk_limits())
    assert policy.state is TradingState.ACTIVE
    assert policy.status()["reason"] == "start"

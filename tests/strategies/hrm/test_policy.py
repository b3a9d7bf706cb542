"""Outputs to decisions: the forecast rule, the policy head, sizes, stops and decision types."""

from __future__ import annotations

import dataclasses

import pytest

from strategies.base import AccountState
from strategies.hrm.policy import DecisionContext, PolicySettings, SymbolOutputs, to_decision
from trader.domain import Action, Bar, DecisionType

SETTINGS = PolicySettings()  # round trip 0.0011
BAR = Bar("BTCUSDT", "5", 0, 100.0, 101.0, 99.0, 100.0, 1.0, 100.0)
OUT = SymbolOutputs(
    action=Action.HOLD,
    size=0.5,
    confidence=0.8,
    stop_loss_atr=1.5,
    take_profit_atr=3.0,
    expected_return=0.0,
    up_probability=0.5,
    risk_budget=0.6,
)


def _ctx(qty: float = 0.0, *, strategic: bool = False) -> DecisionContext:
    account = AccountState(10_000.0, qty, qty * 100.0, 100.0, 0.0, 0.0, 0)
    return DecisionContext(
        BAR, account, atr=2.0, strategic=strategic, act_steps=2, model_version="v"
    )


@pytest.mark.parametrize(
    ("expected_return", "up", "confidence", "qty", "action", "kind"),
    [
        (0.002, 0.6, 0.8, 0.0, Action.BUY_LONG, DecisionType.TACTICAL),
        (-0.002, 0.4, 0.8, 0.0, Action.SELL_SHORT, DecisionType.TACTICAL),
        (0.0005, 0.6, 0.8, 0.0, Action.HOLD, DecisionType.PROCEDURAL),  # below the fees
        (0.002, 0.6, 0.5, 0.0, Action.HOLD, DecisionType.PROCEDURAL),  # not confident
        (0.002, 0.4, 0.8, 0.0, Action.HOLD, DecisionType.PROCEDURAL),  # heads disagree
        (0.002, 0.6, 0.8, 1.0, Action.HOLD, DecisionType.PROCEDURAL),  # already long
        (-0.002, 0.4, 0.8, 1.0, Action.SELL_SHORT, DecisionType.STRATEGIC),  # flip
        (-0.0008, 0.4, 0.8, 1.0, Action.CLOSE_LONG, DecisionType.STRATEGIC),  # exit
        (0.0008, 0.6, 0.8, -1.0, Action.CLOSE_SHORT, DecisionType.STRATEGIC),  # exit
        (-0.0003, 0.4, 0.8, 1.0, Action.HOLD, DecisionType.PROCEDURAL),  # small adverse move
    ],
)
def test_rule_trades_past_fees_when_policy_untrained(
    expected_return: float,
    up: float,
    confidence: float,
    qty: float,
    action: Action,
    kind: DecisionType,
) -> None:
    """The forecast rule enters past one round trip of fees, flips, exits and holds as tabled."""
    out = dataclasses.replace(
        OUT, expected_return=expected_return, up_probability=up, confidence=confidence
    )
    decision = to_decision(out, _ctx(qty), policy_trained=False, settings=SETTINGS)
    assert decision.action is action
    assert decision.decision_type is kind


def test_entry_carries_stops_and_budgeted_size_when_opening() -> None:
    """A long entry gets ATR stops below/above the close and size = risk budget (rule)."""
    out = dataclasses.replace(OUT, expected_return=0.002, up_probability=0.6)
    decision = to_decision(out, _ctx(), policy_trained=False, settings=SETTINGS)
    assert decision.stop_loss == pytest.approx(100.0 - 1.5 * 2.0)
    assert decision.take_profit == pytest.approx(100.0 + 3.0 * 2.0)
    assert decision.size == pytest.approx(0.6)
    assert decision.confidence == pytest.approx(0.8)
    assert (decision.act_steps, decision.model_version, decision.strategic) == (2, "v", False)
    short = to_decision(
        dataclasses.replace(out, expected_return=-0.002, up_probability=0.4),
        _ctx(),
        policy_trained=False,
        settings=SETTINGS,
    )
    assert short.stop_loss == pytest.approx(103.0)
    assert short.take_profit == pytest.approx(94.0)


@pytest.mark.parametrize(
    ("head", "qty", "action", "kind"),
    [
        (Action.BUY_LONG, 0.0, Action.BUY_LONG, DecisionType.TACTICAL),
        (Action.BUY_LONG, 1.0, Action.HOLD, DecisionType.PROCEDURAL),
        (Action.SELL_SHORT, 1.0, Action.SELL_SHORT, DecisionType.STRATEGIC),
        (Action.CLOSE_LONG, 0.0, Action.HOLD, DecisionType.PROCEDURAL),
        (Action.CLOSE_LONG, 1.0, Action.CLOSE_LONG, DecisionType.STRATEGIC),
        (Action.CLOSE_SHORT, 1.0, Action.HOLD, DecisionType.PROCEDURAL),
    ],
)
def test_policy_head_acts_sensibly_when_trained(
    head: Action, qty: float, action: Action, kind: DecisionType
) -> None:
    """A trained policy's argmax is used, with actions that do not fit the position held."""
    decision = to_decision(
        dataclasses.replace(OUT, action=head), _ctx(qty), policy_trained=True, settings=SETTINGS
    )
    assert decision.action is action
    assert decision.decision_type is kind
    if action is Action.BUY_LONG:
        assert decision.size == pytest.approx(0.5 * 0.6)


def test_low_risk_budget_forces_close_when_positioned() -> None:
    """Below the minimum budget a position is closed (strategic) and nothing opens."""
    out = dataclasses.replace(OUT, risk_budget=0.05, expected_return=0.01, up_probability=0.9)
    closed = to_decision(out, _ctx(-1.0), policy_trained=False, settings=SETTINGS)
    assert closed.action is Action.CLOSE_SHORT
    assert closed.decision_type is DecisionType.STRATEGIC
    flat = to_decision(out, _ctx(0.0), policy_trained=False, settings=SETTINGS)
    assert flat.action is Action.HOLD


def test_hold_is_strategic_when_strategic_module_ran() -> None:
    """Any decision on a bar that ran the strategic module is strategic (DESIGN.md)."""
    decision = to_decision(OUT, _ctx(strategic=True), policy_trained=False, settings=SETTINGS)
    assert decision.action is Action.HOLD
    assert decision.decision_type is DecisionType.STRATEGIC
    assert decision.strategic

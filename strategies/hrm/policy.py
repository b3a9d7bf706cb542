"""From one symbol's model outputs to a Decision: the action, its size, stops and its type.

Owns the rule that turns heads into a `Decision`: the policy head's action and size when the
checkpoint says the policy was trained, else a calibrated forecast rule (predicted return
against round-trip taker fees, direction and confidence); sizes carry the strategic risk budget;
stop-loss and take-profit prices come from the ATR distances; the decision type follows
DESIGN.md (strategic when the strategic module ran, on flips, exits and risk-forced closes;
tactical for entries; procedural for holds). It is pure: no torch, no state, no I/O.

Sizing note: `Decision.size` here is the policy's fraction times the risk budget. It is not
multiplied by confidence, because the risk layer already scales by `Decision.confidence`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from strategies.base import AccountState
from trader.domain import Action, Bar, Decision, DecisionType


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """Thresholds of the forecast rule and of the policy head.

    Attributes:
        taker_fee: fee per side as a fraction of notional (Bybit taker 0.055%).
        entry_fee_multiple: the predicted return must exceed this many round trips to enter.
        exit_fee_multiple: a predicted move against the position of this many round trips
            closes it (a move past the entry threshold flips it instead).
        min_confidence: no entry or flip below this confidence.
        min_risk_budget: below this strategic budget nothing opens and positions are closed.
        horizon_bars: the return head the rule reads: 1 is the next-bar head, else one of the
            model's horizons (the return is then compared per trade, not per bar).
    """

    taker_fee: float = 0.00055
    entry_fee_multiple: float = 1.0
    exit_fee_multiple: float = 0.5
    min_confidence: float = 0.55
    min_risk_budget: float = 0.1
    horizon_bars: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.taker_fee < 0.1:
            raise ValueError(f"taker_fee {self.taker_fee} is not a fraction of notional")
        if not 0.0 <= self.exit_fee_multiple <= self.entry_fee_multiple:
            raise ValueError("need 0 <= exit_fee_multiple <= entry_fee_multiple")
        if not (0.0 <= self.min_confidence <= 1.0 and 0.0 <= self.min_risk_budget <= 1.0):
            raise ValueError("min_confidence and min_risk_budget must be in [0, 1]")
        if self.horizon_bars < 1:
            raise ValueError("horizon_bars must be at least 1")

    @property
    def round_trip(self) -> float:
        """Fees of opening and closing once, as a fraction (a log return of that size)."""
        return 2.0 * self.taker_fee

    def at_fee(self, taker_fee: float | None) -> PolicySettings:
        """These thresholds for a run paying `taker_fee` per side (None: as calibrated).

        The entry and exit thresholds are multiples of the round-trip fee, so they carry over
        to another fee; a run must weigh predicted returns against the fees it really pays.
        """
        if taker_fee is None or taker_fee == self.taker_fee:
            return self
        return dataclasses.replace(self, taker_fee=taker_fee)


@dataclass(frozen=True, slots=True)
class SymbolOutputs:
    """One row of the model's outputs as plain floats; returns are log returns (not ATR)."""

    action: Action  # the policy head's argmax
    size: float
    confidence: float
    stop_loss_atr: float
    take_profit_atr: float
    expected_return: float  # over `PolicySettings.horizon_bars`
    up_probability: float  # sigmoid of the direction logit
    risk_budget: float


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """What the mapping needs besides the outputs (not hashable: `AccountState` is not)."""

    bar: Bar
    account: AccountState
    atr: float  # absolute ATR in price units, positive
    strategic: bool  # the strategic module ran for this symbol on this bar
    act_steps: int
    model_version: str


def to_decision(
    out: SymbolOutputs, ctx: DecisionContext, *, policy_trained: bool, settings: PolicySettings
) -> Decision:
    """Map one symbol's outputs to its Decision (see the module docstring)."""
    held = _side(ctx.account.position_qty)
    if out.risk_budget < settings.min_risk_budget:
        action = _close(held)  # the plan says stand aside: close what is open, open nothing
        forced = action is not Action.HOLD
    else:
        forced = False
        action = _policy_action(out.action, held) if policy_trained else _rule(out, held, settings)
    size = _size(out, policy_trained) if action in (Action.BUY_LONG, Action.SELL_SHORT) else 0.0
    flips = (held > 0 and action is Action.SELL_SHORT) or (held < 0 and action is Action.BUY_LONG)
    exits = action in (Action.CLOSE_LONG, Action.CLOSE_SHORT)
    if ctx.strategic or flips or exits or forced:
        kind = DecisionType.STRATEGIC
    elif action is Action.HOLD:
        kind = DecisionType.PROCEDURAL
    else:
        kind = DecisionType.TACTICAL
    stop_loss, take_profit = _stops(action, out, ctx)
    return Decision(
        symbol=ctx.bar.symbol,
        bar_start_ms=ctx.bar.start_ms,
        action=action,
        size=size,
        confidence=_unit(out.confidence),
        stop_loss=stop_loss,
        take_profit=take_profit,
        decision_type=kind,
        strategic=ctx.strategic,
        act_steps=ctx.act_steps,
        model_version=ctx.model_version,
    )


def _side(qty: float) -> int:
    return 1 if qty > 0 else -1 if qty < 0 else 0


def _close(held: int) -> Action:
    return Action.CLOSE_LONG if held > 0 else Action.CLOSE_SHORT if held < 0 else Action.HOLD


def _policy_action(action: Action, held: int) -> Action:
    """The policy's action, with the ones that make no sense for the position made HOLD."""
    if (action is Action.CLOSE_LONG and held <= 0) or (action is Action.CLOSE_SHORT and held >= 0):
        return Action.HOLD
    if (action is Action.BUY_LONG and held > 0) or (action is Action.SELL_SHORT and held < 0):
        return Action.HOLD  # already on that side; the risk layer tops up from size alone
    return action


def _rule(out: SymbolOutputs, held: int, settings: PolicySettings) -> Action:
    """The calibrated forecast rule: enter or flip past the fees, exit on a smaller move."""
    edge = out.expected_return
    confident = out.confidence >= settings.min_confidence
    entry = settings.entry_fee_multiple * settings.round_trip
    want = 0
    if confident and edge > entry and out.up_probability > 0.5:
        want = 1
    elif confident and edge < -entry and out.up_probability < 0.5:
        want = -1
    if want != 0 and want != held:
        return Action.BUY_LONG if want > 0 else Action.SELL_SHORT
    if held != 0 and edge * held < -settings.exit_fee_multiple * settings.round_trip:
        return _close(held)
    return Action.HOLD


def _size(out: SymbolOutputs, policy_trained: bool) -> float:
    base = _unit(out.size) if policy_trained else 1.0
    return _unit(base * _unit(out.risk_budget))


def _stops(action: Action, out: SymbolOutputs, ctx: DecisionContext) -> tuple[float | None, ...]:
    if action is Action.BUY_LONG:
        direction = 1.0
    elif action is Action.SELL_SHORT:
        direction = -1.0
    else:
        return None, None
    price = ctx.bar.close
    stop = price - direction * out.stop_loss_atr * ctx.atr
    take = price + direction * out.take_profit_atr * ctx.atr
    if not (stop > 0.0 and take > 0.0 and math.isfinite(stop) and math.isfinite(take)):
        return None, None  # let risk choose rather than send a nonsensical level
    return stop, take


def _unit(x: float) -> float:
    return min(max(x, 0.0), 1.0) if math.isfinite(x) else 0.0

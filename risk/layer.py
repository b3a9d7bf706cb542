"""The full risk layer: the last word between a decision and a broker.

Owns composing the pure parts into one `RiskLayerPolicy`: the market facts and return
correlations it is fed bar by bar, drawdown and daily loss from mark-to-market equity, the
trading-state machine with its kill switch, the order-rate window, sizing, and the pre-trade
checks. It turns a decision into order intents, approved or denied with a reason, and every
denial and state transition into a `RiskEvent`.

How an opening (or adding) order is made, in order:

1. the price must be sane (`check_price`); sizing needs it;
2. the target position is the smallest of the per-symbol notional cap, `max_leverage` x equity
   and the volatility target, times size x confidence x risk budget; the order is the part of
   it not yet held (none when the position is already there);
3. state, confidence, stale feed, price jump and order rate must pass;
4. the order is cut to the room left under gross and correlated exposure and rounded down to
   the qty step; cut below the instrument's minimum it is denied with the binding limit, or as
   below the minimum when opening from flat (a top-up below one lot is simply not sent);
5. every limit check runs on the final quantity (it cannot fail after 2-4; it is the proof);
6. missing stop-loss / take-profit levels are filled in from the ATR, unless the decision
   declines them (`default_exits=False`: a passive benchmark such as `buy_hold`).

Orders that only reduce a position (closes, the closing leg of a flip, flattening) always pass,
in every state, and count towards the order rate.

It must not know which model produced a decision, read a clock, or do I/O.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from risk.checks import (
    Deny,
    DenyReason,
    check_confidence,
    check_order_rate,
    check_order_size,
    check_price,
    check_stale_feed,
    check_state,
)
from risk.context import RiskContext
from risk.correlation import RollingCorrelation
from risk.drawdown import AccountMarks, DrawdownTracker
from risk.exposure import Exposure, ExposureCaps, check_limits, exposure_around, room_usdt
from risk.gate import Denial, OrderIntent, RiskEvent, Verdict, closing_intent
from risk.limits import RiskLimits
from risk.machine import RiskOutcome, StateReason, TradingStateMachine
from risk.market import MarketTracker, SymbolMarket
from risk.rate import OrderRateWindow
from risk.sizing import (
    default_protection,
    round_down_to_step,
    target_notional,
    to_decimal,
    vol_target_notional,
)
from risk.state import TradingState
from trader.domain import Action, Bar, Decision, Side

#: Event kind of a refused order intent.
ORDER_DENIED = "order_denied"
#: Version of `RiskLayer.state_dict`; a dict without it is the foundation gate's.
STATE_VERSION = 2
_ZERO = Decimal(0)
#: The reason a state restored from the foundation gate (which kept only free text) gets.
_LEGACY_REASON = {
    TradingState.ACTIVE: StateReason.START,
    TradingState.REDUCING: StateReason.SOFT_DRAWDOWN,
    TradingState.HALTED: StateReason.MAX_DRAWDOWN,
}


class RiskLayer:
    """Sizes and checks decisions, tracks drawdown, and holds the trading state.

    Args:
        limits: the numbers to enforce.
    """

    def __init__(self, limits: RiskLimits) -> None:
        self.limits = limits
        self._caps = ExposureCaps(
            max_position_notional_usdt=to_decimal(limits.max_position_notional_usdt),
            max_leverage=to_decimal(limits.max_leverage),
            max_gross_exposure=to_decimal(limits.max_gross_exposure),
            max_correlated_exposure=to_decimal(limits.max_correlated_exposure),
        )
        self._machine = TradingStateMachine(
            max_drawdown=limits.max_drawdown,
            soft_drawdown=limits.soft_drawdown,
            soft_release=limits.soft_release,
            max_daily_loss=limits.max_daily_loss,
        )
        self._drawdown = DrawdownTracker()
        self._rate = OrderRateWindow()
        self._market = MarketTracker(atr_period=limits.atr_period)
        self._correlation = RollingCorrelation(
            window_bars=limits.correlation_window_bars, min_bars=limits.correlation_min_bars
        )
        self.last_marks: AccountMarks | None = None

    # -- state ----------------------------------------------------------------------------------

    @property
    def state(self) -> TradingState:
        """ACTIVE, REDUCING or HALTED."""
        return self._machine.state

    @property
    def reason(self) -> StateReason:
        """Why the layer is in its state."""
        return self._machine.reason

    def status(self) -> dict[str, Any]:
        """State, reason and the account figures of the latest mark (for `trader status`)."""
        marks = self.last_marks
        return {
            **self._machine.state_dict(),
            "drawdown": None if marks is None else marks.drawdown,
            "daily_loss": None if marks is None else marks.daily_loss,
            "peak_equity": None if marks is None else str(marks.peak_equity),
            "day_start_equity": None if marks is None else str(marks.day_start_equity),
        }

    # -- inputs ---------------------------------------------------------------------------------

    def on_bar(self, bar: Bar) -> None:
        """Take in a confirmed bar: last prices, ATR, stale-feed clock and return correlation."""
        log_return = self._market.update(bar)
        if log_return is not None:
            self._correlation.add(bar.symbol, bar.start_ms, log_return)

    def on_mark(self, *, equity: Decimal, now_ms: int) -> RiskOutcome:
        """Apply drawdown and daily-loss limits to one mark-to-market equity at `now_ms`."""
        self.last_marks = self._drawdown.mark(equity, now_ms)
        return self._machine.on_mark(self.last_marks, now_ms)

    def kill(self, *, reason: str, now_ms: int, flatten: bool = True) -> RiskOutcome:
        """The kill switch: HALTED with reason ``kill`` until `resume`; flatten when asked."""
        return self._machine.halt(
            reason=StateReason.KILL, detail=reason, now_ms=now_ms, flatten=flatten
        )

    def halt(self, *, reason: StateReason, detail: str, now_ms: int) -> RiskOutcome:
        """HALTED and flatten for another cause (e.g. ``error`` when a core loop fails)."""
        return self._machine.halt(reason=reason, detail=detail, now_ms=now_ms, flatten=True)

    def resume(self, *, reason: str, now_ms: int) -> RiskOutcome:
        """Lift a halt (or REDUCING); drawdown and daily loss are measured from here on."""
        outcome = self._machine.resume(detail=reason, now_ms=now_ms)
        if outcome.events:
            self._drawdown.rebase()
        return outcome

    # -- orders ---------------------------------------------------------------------------------

    def review(self, decision: Decision, *, context: RiskContext) -> Verdict:
        """Turn a decision into approved and denied intents (see the module docstring)."""
        verdict = Verdict()
        action = decision.action
        if action is Action.HOLD:
            return verdict
        symbol = decision.symbol
        position = context.positions.get(symbol, _ZERO)
        if action is Action.CLOSE_LONG or action is Action.CLOSE_SHORT:
            if (position > 0) if action is Action.CLOSE_LONG else (position < 0):
                self._approve(verdict, closing_intent(symbol, position, "close"), context.now_ms)
            return verdict
        direction = 1 if action is Action.BUY_LONG else -1
        if position * direction < 0:
            self._approve(verdict, closing_intent(symbol, position, "close"), context.now_ms)
            position = _ZERO
        self._review_opening(decision, direction, position, context, verdict)
        return verdict

    def flatten_intents(self, positions: dict[str, Decimal]) -> list[OrderIntent]:
        """Reduce-only intents closing every open position."""
        return [
            closing_intent(symbol, qty, "flatten")
            for symbol, qty in sorted(positions.items())
            if qty != 0
        ]

    def _review_opening(
        self,
        decision: Decision,
        direction: int,
        position: Decimal,
        context: RiskContext,
        verdict: Verdict,
    ) -> None:
        side = Side.BUY if direction > 0 else Side.SELL
        blank = self._intent(decision, side, _ZERO, None)
        market = self._market.get(decision.symbol)
        if market is None:
            self._deny(verdict, blank, Deny(DenyReason.PRICE_INVALID, "no bar seen yet"))
            return
        unusable = check_price(
            price=market.close, previous_price=None, max_price_jump=self.limits.max_price_jump
        )
        if unusable is not None:
            self._deny(verdict, blank, unusable)
            return
        exposure = exposure_around(
            decision.symbol,
            direction=direction,
            position=position,
            positions=context.positions,
            price_of=self._market.price,
            correlation_of=self._correlation.correlation,
            threshold=self.limits.correlation_threshold,
        )
        if isinstance(exposure, Deny):
            self._deny(verdict, blank, exposure)
            return
        self._size_opening(decision, side, position, market, exposure, context, verdict)

    def _size_opening(
        self,
        decision: Decision,
        side: Side,
        position: Decimal,
        market: SymbolMarket,
        exposure: Exposure,
        context: RiskContext,
        verdict: Verdict,
    ) -> None:
        """Steps 2-6 of the module docstring, once the price is known to be usable."""
        wanted = self._target_qty(decision, market, context) - abs(position)
        if wanted <= 0:
            return  # the position is already as large as the decision asks
        qty = round_down_to_step(wanted, context.limits.qty_step)
        deny = self._gate_checks(decision, market, context)
        if deny is None:
            price = to_decimal(market.close)
            fitted, deny = self._fit(wanted, qty, price, exposure, context, opening=position == 0)
            if deny is None and fitted <= 0:
                return  # a top-up smaller than one lot: nothing to send
            qty = fitted if deny is None else qty
        intent = self._intent(decision, side, qty, market)
        if deny is None:
            self._approve(verdict, intent, context.now_ms)
        else:
            self._deny(verdict, intent, deny)

    def _target_qty(self, decision: Decision, market: SymbolMarket, ctx: RiskContext) -> Decimal:
        """The position size the decision asks for, within the per-symbol caps (unrounded)."""
        limits, caps = self.limits, self._caps
        vol_cap = vol_target_notional(
            equity=ctx.equity,
            price=market.close,
            atr=market.atr,
            risk_per_trade=limits.risk_per_trade,
            stop_atr_multiple=limits.stop_atr_multiple,
        )
        notional = target_notional(
            (caps.max_position_notional_usdt, caps.max_leverage * ctx.equity, vol_cap),
            size=decision.size,
            confidence=decision.confidence,
            risk_budget=ctx.risk_budget,
        )
        return notional / to_decimal(market.close)

    def _gate_checks(
        self, decision: Decision, market: SymbolMarket, context: RiskContext
    ) -> Deny | None:
        """The rules that refuse an opening order whatever its size."""
        limits = self.limits
        return (
            check_state(self.state)
            or check_confidence(
                confidence=decision.confidence, min_confidence=limits.min_confidence
            )
            or check_stale_feed(
                last_bar_start_ms=market.last_start_ms,
                interval_ms=market.interval_ms,
                now_ms=context.now_ms,
                stale_feed_bars=limits.stale_feed_bars,
                gap_bars=market.gap_bars,
            )
            or check_price(
                price=market.close,
                previous_price=market.previous_close,
                max_price_jump=limits.max_price_jump,
            )
            or check_order_rate(
                orders_in_window=self._rate.count(context.now_ms),
                max_orders_per_minute=limits.max_orders_per_minute,
            )
        )

    def _fit(
        self,
        wanted: Decimal,
        full: Decimal,
        price: Decimal,
        exposure: Exposure,
        context: RiskContext,
        *,
        opening: bool,
    ) -> tuple[Decimal, Deny | None]:
        """Cut the order to the exposure room left: (qty, None) to send, or (0, why not).

        (0, None) is a top-up below one lot, which is not worth a denial.
        """
        limits = context.limits
        room = room_usdt(exposure, equity=context.equity, caps=self._caps)
        qty = round_down_to_step(min(wanted, room / price), limits.qty_step)

        def limit_checks(quantity: Decimal) -> Deny | None:
            return check_limits(
                quantity,
                price=price,
                exposure=exposure,
                equity=context.equity,
                limits=limits,
                caps=self._caps,
            )

        too_small = check_order_size(qty=qty, price=price, limits=limits)
        if too_small is None:
            return qty, limit_checks(qty)
        if qty < full:  # the room, not the target, made it too small: name the limit
            return _ZERO, limit_checks(full) or too_small
        return _ZERO, too_small if opening else None

    def _intent(
        self, decision: Decision, side: Side, qty: Decimal, market: SymbolMarket | None
    ) -> OrderIntent:
        stop_loss, take_profit = decision.stop_loss, decision.take_profit
        if market is not None and decision.default_exits:
            stop_loss, take_profit = default_protection(
                side=side,
                price=market.close,
                atr=market.atr,
                stop_loss=stop_loss,
                take_profit=take_profit,
                stop_atr_multiple=self.limits.stop_atr_multiple,
                take_profit_atr_multiple=self.limits.take_profit_atr_multiple,
            )
        return OrderIntent(
            symbol=decision.symbol,
            side=side,
            qty=qty,
            reduce_only=False,
            leg="open",
            stop_loss=stop_loss,
            take_profit=take_profit,
        )

    def _approve(self, verdict: Verdict, intent: OrderIntent, now_ms: int) -> None:
        verdict.approved.append(intent)
        self._rate.record(now_ms)

    @staticmethod
    def _deny(verdict: Verdict, intent: OrderIntent, deny: Deny) -> None:
        verdict.denied.append(Denial(intent, deny.reason.value, deny.detail))
        verdict.events.append(
            RiskEvent(ORDER_DENIED, intent.symbol, f"{deny.reason.value}: {deny.detail}")
        )

    # -- persistence ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state saved with the run: a halt or kill survives restarts.

        The market view (last prices, ATR, the correlation window) is left out: it is a pure
        function of the bars, which a restart re-feeds through `on_bar` (the engine's `warm`),
        and it was four fifths of every committed snapshot (about 200 KB with 50 symbols).
        """
        return {
            "version": STATE_VERSION,
            "machine": self._machine.state_dict(),
            "drawdown": self._drawdown.state_dict(),
            "order_times_ms": self._rate.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned, or the foundation gate's ``{state, reason}``.

        A gate's state keeps its trading state; its free-text reason becomes the detail.
        """
        if "version" not in state:
            legacy = TradingState(state["state"])
            self._machine.load_state_dict(
                {
                    "state": legacy.value,
                    "reason": _LEGACY_REASON[legacy].value,
                    "detail": str(state.get("reason", "")),
                    "since_ms": None,
                    "flattened": legacy is TradingState.HALTED,
                }
            )
            return
        self._machine.load_state_dict(state["machine"])
        self._drawdown.load_state_dict(state["drawdown"])
        self._rate.load_state_dict(state["order_times_ms"])
        # A version 1 snapshot's "market" and "correlation" are ignored: `on_bar` rebuilds them.

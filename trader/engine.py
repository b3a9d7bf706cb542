"""The engine: one bar-close slice at a time through the stages of DESIGN.md.

Owns the order of the stages for a slice (store bar -> fills at the open and protective exits ->
mark -> reward of the previous decision -> features -> risk state -> strategy -> risk review ->
broker -> persist/publish), the rows each stage produces, the kill switch's effect on orders and
positions, and the run-state snapshot that makes a run resumable. Every stage is an object
behind a seam (Strategy, RiskLayerPolicy, ExecutionClient, Portfolio, RewardTracker,
FeatureBook, BatchSink, EventPublisher), so the live feed, the HRM and the MQTT bus replace or
extend a stage without touching this loop.

It must not do I/O itself (the sink and publisher do), read the clock for anything but latency
and batching, or hold model maths and risk rules.

Exactly-once and crash safety: rows accumulate in one `WriteBatch`; at a flush the engine adds a
snapshot of its whole state and hands the batch to the single writer, which commits rows and
snapshot in one transaction. A restart loads the snapshot, re-feeds the features with the bars up
to it (`warm`), and continues with the next slice, so it ends exactly where an uninterrupted run
would.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import structlog

from risk.base import RiskLayerPolicy
from risk.context import RiskContext
from risk.gate import OrderIntent, SymbolLimits
from risk.machine import RiskOutcome, StateReason
from strategies.base import AccountState, ModelHealth, Strategy, SymbolContext
from trader._engine_rows import (
    bar_row,
    decision_row,
    fill_row,
    order_row,
    position_row,
    protective_order,
)
from trader.broker.base import ExecutionClient
from trader.domain import Action, Bar, Decision, DecisionType, Fill, Order, Side
from trader.features.buffer import FeatureBook, FeatureBuffer
from trader.instruments import InstrumentBook
from trader.order_ids import client_order_id
from trader.persistence.batch import RunStateSnapshot, WriteBatch
from trader.portfolio import AccountTotals, Portfolio
from trader.rewards import RewardTracker

log = structlog.get_logger()

#: `should_flush` inspects the batch and the clock once per this many slices.
_FLUSH_CHECK_EVERY_SLICES = 8
_ZERO = Decimal(0)


class BatchSink(Protocol):
    """Where finished batches go (the persistence writer, or a list in tests)."""

    async def submit(self, batch: WriteBatch) -> None:
        """Queue one batch for an atomic commit."""
        ...

    async def flush(self) -> None:
        """Return once everything submitted is committed."""
        ...


class EventPublisher(Protocol):
    """Best-effort event bus (MQTT when configured); `enabled` False skips payload building."""

    enabled: bool

    def publish(self, kind: str, payload: dict[str, Any]) -> None:
        """Publish one event of `kind` (decision, order, fill, risk, heartbeat)."""
        ...


class NullPublisher:
    """Publishes nothing: the engine's publisher when no bus is configured."""

    enabled = False

    def publish(self, kind: str, payload: dict[str, Any]) -> None:
        """Drop the event."""


@dataclass(slots=True)  # per slice: see strategies.base.AccountState on frozen
class _AccountMark:
    """The account once per slice, after every symbol of the slice has been marked."""

    equity: Decimal
    equity_f: float
    drawdown_f: float


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """When the engine hands its batch to the writer: by rows, by time, or when told to."""

    max_rows: int = 20_000
    interval_ms: int = 250


class Engine:
    """Processes bar-close slices; see the module docstring for the stage order."""

    def __init__(
        self,
        *,
        run_id: str,
        strategy: Strategy,
        risk: RiskLayerPolicy,
        broker: ExecutionClient,
        portfolio: Portfolio,
        rewards: RewardTracker,
        features: FeatureBook,
        instruments: InstrumentBook,
        sink: BatchSink,
        publisher: EventPublisher | None = None,
        flush_policy: FlushPolicy | None = None,
        max_bar_age_ms: int | None = None,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.run_id = run_id
        # A bar known (exchange time) this long after its close is processed but never traded.
        self._max_bar_age_ms = max_bar_age_ms
        self._strategy = strategy
        self._risk = risk
        self._broker = broker
        self._portfolio = portfolio
        self._rewards = rewards
        self._features = features
        self._instruments = instruments
        self._sink = sink
        self._publisher = publisher if publisher is not None else NullPublisher()
        self._policy = flush_policy if flush_policy is not None else FlushPolicy()
        self._clock_ns = clock_ns
        self._batch = WriteBatch()
        self._last_flush_ns = clock_ns()
        self._flush_countdown = 1
        self._open_orders: dict[str, Order] = {}
        # Symbols whose position changed since the last flush -> time of their latest fill.
        self._dirty_positions: dict[str, int] = {}
        self._limits: dict[str, SymbolLimits] = {}
        # Float (qty, avg_price) of open positions, refreshed on fills: strategies see floats,
        # so the per-bar account view needs no Decimal work.
        self._held: dict[str, tuple[float, float]] = {}
        # A halt (an error) owed a flatten it could not place at once: placed at the next mark.
        self._flatten_owed = False
        self._model_halted = False
        # Checked once: an isinstance against a runtime protocol costs microseconds per slice.
        self._model_health = strategy if isinstance(strategy, ModelHealth) else None
        self.last_slice_start_ms = -1
        self.slices_processed = 0

    @property
    def strategy(self) -> Strategy:
        """The strategy deciding for this engine."""
        return self._strategy

    @property
    def risk(self) -> RiskLayerPolicy:
        """The risk layer (its trading state is part of the run state)."""
        return self._risk

    @property
    def portfolio(self) -> Portfolio:
        """The paper account as the engine sees it."""
        return self._portfolio

    def symbols(self) -> list[str]:
        """Every symbol the engine has seen a bar of (warm-up slices included), sorted."""
        return self._features.symbols()

    def warm(self, bars: Sequence[Bar]) -> None:
        """Feed a slice already processed before a restart to the features and to risk's
        market view (both pure functions of the bars, so they come back exactly)."""
        for bar in bars:
            self._features.update(bar)
            self._risk.on_bar(bar)

    async def process_slice(self, bars: Sequence[Bar], *, received_ns: int | None = None) -> None:
        """Run one bar-close slice (bars of distinct symbols sharing a start) through all stages.

        Args:
            bars: the slice, one bar per symbol, all with the same `start_ms`.
            received_ns: `clock_ns()` when the slice's last bar was received (for latency_us);
                defaults to now.
        """
        if received_ns is None:
            received_ns = self._clock_ns()
        start_ms = bars[0].start_ms
        if start_ms <= self.last_slice_start_ms:
            log.warning("slice_skipped", start_ms=start_ms, last_start_ms=self.last_slice_start_ms)
            return
        # Stages 1-3 per bar: store, fill at the open / protective exits, mark, reward, features.
        pnls: list[Decimal] = []
        buffers: list[FeatureBuffer] = []
        broker = self._broker
        for bar in bars:
            pnl, buffer = self._settle_bar(bar, await broker.on_bar(bar))
            pnls.append(pnl)
            buffers.append(buffer)
        # The account is marked once per slice, after every symbol's close is in.
        self._portfolio.update_peak()
        totals = self._portfolio.totals()
        account = _AccountMark(
            equity=totals.equity,
            equity_f=float(totals.equity),
            drawdown_f=float(totals.drawdown),
        )
        close_ms = bars[-1].close_ms
        self._record_equity(close_ms, account, totals)
        outcome = self._risk.on_mark(equity=totals.equity, now_ms=close_ms)
        self._record_outcome(outcome, close_ms)
        if outcome.flatten or self._flatten_owed:
            await self._flatten_all(start_ms, close_ms)
        await self._decide(bars, buffers, pnls, account, close_ms, received_ns)
        self.last_slice_start_ms = start_ms
        self.slices_processed += 1

    def _settle_bar(self, bar: Bar, fills: list[Fill]) -> tuple[Decimal, FeatureBuffer]:
        """Store the bar, apply the fills it triggered, mark it, reward the last decision, features.

        Synchronous on purpose: it runs for every bar, and only the broker call needs to await.
        """
        symbol = bar.symbol
        self._batch.bars.append(bar_row(bar))
        if fills or self._open_orders:
            self._apply_fills(bar, fills)
        portfolio = self._portfolio
        portfolio.mark(symbol, bar.close, update_peak=False)  # the slice raises it once
        self._risk.on_bar(bar)
        pnl = portfolio.symbol_pnl(symbol)
        reward = self._rewards.close(symbol, pnl)
        if reward is not None:
            reward["run_id"] = self.run_id
            self._batch.rewards.append(reward)
        return pnl, self._features.update(bar)

    def _apply_fills(self, bar: Bar, fills: list[Fill]) -> None:
        for fill in fills:
            order = self._open_orders.pop(fill.order_id, None)
            if order is None:
                order = protective_order(self.run_id, fill, bar.start_ms)
            self._take_fill(fill, order)
        for order in self._broker.last_cancelled():
            if self._open_orders.pop(order.client_order_id, None) is not None:
                self._batch.orders.append(order_row(order, "cancelled"))

    def _take_fill(self, fill: Fill, order: Order) -> None:
        """Book one fill into the portfolio and store it with its order, now filled.

        A fill no decision asked for (a risk flatten, the kill switch, a stop-loss or
        take-profit) credits the symbol's open reward as strategic.
        """
        if order.decision_id is None:
            self._rewards.escalate(fill.symbol)
        self._portfolio.apply_fill(fill)
        self._dirty_positions[fill.symbol] = fill.ts_ms
        self._refresh_held(fill.symbol)
        self._batch.orders.append(order_row(order, "filled"))
        row = fill_row(self.run_id, fill)
        self._batch.fills.append(row)
        if self._publisher.enabled:
            self._publisher.publish("fill", row)

    def _refresh_held(self, symbol: str) -> None:
        """Keep the float view of a position the strategies see in sync after a fill."""
        position = self._portfolio.position(symbol)
        if position.qty:
            self._held[symbol] = (float(position.qty), float(position.avg_price))
        else:
            self._held.pop(symbol, None)

    def _record_equity(self, ts_ms: int, account: _AccountMark, totals: AccountTotals) -> None:
        self._batch.equity.append(
            {
                "run_id": self.run_id,
                "ts_ms": ts_ms,
                "equity": account.equity_f,
                "cash": float(totals.cash),
                "unrealized_pnl": float(totals.unrealized_pnl),
                "drawdown": account.drawdown_f,
                "peak_equity": float(totals.peak_equity),
                "gross_exposure_usdt": float(totals.gross_exposure_usdt),
            }
        )

    def _record_risk_event(self, ts_ms: int, kind: str, symbol: str, detail: str) -> None:
        row = {
            "run_id": self.run_id,
            "ts_ms": ts_ms,
            "kind": kind,
            "symbol": symbol,
            "detail": detail,
        }
        self._batch.risk_events.append(row)
        if self._publisher.enabled:
            self._publisher.publish("risk", row)

    def _record_outcome(self, outcome: RiskOutcome, ts_ms: int) -> None:
        """Store (and publish) the transitions a mark, kill, resume or halt produced."""
        for event in outcome.events:
            self._record_risk_event(ts_ms, event.kind, event.symbol, event.detail)
            log.warning(
                "risk_state_changed",
                kind=event.kind,
                detail=event.detail,
                state=self._risk.state.value,
                ts_ms=ts_ms,
            )

    def _cancel_pending(self) -> None:
        """Cancel every order not yet filled, at the broker and in the orders table."""
        for order in self._open_orders.values():
            self._batch.orders.append(order_row(order, "cancelled"))
        self._open_orders.clear()
        self._broker.cancel_all()

    def _cancel_opening(self) -> None:
        """Cancel the pending orders that would open or add to a position; closes stay queued."""
        for order in [order for order in self._open_orders.values() if not order.reduce_only]:
            self._broker.cancel(order.client_order_id)
            del self._open_orders[order.client_order_id]
            self._batch.orders.append(order_row(order, "cancelled"))

    async def _flatten_all(self, bar_start_ms: int, close_ms: int) -> None:
        """Cancel pending orders and close every position at the next open (reduce-only)."""
        self._flatten_owed = False
        self._cancel_pending()
        for intent in self._risk.flatten_intents(self._positions()):
            await self._submit(
                intent, decision_id=None, bar_start_ms=bar_start_ms, created_ms=close_ms
            )

    async def _decide(
        self,
        bars: Sequence[Bar],
        buffers: Sequence[FeatureBuffer],
        pnls: Sequence[Decimal],
        account: _AccountMark,
        close_ms: int,
        received_ns: int,
    ) -> None:
        contexts = [
            SymbolContext(bar=bar, features=buffer, account=self._account(bar, account))
            for bar, buffer in zip(bars, buffers, strict=True)
            if buffer.ready
        ]
        decided: dict[str, Decision] = {}
        if contexts:
            decisions = self._strategy.decide(contexts)
            if len(decisions) != len(contexts):
                raise RuntimeError(
                    f"strategy {self._strategy.name} returned {len(decisions)} decisions "
                    f"for {len(contexts)} symbols"
                )
            decided = {decision.symbol: decision for decision in decisions}
            if self._model_health is not None:
                self._check_model(self._model_health, close_ms)
        latency_us = (self._clock_ns() - received_ns) // 1_000
        for bar, pnl in zip(bars, pnls, strict=True):
            decision = decided.get(bar.symbol)
            if decision is None:
                # Not warm yet: still one (procedural HOLD) decision row per processed bar.
                decision = Decision.hold(
                    bar.symbol, bar.start_ms, model_version=self._strategy.model_version
                )
            elif decision.action is not Action.HOLD and self._is_stale(bar):
                decision = self._hold_stale(bar, decision, close_ms)
            decision_id = self._record_decision(bar, decision, pnl, account.equity, latency_us)
            if decision.action is not Action.HOLD:
                await self._review(bar, decision, decision_id, account.equity, close_ms)

    def _check_model(self, model: ModelHealth, close_ms: int) -> None:
        """Refused inputs become risk events; a failed model halts trading (once)."""
        for symbol, reason in model.last_rejections:
            self._record_risk_event(close_ms, "model_input_rejected", symbol, reason)
        if model.halted_reason is not None and not self._model_halted:
            self._model_halted = True
            self.halt_on_error(f"strategy {self._strategy.name}: {model.halted_reason}", close_ms)

    def _is_stale(self, bar: Bar) -> bool:
        """Whether the bar reached us too long after its close (by exchange time) to trade on."""
        limit_ms = self._max_bar_age_ms
        return (
            limit_ms is not None
            and bar.known_ms is not None
            and (bar.known_ms - bar.close_ms > limit_ms)
        )

    def _hold_stale(self, bar: Bar, decision: Decision, close_ms: int) -> Decision:
        """The strategy ran (its carry stays continuous) but a stale bar never opens an order."""
        assert bar.known_ms is not None
        self._record_risk_event(
            close_ms,
            "stale_bar",
            bar.symbol,
            f"{decision.action.value} held: bar known {bar.known_ms - bar.close_ms} ms after "
            f"its close (limit {self._max_bar_age_ms} ms)",
        )
        return dataclasses.replace(
            decision, action=Action.HOLD, size=0.0, decision_type=DecisionType.PROCEDURAL
        )

    def _account(self, bar: Bar, account: _AccountMark) -> AccountState:
        held = self._held.get(bar.symbol)
        if held is None:
            return AccountState(account.equity_f, 0.0, 0.0, 0.0, 0.0, account.drawdown_f, 0)
        qty, avg_price = held
        return AccountState(
            equity=account.equity_f,
            position_qty=qty,
            position_notional=qty * bar.close,
            avg_price=avg_price,
            unrealized_pnl=qty * (bar.close - avg_price),
            drawdown=account.drawdown_f,
            bars_in_position=self._portfolio.bars_in_position(bar.symbol),
        )

    def _record_decision(
        self, bar: Bar, decision: Decision, pnl: Decimal, equity: Decimal, latency_us: int
    ) -> str:
        decision_id = f"{self.run_id}:{bar.symbol}:{bar.start_ms}"
        row = decision_row(decision_id, self.run_id, bar, decision, latency_us)
        self._batch.decisions.append(row)
        if self._publisher.enabled:
            self._publisher.publish("decision", row)
        self._rewards.open(
            decision_id, bar.symbol, bar.start_ms, decision.decision_type, pnl, equity
        )
        return decision_id

    async def _review(
        self, bar: Bar, decision: Decision, decision_id: str, equity: Decimal, close_ms: int
    ) -> None:
        """Risk turns the decision into orders (submitted) or denials (stored with a reason)."""
        context = RiskContext(
            now_ms=close_ms,
            equity=equity,
            positions=self._pending_positions(),
            limits=self._symbol_limits(bar),
            risk_budget=None,
        )
        verdict = self._risk.review(decision, context=context)
        for intent in verdict.approved:
            await self._submit(
                intent, decision_id=decision_id, bar_start_ms=bar.start_ms, created_ms=close_ms
            )
        for denial in verdict.denied:
            order = self._order_from(denial.intent, decision_id, bar.start_ms, close_ms)
            self._batch.orders.append(order_row(order, "rejected", denial.reason))
        for event in verdict.events:
            self._record_risk_event(close_ms, event.kind, event.symbol, event.detail)

    def _positions(self) -> dict[str, Decimal]:
        """Every open position's signed quantity."""
        return {symbol: self._portfolio.position(symbol).qty for symbol in self._held}

    def _pending_positions(self) -> dict[str, Decimal]:
        """Every position once already-submitted orders fill (so decisions never double up).

        Orders submitted earlier in the same slice count too: they are open orders already.
        """
        positions = self._positions()
        for order in self._open_orders.values():
            signed = order.qty if order.side is Side.BUY else -order.qty
            positions[order.symbol] = positions.get(order.symbol, _ZERO) + signed
        return positions

    def _symbol_limits(self, bar: Bar) -> SymbolLimits:
        limits = self._limits.get(bar.symbol)
        if limits is None:
            instrument = self._instruments.get(bar.symbol, bar.close)
            limits = SymbolLimits(
                qty_step=instrument.qty_step,
                min_qty=instrument.min_qty,
                min_notional_usdt=instrument.min_notional_usdt,
            )
            self._limits[bar.symbol] = limits
        return limits

    def _order_from(
        self, intent: OrderIntent, decision_id: str | None, bar_start_ms: int, created_ms: int
    ) -> Order:
        return Order(
            client_order_id=client_order_id(self.run_id, intent.symbol, bar_start_ms, intent.leg),
            run_id=self.run_id,
            decision_id=decision_id,
            symbol=intent.symbol,
            side=intent.side,
            qty=intent.qty,
            reduce_only=intent.reduce_only,
            leg=intent.leg,
            created_ms=created_ms,
            stop_loss=intent.stop_loss,
            take_profit=intent.take_profit,
        )

    async def _submit(
        self, intent: OrderIntent, *, decision_id: str | None, bar_start_ms: int, created_ms: int
    ) -> None:
        order = self._order_from(intent, decision_id, bar_start_ms, created_ms)
        await self._broker.submit(order)
        self._open_orders[order.client_order_id] = order
        self._record_order(order)

    def _record_order(self, order: Order) -> None:
        """Store (and publish) a submitted order."""
        row = order_row(order, "submitted")
        self._batch.orders.append(row)
        if self._publisher.enabled:
            self._publisher.publish("order", row)

    # -- kill switch -------------------------------------------------------------------------

    async def kill(
        self,
        *,
        reason: str,
        now_ms: int,
        flatten: bool,
        price_of: Callable[[str], float | None],
    ) -> None:
        """The kill switch: HALTED until `resume`, nothing opens, and flat at once if asked.

        With `flatten`, every pending order is cancelled and each open position is closed now
        by an emergency fill (`FillReason.FLATTEN`) at its latest traded price, not at the
        next open. Without it, positions stay, and so do queued orders that only reduce them;
        queued orders that would open or add are cancelled either way (a kill must not let
        them fill). Call it between slices; the events and rows land in the pending batch, and
        the caller flushes.

        Args:
            reason: the operator's reason, stored with the ``halted`` event.
            now_ms: exchange time the kill is applied (epoch ms); the fills carry it.
            flatten: close every open position now.
            price_of: the latest traded price of a symbol, or None to use its last bar close.
        """
        outcome = self._risk.kill(reason=reason, now_ms=now_ms, flatten=flatten)
        self._record_outcome(outcome, now_ms)
        if outcome.flatten:
            self._cancel_pending()
            await self._close_now(now_ms, price_of)
        else:
            self._cancel_opening()

    async def resume(self, *, reason: str, now_ms: int) -> None:
        """Lift a halt or kill (the operator's resume); drawdown is measured from here on."""
        self._record_outcome(self._risk.resume(reason=reason, now_ms=now_ms), now_ms)

    def halt_on_error(self, detail: str, now_ms: int) -> None:
        """HALTED with reason ``error`` (a core loop failed); queued opening orders cancelled.

        The flatten the halt asks for is owed (and saved in the snapshot): it is placed at the
        next mark, after a restart too, since placing an order needs the event loop. Queued
        orders that only reduce a position stay. The caller flushes.
        """
        outcome = self._risk.halt(reason=StateReason.ERROR, detail=detail, now_ms=now_ms)
        self._record_outcome(outcome, now_ms)
        self._cancel_opening()
        self._flatten_owed = self._flatten_owed or outcome.flatten

    async def _close_now(self, now_ms: int, price_of: Callable[[str], float | None]) -> None:
        """Close every open position at once at its latest traded price (emergency fills)."""
        for intent in self._risk.flatten_intents(self._positions()):
            price = _usable_price(price_of(intent.symbol))
            if price is None:
                # A held position has been filled, so its symbol has a mark to fall back on.
                price = self._portfolio.mark_price(intent.symbol)
                assert price is not None
            order = self._order_from(intent, None, now_ms, now_ms)
            self._record_order(order)
            fill = await self._broker.fill_now(order, price=price, ts_ms=now_ms)
            if fill is None:  # the exchange side had nothing left to reduce
                self._batch.orders.append(order_row(order, "cancelled"))
            else:
                self._take_fill(fill, order)

    # -- persistence -------------------------------------------------------------------------

    def should_flush(self) -> bool:
        """True when the pending batch is big or old enough to hand to the writer.

        Checked after every slice, so it looks at the batch and the clock only every few slices
        (a slice adds a handful of rows; the limits are thousands of rows and many milliseconds).
        """
        self._flush_countdown -= 1
        if self._flush_countdown > 0:
            return False
        self._flush_countdown = _FLUSH_CHECK_EVERY_SLICES
        rows = self._batch.row_count()
        if rows >= self._policy.max_rows:
            return True
        elapsed_ms = (self._clock_ns() - self._last_flush_ns) // 1_000_000
        return elapsed_ms >= self._policy.interval_ms and rows > 0

    async def flush(self, *, wait: bool = False) -> None:
        """Hand the pending rows plus a state snapshot to the writer (one transaction).

        Args:
            wait: also wait until the writer has committed everything.
        """
        if self.slices_processed or self._batch.row_count():
            batch = self._batch
            self._batch = WriteBatch()
            batch.positions = [
                position_row(self.run_id, self._portfolio.position(symbol), updated_ms)
                for symbol, updated_ms in sorted(self._dirty_positions.items())
            ]
            self._dirty_positions.clear()
            batch.snapshot = RunStateSnapshot(
                run_id=self.run_id,
                last_slice_start_ms=self.last_slice_start_ms,
                state=self.state_dict(),
            )
            try:
                await self._sink.submit(batch)
            except BaseException:
                # Cancelled (a stop while the writer's queue is full) or refused: the rows go
                # back in front of the pending ones, so the next flush still writes them
                # before a snapshot that counts them as done.
                self._take_back(batch)
                raise
        self._last_flush_ns = self._clock_ns()
        if wait:
            await self._sink.flush()

    def _take_back(self, batch: WriteBatch) -> None:
        """Put a batch the writer never took back in front of the pending rows.

        Its snapshot is dropped (the next flush takes a new one) and its positions are marked
        dirty again, so they are rebuilt from the portfolio as of that flush.
        """
        self._batch.put_back(batch)
        for row in batch.positions:
            self._dirty_positions.setdefault(row["symbol"], row["updated_ms"])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run after a restart (JSON-able)."""
        return {
            "last_slice_start_ms": self.last_slice_start_ms,
            "slices_processed": self.slices_processed,
            "portfolio": self._portfolio.state_dict(),
            # Fallback instruments of unlisted symbols come from their first price: keep them.
            "instruments": self._instruments.state_dict(),
            "broker": self._broker.state_dict(),
            "rewards": self._rewards.state_dict(),
            "risk": self._risk.state_dict(),
            "strategy": self._strategy.state_dict(),
            "open_orders": [order.to_state() for order in self._open_orders.values()],
            "flatten_owed": self._flatten_owed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (features are rebuilt separately by `warm`)."""
        self.last_slice_start_ms = int(state["last_slice_start_ms"])
        self.slices_processed = int(state["slices_processed"])
        self._portfolio.load_state_dict(state["portfolio"])
        self._instruments.load_state_dict(state["instruments"])
        self._broker.load_state_dict(state["broker"])
        self._rewards.load_state_dict(state["rewards"])
        self._risk.load_state_dict(state["risk"])
        self._strategy.load_state_dict(state["strategy"])
        self._open_orders = {
            raw["client_order_id"]: Order.from_state(raw) for raw in state["open_orders"]
        }
        # Snapshots from before the kill switch have no owed flatten.
        self._flatten_owed = bool(state.get("flatten_owed", False))
        # The strategy restores its own failure (above): the halt it caused has been applied.
        health = self._model_health
        self._model_halted = health is not None and health.halted_reason is not None
        self._held = {}
        for symbol in self._portfolio.symbols():
            self._refresh_held(symbol)


def _usable_price(price: float | None) -> Decimal | None:
    """A quoted price as Decimal, or None when there is none or it is not positive and finite."""
    if price is None or not (math.isfinite(price) and price > 0.0):
        return None
    return Decimal(repr(price))

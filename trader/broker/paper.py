"""The paper broker: a deterministic simulation of Bybit linear-perpetual market orders.

Owns the queue of accepted orders, their fills at the next bar's open (slippage, tick rounding,
taker fee), the exchange-side net position per symbol that reduce-only orders are capped
against, and protective stop-loss / take-profit exits from each bar's high and low. It must not
apply risk rules (every order it receives was approved) or touch the portfolio; it reports fills.

Fill rules, in the order `on_bar` applies them to one bar:

1. Pending orders whose decision bar closed before this bar fill at this bar's open, moved by
   the slippage against the taker (a buy pays up, a sell receives less), rounded to the tick
   against the taker, then clamped into [low, high]: a fill never lies outside its bar.
   Reduce-only orders are capped at the position and cancelled when nothing is left to reduce.
2. The position's protective levels, set by the order that opened, increased or flipped it, are
   checked against the bar's range (the entry bar included). When both are hit the stop wins;
   the exit fills at the level, or at the open when the bar gapped through it, with the same
   slippage, rounding, clamping and fee, and closes the whole position.

Outside the bars, `fill_now` fills a reduce-only order at once at a given price (the kill
switch's emergency flatten at the latest traded price), with the same slippage, rounding and
fee but no bar to clamp into.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog

from trader.domain import Bar, Fill, FillReason, Order, Side
from trader.instruments import InstrumentBook
from trader.order_ids import client_order_id

#: How many recent client order ids are remembered to ignore a retried submit. Ids embed the
#: bar, so a retry happens within a bar or two; older duplicates cannot arrive.
RECENT_IDS_KEPT = 256
_BPS = Decimal(10_000)
_ZERO = Decimal(0)
_STATE_VERSION = 1

_log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Holding:
    """The simulated exchange's view of one symbol: net qty and its protective levels."""

    qty: Decimal = _ZERO
    stop_loss: float | None = None
    take_profit: float | None = None


class PaperBroker:
    """An `ExecutionClient` that fills market orders against the bars it is shown."""

    def __init__(
        self,
        *,
        run_id: str,
        taker_fee: Decimal,
        slippage_bps: Decimal,
        instruments: InstrumentBook,
    ) -> None:
        """Create a broker with no orders and flat positions.

        Args:
            run_id: the run; protective exits derive their order ids from it.
            taker_fee: fee rate charged on every fill's notional (0.00055 = 5.5 bps).
            slippage_bps: adverse price move applied to every fill, in basis points.
            instruments: tick sizes used to round fill prices.

        Raises:
            ValueError: a negative or non-finite fee or slippage.
        """
        for name, value in (("taker_fee", taker_fee), ("slippage_bps", slippage_bps)):
            if not value.is_finite() or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value}")
        self._run_id = run_id
        self._taker_fee = taker_fee
        self._buy_factor = 1 + slippage_bps / _BPS
        self._sell_factor = 1 - slippage_bps / _BPS
        self._instruments = instruments
        self._pending: dict[str, list[Order]] = {}
        self._holdings: dict[str, _Holding] = {}
        self._recent_ids: deque[str] = deque(maxlen=RECENT_IDS_KEPT)
        self._last_cancelled: list[Order] = []

    async def fill_now(self, order: Order, *, price: Decimal, ts_ms: int) -> Fill | None:
        """Fill a reduce-only order now at `price`, marked `FillReason.FLATTEN`.

        Capped at the position like any reduce-only order; None when nothing is left to reduce
        or the client order id was seen recently (a retried call never closes twice).

        Raises:
            ValueError: the order is not reduce-only, or its quantity or price is not positive.
        """
        if not order.reduce_only:
            raise ValueError(f"{order.client_order_id}: only reduce-only orders fill at once")
        if not (order.qty > 0 and price.is_finite() and price > 0):
            raise ValueError(f"{order.client_order_id}: qty and price must be positive")
        if order.client_order_id in self._recent_ids:
            _log.warning("order_duplicate_ignored", client_order_id=order.client_order_id)
            return None
        self._recent_ids.append(order.client_order_id)
        holding = self._holdings.get(order.symbol)
        if holding is None or _reducible(holding, order.side) <= 0:
            return None
        qty = min(order.qty, _reducible(holding, order.side))
        fill_price = self._slipped(order.side, price, order.symbol, price)
        return self._book_order(holding, order, qty, fill_price, ts_ms, FillReason.FLATTEN)

    async def submit(self, order: Order) -> None:
        """Queue an approved order; it fills at the first bar after its decision bar.

        A second submit of a client order id seen recently is ignored (and logged), as the
        exchange rejects a duplicate orderLinkId: a retried submit never doubles a position.

        Raises:
            ValueError: the order quantity is not positive.
        """
        if not order.qty > 0:
            raise ValueError(f"{order.client_order_id}: qty must be positive, got {order.qty}")
        if order.client_order_id in self._recent_ids:
            _log.warning(
                "order_duplicate_ignored",
                client_order_id=order.client_order_id,
                symbol=order.symbol,
            )
            return
        self._recent_ids.append(order.client_order_id)
        self._pending.setdefault(order.symbol, []).append(order)

    async def on_bar(self, bar: Bar) -> list[Fill]:
        """Fills caused by this closed bar: pending market orders first, then protective exits."""
        self._last_cancelled = []
        fills: list[Fill] = []
        queue = self._pending.get(bar.symbol)
        if queue:
            close_ms = bar.close_ms
            # created_ms is the decision bar's close, so this is the first bar starting after
            # the decision bar; the decision bar itself (close_ms == created_ms) never fills it.
            due = [order for order in queue if close_ms > order.created_ms]
            if due:
                rest = [order for order in queue if close_ms <= order.created_ms]
                if rest:
                    self._pending[bar.symbol] = rest
                else:
                    del self._pending[bar.symbol]
                for order in due:
                    fill = self._fill_order(order, bar)
                    if fill is not None:
                        fills.append(fill)
        holding = self._holdings.get(bar.symbol)
        if holding is not None and holding.qty != 0:
            exit_fill = self._protective_exit(holding, bar)
            if exit_fill is not None:
                fills.append(exit_fill)
        return fills

    def pending_orders(self) -> list[Order]:
        """Orders accepted but not yet filled or cancelled, per symbol in submission order."""
        return [order for queue in self._pending.values() for order in queue]

    def cancel(self, client_order_id: str) -> Order | None:
        """Cancel one pending order and return it; None when it is not pending."""
        for symbol, queue in self._pending.items():
            for index, order in enumerate(queue):
                if order.client_order_id == client_order_id:
                    del queue[index]
                    if not queue:
                        del self._pending[symbol]
                    return order
        return None

    def cancel_all(self, symbol: str | None = None) -> list[Order]:
        """Cancel pending orders of one symbol (or all) and return them; levels are kept."""
        if symbol is None:
            cancelled = self.pending_orders()
            self._pending.clear()
            return cancelled
        return self._pending.pop(symbol, [])

    def last_cancelled(self) -> list[Order]:
        """Reduce-only orders the most recent `on_bar` cancelled because nothing was left."""
        return list(self._last_cancelled)

    def net_qty(self, symbol: str) -> Decimal:
        """The simulated exchange's signed position (+ long, - short, 0 flat)."""
        holding = self._holdings.get(symbol)
        return _ZERO if holding is None else holding.qty

    def protective_levels(self, symbol: str) -> tuple[float | None, float | None]:
        """The (stop_loss, take_profit) levels guarding the symbol's position."""
        holding = self._holdings.get(symbol)
        if holding is None:
            return (None, None)
        return (holding.stop_loss, holding.take_profit)

    # -- fills -----------------------------------------------------------------------------

    def _fill_order(self, order: Order, bar: Bar) -> Fill | None:
        holding = self._holdings.get(order.symbol)
        if holding is None:
            holding = self._holdings[order.symbol] = _Holding()
        qty = order.qty
        if order.reduce_only:
            reducible = _reducible(holding, order.side)
            if reducible <= 0:
                self._last_cancelled.append(order)
                return None
            qty = min(qty, reducible)
        price = self._execution_price(order.side, Decimal(repr(bar.open)), bar)
        reason = FillReason.FLATTEN if order.leg == "flatten" else FillReason.MARKET
        return self._book_order(holding, order, qty, price, bar.start_ms, reason)

    def _book(
        self,
        holding: _Holding,
        order: Order | None,
        *,
        order_id: str,
        symbol: str,
        side: Side,
        qty: Decimal,
        price: Decimal,
        ts_ms: int,
        reason: FillReason,
    ) -> Fill:
        """Fill `qty` at `price` with the taker fee and move the exchange position.

        `order` is the order being filled, whose levels the position may take; None for a
        protective exit (it only closes).
        """
        fill = Fill(
            order_id=order_id,
            symbol=symbol,
            side=side,
            qty=qty,
            price=price,
            fee=qty * price * self._taker_fee,
            ts_ms=ts_ms,
            reason=reason,
        )
        _apply(holding, fill.signed_qty, order)
        return fill

    def _book_order(
        self,
        holding: _Holding,
        order: Order,
        qty: Decimal,
        price: Decimal,
        ts_ms: int,
        reason: FillReason,
    ) -> Fill:
        """`_book` for `qty` of `order`, under the order's client id."""
        return self._book(
            holding,
            order,
            order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=qty,
            price=price,
            ts_ms=ts_ms,
            reason=reason,
        )

    def _protective_exit(self, holding: _Holding, bar: Bar) -> Fill | None:
        stop, take = holding.stop_loss, holding.take_profit
        long = holding.qty > 0
        # Floats compare exactly; Decimal conversion waits until a level is actually hit.
        if long:
            if stop is not None and bar.low <= stop:
                level, reason, leg = min(bar.open, stop), FillReason.STOP_LOSS, "sl"
            elif take is not None and bar.high >= take:
                level, reason, leg = max(bar.open, take), FillReason.TAKE_PROFIT, "tp"
            else:
                return None
        elif stop is not None and bar.high >= stop:
            level, reason, leg = max(bar.open, stop), FillReason.STOP_LOSS, "sl"
        elif take is not None and bar.low <= take:
            level, reason, leg = min(bar.open, take), FillReason.TAKE_PROFIT, "tp"
        else:
            return None
        side = Side.SELL if long else Side.BUY
        return self._book(
            holding,
            None,
            order_id=client_order_id(self._run_id, bar.symbol, bar.start_ms, leg),
            symbol=bar.symbol,
            side=side,
            qty=abs(holding.qty),
            price=self._execution_price(side, Decimal(repr(level)), bar),
            # Known only once the bar has closed; stamping the bar's last millisecond also keeps
            # it after the same bar's open fills.
            ts_ms=bar.end_ms,
            reason=reason,
        )

    def _execution_price(self, side: Side, base: Decimal, bar: Bar) -> Decimal:
        """Slip `base` against the taker, round to the tick against it, clamp into the bar."""
        price = self._slipped(side, base, bar.symbol, bar.open)
        low, high = Decimal(repr(bar.low)), Decimal(repr(bar.high))
        return min(max(price, low), high)

    def _slipped(
        self, side: Side, base: Decimal, symbol: str, reference_price: float | Decimal
    ) -> Decimal:
        """`base` moved by the slippage against the taker, rounded to the tick against it
        (`reference_price` derives the instrument of a symbol missing from the table)."""
        instrument = self._instruments.get(symbol, reference_price)
        factor = self._buy_factor if side is Side.BUY else self._sell_factor
        return instrument.round_price(base * factor, side)

    # -- persistence -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-able broker state: pending orders, positions, levels, recent ids, fallbacks."""
        return {
            "version": _STATE_VERSION,
            "pending": [order.to_state() for order in self.pending_orders()],
            "holdings": {
                symbol: {
                    "qty": str(holding.qty),
                    "stop_loss": holding.stop_loss,
                    "take_profit": holding.take_profit,
                }
                for symbol, holding in self._holdings.items()
            },
            "recent_ids": list(self._recent_ids),
            "instruments": self._instruments.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned, replacing the current state.

        Raises:
            ValueError: the state was written by an incompatible version.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"paper broker state version {state.get('version')!r} unsupported")
        self._pending = {}
        for row in state["pending"]:
            order = Order.from_state(row)
            self._pending.setdefault(order.symbol, []).append(order)
        self._holdings = {
            symbol: _Holding(
                qty=Decimal(row["qty"]),
                stop_loss=row["stop_loss"],
                take_profit=row["take_profit"],
            )
            for symbol, row in state["holdings"].items()
        }
        self._recent_ids = deque(state["recent_ids"], maxlen=RECENT_IDS_KEPT)
        self._instruments.load_state_dict(state["instruments"])
        self._last_cancelled = []


def _reducible(holding: _Holding, side: Side) -> Decimal:
    """How much a reduce-only order on `side` may fill (0 or less: nothing to reduce)."""
    return -holding.qty if side is Side.BUY else holding.qty


def _apply(holding: _Holding, delta: Decimal, order: Order | None) -> None:
    """Move the net position; the order that opens, adds to or flips it sets the levels."""
    old = holding.qty
    new = old + delta
    holding.qty = new
    if new == 0:
        holding.stop_loss = holding.take_profit = None
    elif order is not None and (old == 0 or (old > 0) != (new > 0) or abs(new) > abs(old)):
        holding.stop_loss = order.stop_loss
        holding.take_profit = order.take_profit

"""The paper account of a USDT-margined linear perpetuals run: positions, cash, equity, drawdown.

Owns netting of fills into one position per symbol, realised and unrealised PnL, fees, the
wallet balance (`cash`), mark-to-market equity and its peak. It must not decide, size, route or
fill orders, and must not read bars itself: the engine feeds it fills and marks.

Accounting of a linear perp account: opening a position moves no cash; the wallet balance is
``initial + realised - fees``; equity is ``cash + unrealised``. Money is `Decimal`. The average
entry price is quantised to `AVG_PRICE_QUANTUM`, so that every other quantity is a sum of
products of short decimals and stays exact: realised and unrealised PnL both use the same stored
average, which keeps ``equity == initial + realised + unrealised - fees`` an exact identity.

The engine marks every symbol on every bar, so `mark` is O(1): account totals (realised,
unrealised, fees, gross exposure) are running sums updated by the difference a change makes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from trader.domain import Fill, Position

#: Resolution of the stored average entry price; 1e-10 USDT is far below any tick.
AVG_PRICE_QUANTUM = Decimal("1e-10")
_ZERO = Decimal(0)


@dataclass(slots=True)
class _Book:
    """Mutable per-symbol state behind the immutable `Position` views."""

    qty: Decimal = _ZERO
    avg_price: Decimal = _ZERO
    realized_pnl: Decimal = _ZERO
    fees: Decimal = _ZERO
    mark: Decimal | None = None
    unrealized_pnl: Decimal = _ZERO
    exposure_usdt: Decimal = _ZERO
    bars_in_position: int = 0


# Not frozen: built at every slice, and a frozen dataclass's __init__ costs
# about 4x a plain one's (object.__setattr__ per field). Treat it as read-only.
@dataclass(slots=True)
class AccountTotals:
    """The account's figures at one moment, in USDT (drawdown as a fraction of the peak)."""

    equity: Decimal
    cash: Decimal
    unrealized_pnl: Decimal
    peak_equity: Decimal
    drawdown: Decimal
    gross_exposure_usdt: Decimal


class Portfolio:
    """Nets fills into positions and marks them to market."""

    def __init__(self, initial_equity: Decimal) -> None:
        """Start a flat account holding `initial_equity` USDT.

        Raises:
            ValueError: `initial_equity` is not positive.
        """
        if not initial_equity.is_finite() or initial_equity <= 0:
            raise ValueError(f"initial_equity must be positive, got {initial_equity}")
        self._initial = initial_equity
        self._books: dict[str, _Book] = {}
        self._realized = _ZERO
        self._fees = _ZERO
        self._unrealized = _ZERO
        self._exposure = _ZERO
        self._peak = initial_equity

    # -- updates ---------------------------------------------------------------------------

    def apply_fill(self, fill: Fill) -> None:
        """Net one fill into its symbol's position.

        Adding to a position (or opening one) averages the entry price; reducing realises
        ``qty_closed * (price - avg) * sign``; crossing zero realises the closed part and opens
        the remainder at the fill price. The fee is charged to the symbol and the account.
        """
        book = self._books.get(fill.symbol)
        if book is None:
            book = self._books[fill.symbol] = _Book()
        old_qty = book.qty
        delta = fill.signed_qty
        new_qty = old_qty + delta
        if old_qty == 0 or (old_qty > 0) == (delta > 0):
            book.avg_price = _average(old_qty, book.avg_price, delta, fill.price)
        else:
            closed = min(abs(delta), abs(old_qty))
            sign = 1 if old_qty > 0 else -1
            realized = closed * (fill.price - book.avg_price) * sign
            book.realized_pnl += realized
            self._realized += realized
            if new_qty == 0:
                book.avg_price = _ZERO
            elif (new_qty > 0) != (old_qty > 0):
                book.avg_price = fill.price
        if new_qty == 0 or (old_qty != 0 and (new_qty > 0) != (old_qty > 0)):
            # A flat or flipped position is a new holding period.
            book.bars_in_position = 0
        book.qty = new_qty
        book.fees += fill.fee
        self._fees += fill.fee
        self._revalue(book, book.mark if book.mark is not None else fill.price)

    def mark(self, symbol: str, price: float, *, update_peak: bool = True) -> None:
        """Mark a symbol to `price` (a bar close) and update the peak equity.

        Counts one more bar in position when the symbol is not flat.

        Args:
            symbol: the symbol whose bar closed.
            price: its close.
            update_peak: False when more symbols of the same moment are still to be marked;
                the caller then calls `update_peak()` once all are in, so the peak never comes
                from a half-marked account (one symbol's new close with another's old one).

        Raises:
            ValueError: the price is not a positive finite number (bars are validated upstream,
                so this is a bug, not bad market data).
        """
        if not (math.isfinite(price) and price > 0.0):
            raise ValueError(f"{symbol}: mark price must be positive and finite, got {price!r}")
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = _Book()
        self._revalue(book, Decimal(repr(price)))
        if book.qty != 0:
            book.bars_in_position += 1
        if update_peak:
            self.update_peak()

    def update_peak(self) -> None:
        """Raise the peak to the current equity if it is higher."""
        equity = self.equity
        if equity > self._peak:
            self._peak = equity

    def _revalue(self, book: _Book, mark: Decimal) -> None:
        book.mark = mark
        unrealized = book.qty * (mark - book.avg_price) if book.qty else _ZERO
        exposure = abs(book.qty) * mark
        self._unrealized += unrealized - book.unrealized_pnl
        self._exposure += exposure - book.exposure_usdt
        book.unrealized_pnl = unrealized
        book.exposure_usdt = exposure

    # -- queries ---------------------------------------------------------------------------

    def position(self, symbol: str) -> Position:
        """The symbol's netted position (flat if it never traded)."""
        book = self._books.get(symbol)
        if book is None:
            return Position(symbol=symbol)
        return Position(
            symbol=symbol,
            qty=book.qty,
            avg_price=book.avg_price,
            realized_pnl=book.realized_pnl,
            fees=book.fees,
        )

    def symbol_pnl(self, symbol: str) -> Decimal:
        """Realised + unrealised - fees for one symbol, in USDT."""
        book = self._books.get(symbol)
        if book is None:
            return _ZERO
        return book.realized_pnl + book.unrealized_pnl - book.fees

    def unrealized_pnl_of(self, symbol: str) -> Decimal:
        """Unrealised PnL of one symbol at its last mark."""
        book = self._books.get(symbol)
        return _ZERO if book is None else book.unrealized_pnl

    def mark_price(self, symbol: str) -> Decimal | None:
        """The symbol's last mark, or None before its first mark or fill."""
        book = self._books.get(symbol)
        return None if book is None else book.mark

    def bars_in_position(self, symbol: str) -> int:
        """Marks since the current position was opened or flipped (0 when flat)."""
        book = self._books.get(symbol)
        return 0 if book is None else book.bars_in_position

    def symbols(self) -> list[str]:
        """Every symbol that has been filled or marked, in first-seen order."""
        return list(self._books)

    @property
    def initial_equity(self) -> Decimal:
        """The starting wallet balance."""
        return self._initial

    @property
    def cash(self) -> Decimal:
        """Wallet balance: initial + realised - fees (opening a position moves no cash)."""
        return self._initial + self._realized - self._fees

    @property
    def realized_pnl(self) -> Decimal:
        """Realised PnL over all symbols, before fees."""
        return self._realized

    @property
    def unrealized_pnl(self) -> Decimal:
        """Unrealised PnL over all symbols at their last marks."""
        return self._unrealized

    @property
    def fees(self) -> Decimal:
        """Fees paid over all symbols."""
        return self._fees

    @property
    def equity(self) -> Decimal:
        """Mark-to-market equity: cash + unrealised."""
        return self.cash + self._unrealized

    @property
    def peak_equity(self) -> Decimal:
        """Highest equity seen at a mark (initially the initial equity)."""
        return self._peak

    def totals(self) -> AccountTotals:
        """Every account figure at once (the engine reads them once per slice)."""
        cash = self._initial + self._realized - self._fees
        equity = cash + self._unrealized
        peak = self._peak
        return AccountTotals(
            equity=equity,
            cash=cash,
            unrealized_pnl=self._unrealized,
            peak_equity=peak,
            drawdown=(peak - equity) / peak if equity < peak else _ZERO,
            gross_exposure_usdt=self._exposure,
        )

    @property
    def drawdown(self) -> Decimal:
        """Fraction of peak equity lost since the peak; 0 at a new peak, never negative."""
        # The peak starts at the positive initial equity and only rises, so it is never zero.
        return max(_ZERO, (self._peak - self.equity) / self._peak)

    @property
    def gross_exposure_usdt(self) -> Decimal:
        """Sum over symbols of |qty| * mark."""
        return self._exposure

    # -- persistence -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-able account state; Decimals as strings so the round trip is exact."""
        return {
            "initial_equity": str(self._initial),
            "peak_equity": str(self._peak),
            "realized_pnl": str(self._realized),
            "fees": str(self._fees),
            "unrealized_pnl": str(self._unrealized),
            "gross_exposure_usdt": str(self._exposure),
            "symbols": {
                symbol: {
                    "qty": str(book.qty),
                    "avg_price": str(book.avg_price),
                    "realized_pnl": str(book.realized_pnl),
                    "fees": str(book.fees),
                    "mark": None if book.mark is None else str(book.mark),
                    "unrealized_pnl": str(book.unrealized_pnl),
                    "exposure_usdt": str(book.exposure_usdt),
                    "bars_in_position": book.bars_in_position,
                }
                for symbol, book in self._books.items()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned, replacing the current state."""
        self._initial = Decimal(state["initial_equity"])
        self._peak = Decimal(state["peak_equity"])
        self._realized = Decimal(state["realized_pnl"])
        self._fees = Decimal(state["fees"])
        self._unrealized = Decimal(state["unrealized_pnl"])
        self._exposure = Decimal(state["gross_exposure_usdt"])
        self._books = {
            symbol: _Book(
                qty=Decimal(row["qty"]),
                avg_price=Decimal(row["avg_price"]),
                realized_pnl=Decimal(row["realized_pnl"]),
                fees=Decimal(row["fees"]),
                mark=None if row["mark"] is None else Decimal(row["mark"]),
                unrealized_pnl=Decimal(row["unrealized_pnl"]),
                exposure_usdt=Decimal(row["exposure_usdt"]),
                bars_in_position=int(row["bars_in_position"]),
            )
            for symbol, row in state["symbols"].items()
        }


def _average(old_qty: Decimal, old_avg: Decimal, delta: Decimal, price: Decimal) -> Decimal:
    """Quantity-weighted average entry after adding `delta` at `price` to a same-side position."""
    if old_qty == 0:
        return price
    total = abs(old_qty) + abs(delta)
    average = (abs(old_qty) * old_avg + abs(delta) * price) / total
    return average.quantize(AVG_PRICE_QUANTUM, rounding=ROUND_HALF_EVEN)

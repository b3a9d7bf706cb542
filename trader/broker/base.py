"""The ExecutionClient protocol: the one seam between the engine and a broker.

Paper and live execution are two implementations of this protocol chosen at start-up; nothing
else in the code branches on the mode. Implementations own order routing, protective stop-loss /
take-profit handling and the fills they report; they must not apply risk rules (the gate has
already approved every order they receive) or touch the portfolio.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from trader.domain import Bar, Fill, Order


class ExecutionClient(Protocol):
    """Takes approved orders and reports fills as bars close."""

    async def submit(self, order: Order) -> None:
        """Accept an approved order; a paper broker fills it at the next bar's open."""
        ...

    async def on_bar(self, bar: Bar) -> list[Fill]:
        """Fills caused by this closed bar: pending market orders first, then protective exits."""
        ...

    async def fill_now(self, order: Order, *, price: Decimal, ts_ms: int) -> Fill | None:
        """Execute a reduce-only order at once: the kill switch's emergency flatten.

        A paper broker fills it at `price` (the latest traded price), marked
        `FillReason.FLATTEN`; None when there is nothing left to reduce.
        """
        ...

    def pending_orders(self) -> list[Order]:
        """Orders accepted but not yet filled."""
        ...

    def last_cancelled(self) -> list[Order]:
        """Orders the most recent `on_bar` cancelled instead of filling (reduce-only, flat)."""
        ...

    def cancel(self, client_order_id: str) -> Order | None:
        """Cancel one pending order; the order, or None when it is not pending."""
        ...

    def cancel_all(self, symbol: str | None = None) -> list[Order]:
        """Cancel pending orders of one symbol (or all) and return them."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-able broker state (pending orders, protective levels) saved with the run."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        ...

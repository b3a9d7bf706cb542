"""Domain types shared by every stage of the engine.

Owns the plain, frozen value objects that flow through one bar-close slice: bars, decisions,
orders, fills and positions, and the enums that name their states. It must not hold behaviour
beyond trivial derived properties: no I/O, no model maths, no risk rules. `strategies/` and
`risk/` import this module and nothing else from `trader`.

Units: times are int UTC epoch milliseconds (`*_ms`); prices and quantities that touch money are
`Decimal` once they reach the broker and portfolio; bar prices are floats as parsed from the
exchange's decimal strings (features and tensors are float anyway).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

#: Bybit interval codes accepted by the contract, mapped to their length in milliseconds.
INTERVAL_MS: dict[str, int] = {
    "1": 60_000,
    "3": 180_000,
    "5": 300_000,
    "15": 900_000,
    "30": 1_800_000,
    "60": 3_600_000,
    "120": 7_200_000,
    "240": 14_400_000,
    "360": 21_600_000,
    "720": 43_200_000,
    "D": 86_400_000,
}


def interval_ms(interval: str) -> int:
    """Return the length of a Bybit interval code in milliseconds.

    Raises:
        ValueError: the code is not one of `INTERVAL_MS`.
    """
    try:
        return INTERVAL_MS[interval]
    except KeyError:
        known = sorted(INTERVAL_MS)
        raise ValueError(f"unknown interval {interval!r}; expected one of {known}") from None


class BarSource(StrEnum):
    """Where a confirmed bar came from (the `bars.source` column)."""

    WS = "ws"
    REST = "rest"
    REPLAY = "replay"


class Action(StrEnum):
    """What a strategy wants to do with a symbol's position."""

    BUY_LONG = "BUY_LONG"
    SELL_SHORT = "SELL_SHORT"
    CLOSE_LONG = "CLOSE_LONG"
    CLOSE_SHORT = "CLOSE_SHORT"
    HOLD = "HOLD"


class DecisionType(StrEnum):
    """HICRA's classes of decision; the reward weight depends on it."""

    STRATEGIC = "strategic"
    TACTICAL = "tactical"
    PROCEDURAL = "procedural"


class Side(StrEnum):
    """Order and fill side, as stored in `orders.side` and `fills.side`."""

    BUY = "buy"
    SELL = "sell"


class OrderStatus(StrEnum):
    """Lifecycle of an order in the `orders` table."""

    SUBMITTED = "submitted"
    FILLED = "filled"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class FillReason(StrEnum):
    """Why a fill happened: the order itself, a protective level, or an emergency flatten."""

    MARKET = "market"
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    FLATTEN = "flatten"


class ControlCommand(StrEnum):
    """What an operator can ask of a running (or the next) daemon (`control_events.command`)."""

    KILL = "kill"
    RESUME = "resume"
    FLATTEN = "flatten"


@dataclass(frozen=True, slots=True)
class Bar:
    """One confirmed (closed) candle; validated before it is constructed by the parsers."""

    symbol: str
    interval: str
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float
    source: BarSource = BarSource.REPLAY
    #: Exchange time (epoch ms) when this copy of the bar became known: the push `ts` for a
    #: websocket confirm, `/v5/market/time` for a REST backfill, None for candle files. It
    #: decides whether the bar is too stale to trade on, and it is not part of the candle's
    #: identity, so two copies with different arrival times still compare equal.
    known_ms: int | None = field(default=None, compare=False)

    @property
    def end_ms(self) -> int:
        """Last millisecond covered by the bar (Bybit's `end`)."""
        return self.start_ms + interval_ms(self.interval) - 1

    @property
    def close_ms(self) -> int:
        """The moment the bar closed: the start of the next bar."""
        return self.start_ms + interval_ms(self.interval)


# Not frozen: one per symbol per bar, and a frozen dataclass's __init__ costs about 3x a plain
# one's (object.__setattr__ per field: 1.4 vs 0.4 us here). Treat it as read-only; derive a
# changed copy with dataclasses.replace.
@dataclass(slots=True)
class Decision:
    """A strategy's verdict for one symbol on one processed bar (one `decisions` row).

    `size` is the fraction in [0, 1] of the largest position risk allows for the symbol.
    `stop_loss` and `take_profit` are absolute price levels, or None to let risk choose.
    `default_exits` False asks risk to add no level of its own where the strategy gave none: a
    passive benchmark (`buy_hold`) then holds until a kill, a drawdown halt or the run's end.
    `latency_us` is the strategy's own compute time for the decision (0 when it does not
    measure it); the `decisions.latency_us` column is the engine's measurement from bar
    received to decision made, which includes it.
    """

    symbol: str
    bar_start_ms: int
    action: Action
    size: float = 0.0
    confidence: float = 0.0
    stop_loss: float | None = None
    take_profit: float | None = None
    decision_type: DecisionType = DecisionType.PROCEDURAL
    strategic: bool = False
    act_steps: int = 0
    model_version: str = ""
    latency_us: int = 0
    default_exits: bool = True

    @staticmethod
    def hold(symbol: str, bar_start_ms: int, *, model_version: str = "") -> Decision:
        """A procedural HOLD, used while windows warm up and when a strategy has no view."""
        return Decision(
            symbol=symbol,
            bar_start_ms=bar_start_ms,
            action=Action.HOLD,
            model_version=model_version,
        )


@dataclass(frozen=True, slots=True)
class Order:
    """A market order that passed risk; `qty` is positive and already on the qty step."""

    client_order_id: str
    run_id: str
    decision_id: str | None
    symbol: str
    side: Side
    qty: Decimal
    reduce_only: bool
    leg: str
    created_ms: int
    stop_loss: float | None = None
    take_profit: float | None = None

    def to_state(self) -> dict[str, Any]:
        """The order as a JSON-able dict for a run-state snapshot (the quantity exact, as text)."""
        return {
            "client_order_id": self.client_order_id,
            "run_id": self.run_id,
            "decision_id": self.decision_id,
            "symbol": self.symbol,
            "side": self.side.value,
            "qty": str(self.qty),
            "reduce_only": self.reduce_only,
            "leg": self.leg,
            "created_ms": self.created_ms,
            "stop_loss": self.stop_loss,
            "take_profit": self.take_profit,
        }

    @classmethod
    def from_state(cls, raw: Mapping[str, Any]) -> Order:
        """Restore what `to_state` returned (other keys, as older snapshots hold, are ignored)."""
        return cls(
            client_order_id=raw["client_order_id"],
            run_id=raw["run_id"],
            decision_id=raw["decision_id"],
            symbol=raw["symbol"],
            side=Side(raw["side"]),
            qty=Decimal(raw["qty"]),
            reduce_only=bool(raw["reduce_only"]),
            leg=raw["leg"],
            created_ms=int(raw["created_ms"]),
            stop_loss=raw["stop_loss"],
            take_profit=raw["take_profit"],
        )


@dataclass(frozen=True, slots=True)
class Fill:
    """An execution: `qty` positive, `price` and `fee` in USDT."""

    order_id: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    ts_ms: int
    reason: FillReason = FillReason.MARKET
    seq: int = 0

    @property
    def signed_qty(self) -> Decimal:
        """Quantity with the sign of the position change (+ buy, - sell)."""
        return self.qty if self.side is Side.BUY else -self.qty


@dataclass(frozen=True, slots=True)
class Position:
    """A netted USDT-margined linear position; `qty` > 0 long, < 0 short, 0 flat."""

    symbol: str
    qty: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)

"""The trading-state machine: ACTIVE / REDUCING / HALTED, why, and since when.

Owns the transitions and the reason of the current state, and emits one `RiskEvent` per
transition for the engine to store in `risk_events` and publish. The rules:

* ACTIVE -> REDUCING when drawdown from peak reaches `soft_drawdown`.
* REDUCING -> ACTIVE when drawdown falls below ``soft_drawdown * soft_release`` (hysteresis:
  with the defaults, in at 10 % and out below 5 %, so a drawdown hovering at the soft limit does
  not flap the state and spam events).
* any -> HALTED, flattening, when drawdown reaches `max_drawdown` or the loss since the start of
  the UTC day reaches `max_daily_loss`; also on a kill (flattening when asked).
* HALTED is left only by an explicit `resume`, whatever halted it. A kill takes over the reason
  of an earlier halt; otherwise the first halt's reason stays.
* A hard limit crossed while HALTED without a flatten (a ``--no-flatten`` kill) still flattens.

Event kinds are the new state in lower case (``halted``, ``reducing``, ``active``), or
``flattened`` for a flatten without a state change; the detail starts with the reason label.

It must not size or check orders, read a clock, or do I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from risk.drawdown import AccountMarks
from risk.gate import RiskEvent
from risk.state import TradingState

#: Event kind of a flatten ordered while the state stays HALTED.
FLATTENED = "flattened"


class StateReason(StrEnum):
    """Why the machine is in its state (stable labels, shown by `trader status`)."""

    START = "start"
    SOFT_DRAWDOWN = "soft_drawdown"
    RECOVERED = "recovered"
    MAX_DRAWDOWN = "max_drawdown"
    MAX_DAILY_LOSS = "max_daily_loss"
    KILL = "kill"
    ERROR = "error"
    RESUME = "resume"


@dataclass(slots=True)
class RiskOutcome:
    """What a mark, kill or resume produced: events to store and publish, and whether to flatten.

    When `flatten` is True the engine cancels pending orders and submits `flatten_intents`.
    """

    events: list[RiskEvent] = field(default_factory=list)
    flatten: bool = False


class TradingStateMachine:
    """ACTIVE / REDUCING / HALTED with a reason; see the module docstring for the rules.

    Args:
        max_drawdown: drawdown fraction that halts and flattens.
        soft_drawdown: drawdown fraction that sets REDUCING.
        soft_release: REDUCING lifts below ``soft_drawdown * soft_release``, in [0, 1].
        max_daily_loss: fraction of the day's starting equity lost that halts and flattens.
    """

    def __init__(
        self,
        *,
        max_drawdown: float,
        soft_drawdown: float,
        soft_release: float,
        max_daily_loss: float,
    ) -> None:
        if not 0.0 <= soft_release <= 1.0:
            raise ValueError(f"soft_release must be in [0, 1], got {soft_release}")
        self._max_drawdown = max_drawdown
        self._soft_drawdown = soft_drawdown
        self._release_below = soft_drawdown * soft_release
        self._max_daily_loss = max_daily_loss
        self.state = TradingState.ACTIVE
        self.reason = StateReason.START
        self.detail = ""
        self.since_ms: int | None = None
        self.flattened = False

    def on_mark(self, marks: AccountMarks, now_ms: int) -> RiskOutcome:
        """Apply the account limits to one mark's figures."""
        hard = self._hard_breach(marks)
        if hard is not None:
            reason, detail = hard
            return self.halt(reason=reason, detail=detail, now_ms=now_ms, flatten=True)
        if self.state is TradingState.ACTIVE and marks.drawdown >= self._soft_drawdown:
            detail = f"drawdown {marks.drawdown:.4f} >= {self._soft_drawdown}"
            return self._outcome(
                self._move(TradingState.REDUCING, StateReason.SOFT_DRAWDOWN, detail, now_ms)
            )
        if self.state is TradingState.REDUCING and marks.drawdown < self._release_below:
            detail = f"drawdown {marks.drawdown:.4f} < {self._release_below:.4f}"
            return self._outcome(
                self._move(TradingState.ACTIVE, StateReason.RECOVERED, detail, now_ms)
            )
        return RiskOutcome()

    def halt(self, *, reason: StateReason, detail: str, now_ms: int, flatten: bool) -> RiskOutcome:
        """Set HALTED (a kill takes over the reason), flattening if asked and not yet done.

        Only a kill flattens again when already flattened: an operator's flatten is always
        carried out, while a limit re-crossed while halted has nothing left to close.
        """
        outcome = RiskOutcome()
        halted = self.state is TradingState.HALTED
        if not halted or (reason is StateReason.KILL and self.reason is not StateReason.KILL):
            outcome.events.append(self._move(TradingState.HALTED, reason, detail, now_ms))
            self.flattened = False
        if flatten and (reason is StateReason.KILL or not self.flattened):
            outcome.flatten = True
            if halted and not outcome.events:
                outcome.events.append(RiskEvent(FLATTENED, "", f"{reason}: {detail}"))
            self.flattened = True
        return outcome

    def resume(self, *, detail: str, now_ms: int) -> RiskOutcome:
        """Return to ACTIVE from HALTED or REDUCING (the operator's explicit resume)."""
        if self.state is TradingState.ACTIVE:
            return RiskOutcome()
        self.flattened = False
        return self._outcome(self._move(TradingState.ACTIVE, StateReason.RESUME, detail, now_ms))

    def _hard_breach(self, marks: AccountMarks) -> tuple[StateReason, str] | None:
        if marks.drawdown >= self._max_drawdown:
            detail = f"drawdown {marks.drawdown:.4f} >= {self._max_drawdown}"
            return StateReason.MAX_DRAWDOWN, detail
        if marks.daily_loss >= self._max_daily_loss:
            detail = f"daily loss {marks.daily_loss:.4f} >= {self._max_daily_loss}"
            return StateReason.MAX_DAILY_LOSS, detail
        return None

    def _move(
        self, state: TradingState, reason: StateReason, detail: str, now_ms: int
    ) -> RiskEvent:
        self.state = state
        self.reason = reason
        self.detail = detail
        self.since_ms = now_ms
        return RiskEvent(kind=state.value.lower(), symbol="", detail=f"{reason}: {detail}")

    @staticmethod
    def _outcome(event: RiskEvent) -> RiskOutcome:
        return RiskOutcome(events=[event])

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: the state, its reason and detail, since when, and the flatten flag."""
        return {
            "state": self.state.value,
            "reason": self.reason.value,
            "detail": self.detail,
            "since_ms": self.since_ms,
            "flattened": self.flattened,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.state = TradingState(state["state"])
        self.reason = StateReason(state["reason"])
        self.detail = str(state["detail"])
        self.since_ms = None if state["since_ms"] is None else int(state["since_ms"])
        self.flattened = bool(state["flattened"])

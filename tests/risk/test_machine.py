"""The ACTIVE / REDUCING / HALTED state machine, its hysteresis, halts, kills and resumes."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from risk.drawdown import AccountMarks
from risk.machine import FLATTENED, StateReason, TradingStateMachine
from risk.state import TradingState

ACTIVE, REDUCING, HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED


def _machine() -> TradingStateMachine:
    return TradingStateMachine(
        max_drawdown=0.20, soft_drawdown=0.10, soft_release=0.5, max_daily_loss=0.05
    )


def _marks(drawdown: float, daily_loss: float = 0.0) -> AccountMarks:
    one = Decimal(1)
    return AccountMarks(one, one, one, drawdown=drawdown, daily_loss=daily_loss)


@pytest.mark.parametrize(
    ("drawdowns", "states", "kinds"),
    [
        ([0.05, 0.09], [ACTIVE, ACTIVE], [[], []]),
        ([0.10], [REDUCING], [["reducing"]]),
        # Hysteresis: stays REDUCING until the drawdown falls below 10 % x 0.5 = 5 %.
        (
            [0.12, 0.08, 0.06, 0.05, 0.049],
            [REDUCING] * 4 + [ACTIVE],
            [["reducing"], [], [], [], ["active"]],
        ),
        ([0.12, 0.20], [REDUCING, HALTED], [["reducing"], ["halted"]]),
        ([0.25], [HALTED], [["halted"]]),
        # HALTED never lifts by itself, whatever the drawdown does.
        ([0.25, 0.0, 0.12, 0.3], [HALTED] * 4, [["halted"], [], [], []]),
    ],
)
def test_drawdown_drives_state_when_marked(
    drawdowns: list[float], states: list[TradingState], kinds: list[list[str]]
) -> None:
    """Soft drawdown reduces, hard drawdown halts, recovery below the release level re-activates."""
    machine = _machine()
    for drawdown, state, expected_kinds in zip(drawdowns, states, kinds, strict=True):
        outcome = machine.on_mark(_marks(drawdown), now_ms=1)
        assert machine.state is state
        assert [event.kind for event in outcome.events] == expected_kinds


def test_daily_loss_halts_and_flattens_when_crossed() -> None:
    """Losing max_daily_loss of the day's starting equity halts with its own reason."""
    machine = _machine()
    outcome = machine.on_mark(_marks(drawdown=0.01, daily_loss=0.05), now_ms=7)
    assert machine.state is HALTED
    assert machine.reason is StateReason.MAX_DAILY_LOSS
    assert outcome.flatten
    assert outcome.events[0].detail.startswith("max_daily_loss: ")
    assert machine.since_ms == 7


def test_hard_limit_flattens_once_when_marks_repeat() -> None:
    """The halt flattens on the crossing mark only; later marks order no second flatten."""
    machine = _machine()
    assert machine.on_mark(_marks(0.3), now_ms=1).flatten
    again = machine.on_mark(_marks(0.35), now_ms=2)
    assert not again.flatten
    assert again.events == []


def test_kill_halts_with_reason_when_operator_kills() -> None:
    """A kill sets HALTED with reason kill and the operator's text, flattening by default."""
    machine = _machine()
    outcome = machine.halt(reason=StateReason.KILL, detail="fat finger", now_ms=5, flatten=True)
    assert (machine.state, machine.reason, machine.detail) == (
        HALTED,
        StateReason.KILL,
        "fat finger",
    )
    assert outcome.flatten
    assert [(e.kind, e.detail) for e in outcome.events] == [("halted", "kill: fat finger")]


def test_kill_takes_over_reason_when_already_halted() -> None:
    """A kill after a drawdown halt becomes the reason; a drawdown after a kill does not."""
    machine = _machine()
    machine.on_mark(_marks(0.3), now_ms=1)
    machine.halt(reason=StateReason.KILL, detail="ops", now_ms=2, flatten=False)
    assert machine.reason is StateReason.KILL
    machine.on_mark(_marks(0.4), now_ms=3)
    assert machine.reason is StateReason.KILL


def test_hard_limit_flattens_when_killed_without_flatten() -> None:
    """A --no-flatten kill keeps positions, but crossing max_drawdown still flattens them."""
    machine = _machine()
    quiet = machine.halt(reason=StateReason.KILL, detail="hold", now_ms=1, flatten=False)
    assert not quiet.flatten
    breach = machine.on_mark(_marks(0.25), now_ms=2)
    assert breach.flatten
    assert [event.kind for event in breach.events] == [FLATTENED]
    assert machine.reason is StateReason.KILL


def test_repeated_kill_flattens_again_when_asked() -> None:
    """An operator's flatten is always carried out, even when already killed and flat."""
    machine = _machine()
    machine.halt(reason=StateReason.KILL, detail="one", now_ms=1, flatten=True)
    again = machine.halt(reason=StateReason.KILL, detail="two", now_ms=2, flatten=True)
    assert again.flatten
    assert [event.kind for event in again.events] == [FLATTENED]


def test_resume_lifts_halt_when_operator_resumes() -> None:
    """Only resume leaves HALTED; it emits an `active` event with the resume reason."""
    machine = _machine()
    machine.halt(reason=StateReason.KILL, detail="x", now_ms=1, flatten=True)
    outcome = machine.resume(detail="checked", now_ms=9)
    assert (machine.state, machine.reason) == (ACTIVE, StateReason.RESUME)
    assert [(e.kind, e.detail) for e in outcome.events] == [("active", "resume: checked")]
    assert machine.resume(detail="again", now_ms=10).events == []


def test_state_round_trips_through_json_when_restarted() -> None:
    """A kill restored from its saved state is still a kill, with its detail and time."""
    machine = _machine()
    machine.halt(reason=StateReason.KILL, detail="restart me", now_ms=42, flatten=False)
    restored = _machine()
    restored.load_state_dict(json.loads(json.dumps(machine.state_dict())))
    assert restored.state_dict() == machine.state_dict()
    assert restored.on_mark(_marks(0.0), now_ms=43).events == []
    assert restored.state is HALTED


def test_bad_release_is_refused_when_building() -> None:
    """The release factor must lie in [0, 1]."""
    with pytest.raises(ValueError, match="soft_release"):
        TradingStateMachine(
            max_drawdown=0.2, soft_drawdown=0.1, soft_release=1.5, max_daily_loss=0.05
        )

"""Tests for trader.bus.inbox: a flood of junk stays bounded and never holds a command up."""

from __future__ import annotations

import orjson
import structlog

from trader.bus import ControlRejection, ControlVerifier, VerifiedCommand
from trader.bus.inbox import ControlInbox
from trader.domain import ControlCommand


class _Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def _inbox(clock: _Clock, *, max_rejections: int) -> ControlInbox:
    return ControlInbox(
        verifier=ControlVerifier(secret=None, max_age_ms=30_000),
        wall_ms=lambda: 1_718_000_000_000,
        log=structlog.get_logger(),
        clock=clock,
        max_rejections=max_rejections,
        window_s=60.0,
    )


def _drain(inbox: ControlInbox) -> list[object]:
    queue = inbox._queue
    return [queue.get_nowait() for _ in range(queue.qsize())]


async def test_rejections_are_bounded_per_window_when_junk_floods_the_control_topic() -> None:
    """Past the window's budget junk is counted, not logged or queued, and one line sums it up;
    a kill behind the flood is queued right after the budget's rejections."""
    clock = _Clock()
    inbox = _inbox(clock, max_rejections=5)
    with structlog.testing.capture_logs() as logs:
        for index in range(1_000):
            await inbox.receive(b'{"junk%d":1}' % index, retained=False)
        await inbox.receive(orjson.dumps({"command": "kill", "reason": "real"}), retained=False)
        queued = _drain(inbox)
        clock.now_s = 60.0
        await inbox.receive(b"more junk", retained=False)
    assert [type(item) for item in queued] == [ControlRejection] * 5 + [VerifiedCommand]
    kill = queued[-1]
    assert isinstance(kill, VerifiedCommand)
    assert kill.command is ControlCommand.KILL
    assert (inbox.rejected, inbox.suppressed, inbox.accepted) == (1_001, 995, 1)
    events = [entry["event"] for entry in logs]
    assert events.count("control_rejected") == 6  # 5 in the first window, 1 in the next
    (summary,) = [entry for entry in logs if entry["event"] == "control_rejections_suppressed"]
    assert summary["count"] == 995
    assert len(_drain(inbox)) == 1  # the new window's first rejection goes through

"""The daemon's inbox of control outcomes: verify, log, hold until the daemon takes them.

Owns what happens to each payload that arrives on `<prefix>/control` after the broker handed
it over: the sans-I/O `ControlVerifier` judges it, the outcome is logged (`control_received` or
`control_rejected`, with the reason), and it waits in a queue of `CONTROL_QUEUE_SIZE` for the
daemon, which iterates the inbox (`async for outcome in bus.control()`).

Queue policy when full: an accepted command is never dropped, the receive loop waits for the
daemon; a rejection is dropped (counted, still logged), so a flood of junk can never push a kill
out or stall the connection.

It must not apply or store commands (the daemon does) or touch the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from trader.bus.control import ControlOutcome, ControlRejection, ControlVerifier

CONTROL_QUEUE_SIZE = 256


class ControlInbox:
    """Verified control outcomes in arrival order; an async iterator that never ends by itself.

    Args:
        verifier: Judges each payload (and remembers nonces).
        wall_ms: Epoch ms, the clock signed commands are checked against.
        log: The bound logger to report outcomes on.
    """

    def __init__(
        self,
        *,
        verifier: ControlVerifier,
        wall_ms: Callable[[], int],
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._verifier = verifier
        self._wall_ms = wall_ms
        self._log = log
        self._queue: asyncio.Queue[ControlOutcome] = asyncio.Queue(maxsize=CONTROL_QUEUE_SIZE)
        self.accepted = 0
        self.rejected = 0
        self.dropped = 0

    async def receive(self, payload: bytes, *, retained: bool) -> None:
        """Judge, log and queue one payload; waits only when a command meets a full queue."""
        outcome = self._verifier.verify(payload, now_ms=self._wall_ms(), retained=retained)
        if isinstance(outcome, ControlRejection):
            self.rejected += 1
            self._log.warning(
                "control_rejected",
                reason=outcome.reason.value,
                detail=outcome.detail,
                payload=outcome.raw,
            )
            if self._queue.full():
                self.dropped += 1
            else:
                self._queue.put_nowait(outcome)
            return
        self.accepted += 1
        self._log.info(
            "control_received",
            command=outcome.command.value,
            reason=outcome.reason,
            flatten=outcome.flatten,
            authenticated=outcome.authenticated,
        )
        await self._queue.put(outcome)

    def __aiter__(self) -> ControlInbox:
        return self

    async def __anext__(self) -> ControlOutcome:
        """The next outcome, waiting for one."""
        return await self._queue.get()

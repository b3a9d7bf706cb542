"""The daemon's inbox of control outcomes: verify, log, hold until the daemon takes them.

Owns what happens to each payload that arrives on `<prefix>/control` after the broker handed
it over: the sans-I/O `ControlVerifier` judges it, the outcome is logged (`control_received` or
`control_rejected`, with the reason), and it waits in a queue of `CONTROL_QUEUE_SIZE` for the
daemon, which iterates the inbox (`async for outcome in bus.control()`).

Queue policy when full: an accepted command is never dropped, the receive loop waits for the
daemon; a rejection is dropped (counted, still logged), so a flood of junk can never push a kill
out or stall the connection.

Rejections are rate-limited: at most `MAX_REJECTIONS_PER_WINDOW` per `REJECTION_WINDOW_S` are
logged one by one and handed to the daemon (which stores them); the rest of the window's are
only counted (`suppressed`), and one `control_rejections_suppressed` line gives their number at
the first message after the window. Anyone who may publish on the control topic can send junk,
so nothing junk causes may grow without bound; commands are never limited.

It must not apply or store commands (the daemon does) or touch the connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from trader.bus.control import ControlOutcome, ControlRejection, ControlVerifier

CONTROL_QUEUE_SIZE = 256
#: Rejections logged and stored per window; the rest are counted and summarised.
MAX_REJECTIONS_PER_WINDOW = 20
REJECTION_WINDOW_S = 60.0


class ControlInbox:
    """Verified control outcomes in arrival order; an async iterator that never ends by itself.

    Args:
        verifier: Judges each payload (and remembers nonces).
        wall_ms: Epoch ms, the clock signed commands are checked against.
        log: The bound logger to report outcomes on.
        clock: Monotonic seconds, for the rejection window.
        max_rejections: Rejections passed on per `window_s`.
        window_s: The rate limit's window.
    """

    def __init__(
        self,
        *,
        verifier: ControlVerifier,
        wall_ms: Callable[[], int],
        log: structlog.typing.FilteringBoundLogger,
        clock: Callable[[], float] = time.monotonic,
        max_rejections: int = MAX_REJECTIONS_PER_WINDOW,
        window_s: float = REJECTION_WINDOW_S,
    ) -> None:
        self._verifier = verifier
        self._wall_ms = wall_ms
        self._log = log
        self._clock = clock
        self._max_rejections = max_rejections
        self._window_s = window_s
        self._window_start_s = clock()
        self._window_rejections = 0
        self._window_suppressed = 0
        self._queue: asyncio.Queue[ControlOutcome] = asyncio.Queue(maxsize=CONTROL_QUEUE_SIZE)
        self.accepted = 0
        self.rejected = 0
        self.dropped = 0
        self.suppressed = 0

    async def receive(self, payload: bytes, *, retained: bool) -> None:
        """Judge, log and queue one payload; waits only when a command meets a full queue."""
        outcome = self._verifier.verify(payload, now_ms=self._wall_ms(), retained=retained)
        self._roll_window()
        if isinstance(outcome, ControlRejection):
            self.rejected += 1
            if self._window_rejections >= self._max_rejections:
                self.suppressed += 1
                self._window_suppressed += 1
                return
            self._window_rejections += 1
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

    def _roll_window(self) -> None:
        """Start a new window when the current one is over, summarising what it suppressed."""
        now_s = self._clock()
        if now_s - self._window_start_s < self._window_s:
            return
        if self._window_suppressed:
            self._log.warning(
                "control_rejections_suppressed",
                count=self._window_suppressed,
                window_s=self._window_s,
                total=self.suppressed,
            )
        self._window_start_s = now_s
        self._window_rejections = 0
        self._window_suppressed = 0

    def __aiter__(self) -> ControlInbox:
        return self

    async def __anext__(self) -> ControlOutcome:
        """The next outcome, waiting for one."""
        return await self._queue.get()

"""Reconnect pacing for the websocket feed: jittered, capped exponential backoff and a classifier.

Owns two decisions the live feed makes after a connection fails: *whether* to try again
(`classify_failure`) and *how long* to wait first (`Backoff`). Bybit caps new connections per IP
(reference bybit-v5.md A3) and drops connections at any time (A8), so retries must be paced and
spread out, and retrying must stop at once on failures that retrying cannot fix.

It is sans-I/O: no asyncio, no sleeping, no clock reads. Randomness is injected as a
`random.Random` so tests draw reproducible delays. It must not log, sleep or open connections;
the feed shell does that with the numbers this module returns.
"""

from __future__ import annotations

import random
from typing import Literal

from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from trader.errors import ConfigError, FatalError, TransientError

FailureClass = Literal["retryable", "fatal"]

# Bybit retCode for "too many visits" (rate limited): the request was fine, only too early.
BYBIT_RATE_LIMIT_RET_CODE = 10006
_HTTP_TOO_MANY_REQUESTS = 429
_HTTP_SERVER_ERROR_MIN = 500
_HTTP_SERVER_ERROR_MAX = 599


class Backoff:
    """Exponential backoff with "full jitter", capped, reset after a good subscribe.

    Attempt ``n`` (counting from 0) waits a uniform draw from
    ``[0, min(cap_s, base_s * multiplier**n)]``.

    Full jitter rather than equal jitter: when Bybit restarts, every process on the host loses
    its connection in the same instant, and full jitter spreads their reconnects over the whole
    window instead of half of it, which is what keeps a fleet under the per-IP connection cap
    (AWS "Exponential Backoff And Jitter" measured it doing the least total work). The price is
    that a draw may be near zero; Bybit asks clients to reconnect promptly (A8), and the window
    keeps growing, so the expected wait still grows with every failure.

    Args:
        base_s: Ceiling of the first attempt's window, in seconds; must be positive.
        cap_s: Largest delay ever returned, in seconds; at least ``base_s``.
        multiplier: Growth of the window per attempt; at least 1.
        rng: Source of randomness, injected so tests can seed it.

    Raises:
        ConfigError: When the numbers are out of range.
    """

    def __init__(
        self,
        *,
        base_s: float = 0.5,
        cap_s: float = 30.0,
        multiplier: float = 2.0,
        rng: random.Random,
    ) -> None:
        if not base_s > 0.0:
            raise ConfigError(f"backoff base_s must be positive, got {base_s!r}", key="base_s")
        if not cap_s >= base_s:
            raise ConfigError(f"backoff cap_s {cap_s!r} is below base_s {base_s!r}", key="cap_s")
        if not multiplier >= 1.0:
            raise ConfigError(
                f"backoff multiplier must be at least 1, got {multiplier!r}", key="multiplier"
            )
        self._base_s = base_s
        self._cap_s = cap_s
        self._multiplier = multiplier
        self._rng = rng
        self._attempts = 0
        self._window_s = min(cap_s, base_s)

    @property
    def attempts(self) -> int:
        """How many delays have been handed out since construction or the last `reset`."""
        return self._attempts

    def next_delay_s(self) -> float:
        """Return the wait before the next connection attempt and advance the schedule.

        Returns:
            A delay in seconds within ``[0, cap_s]``.
        """
        delay_s = self._rng.uniform(0.0, self._window_s)
        self._attempts += 1
        # Grow the window incrementally instead of computing multiplier**attempts: a long outage
        # would otherwise overflow the float power long after the cap made it irrelevant.
        self._window_s = min(self._cap_s, self._window_s * self._multiplier)
        # uniform() may round a hair past its upper bound; the cap is a promise.
        return min(max(delay_s, 0.0), self._cap_s)

    def reset(self) -> None:
        """Start the schedule over; call it once every topic of a connection is confirmed."""
        self._attempts = 0
        self._window_s = min(self._cap_s, self._base_s)


def classify_failure(exc: BaseException) -> FailureClass:
    """Decide whether a failed connect, subscribe or backfill is worth retrying.

    The rule, first match wins:

    1. `ConfigError` or `FatalError`: fatal. Our own code already judged it (bad symbol,
       failed auth, schema mismatch); retrying repeats the same answer.
    2. An HTTP status (websockets' `InvalidStatus` handshake rejection, or any exception with an
       integer ``status_code``): 429 and 5xx are retryable, every other status is fatal
       (401/403 is auth, 404 a wrong URL).
    3. An integer Bybit ``ret_code`` on the exception: 10006 (rate limited) is retryable, any
       other code is fatal, since Bybit's other codes describe the request, not the moment.
    4. `TransientError`, `ConnectionClosed`, `OSError` (which covers `ConnectionError`) and
       `TimeoutError`: retryable. The network failed, not the request.
    5. websockets' `InvalidMessage` caused by an `EOFError`: retryable. The server closed the
       TCP connection before its handshake reply was complete (an exchange or load balancer
       restarting, A8), which is the network failing too; websockets' own reconnect loop
       (`process_exception`) retries it for the same reason. An `InvalidMessage` with any other
       cause is a complete but malformed reply (not HTTP, or past websockets' size limits),
       which the same server would send again: fatal.
    6. Anything else, `CancelledError` and other non-`Exception`s included: fatal. An error we
       did not foresee is a bug, and the daemon fails fast rather than reconnecting around it.

    Args:
        exc: The exception that ended the attempt.

    Returns:
        ``"retryable"`` or ``"fatal"``.
    """
    if isinstance(exc, ConfigError | FatalError):
        return "fatal"
    status = _http_status(exc)
    if status is not None:
        retryable = status == _HTTP_TOO_MANY_REQUESTS or (
            _HTTP_SERVER_ERROR_MIN <= status <= _HTTP_SERVER_ERROR_MAX
        )
        return "retryable" if retryable else "fatal"
    ret_code = getattr(exc, "ret_code", None)
    if type(ret_code) is int:
        return "retryable" if ret_code == BYBIT_RATE_LIMIT_RET_CODE else "fatal"
    if isinstance(exc, TransientError | ConnectionClosed | OSError | TimeoutError):
        return "retryable"
    if isinstance(exc, InvalidMessage) and isinstance(exc.__cause__, EOFError):
        return "retryable"
    return "fatal"


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception reports, or None when it carries none."""
    if isinstance(exc, InvalidStatus):
        return exc.response.status_code
    status = getattr(exc, "status_code", None)
    # `type(...) is int`: a bool attribute must not read as status 0 or 1.
    return status if type(status) is int else None

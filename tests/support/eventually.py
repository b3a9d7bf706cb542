"""`eventually()`: poll a condition until it holds or a deadline passes.

For waiting on another process (a subprocess committing rows), where there is no event to await.
The poll interval is not a timing assumption: the deadline only bounds a failing test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], *, timeout_s: float = 30.0, what: str = "") -> T:
    """Return the first truthy result of `probe()`, polling until `timeout_s` runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or probe}")
        time.sleep(0.02)


async def until(probe: Callable[[], T | None], *, timeout_s: float = 30.0, what: str = "") -> T:
    """`eventually` for async tests: poll without blocking the loop the daemon runs on."""
    import asyncio

    deadline = time.monotonic() + timeout_s
    # Polling on purpose: the condition lives in a database another task or process writes,
    # which has no event to await.
    while not (result := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or probe}")
        await asyncio.sleep(0.02)
    return result

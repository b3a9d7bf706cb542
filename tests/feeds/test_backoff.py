"""Tests for trader.feeds.backoff: jittered capped backoff and the failure classifier."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidMessage,
    InvalidStatus,
)
from websockets.http11 import Response

from trader.errors import ConfigError, DataError, FatalError, TransientError
from trader.feeds.backoff import Backoff, classify_failure


class _MaxRandom(random.Random):
    """A Random whose uniform() always returns the top of the range, exposing the window."""

    def uniform(self, a: float, b: float) -> float:
        return b


class _HttpError(Exception):
    """A REST client error carrying an HTTP status, as our REST adapter raises."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class _BybitError(Exception):
    """A REST client error carrying a Bybit retCode."""

    def __init__(self, ret_code: int) -> None:
        super().__init__(f"retCode {ret_code}")
        self.ret_code = ret_code


def _handshake_rejected(status_code: int) -> InvalidStatus:
    return InvalidStatus(Response(status_code, "reason", Headers(), b""))


@asynccontextmanager
async def _handshake_server(reply: bytes) -> AsyncIterator[str]:
    """A loopback TCP server that reads the upgrade request, writes `reply` and closes.

    Yields the ``ws://`` URL to connect to.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"ws://127.0.0.1:{port}/v5/public/linear"


async def _handshake_failure(reply: bytes) -> InvalidMessage:
    """The exception websockets raises when the server answers the upgrade with `reply`."""
    async with _handshake_server(reply) as url:
        with pytest.raises(InvalidMessage) as info:
            async with asyncio.timeout(5.0), connect(url, open_timeout=5.0):
                pass
    return info.value


def test_window_doubles_from_base_when_attempts_fail() -> None:
    """Each attempt's window is base_s * multiplier**attempt until the cap."""
    backoff = Backoff(base_s=0.5, cap_s=30.0, multiplier=2.0, rng=_MaxRandom())
    delays = [backoff.next_delay_s() for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_delay_stays_capped_when_attempts_run_into_thousands() -> None:
    """A long outage neither overflows nor exceeds the cap."""
    backoff = Backoff(base_s=1.0, cap_s=5.0, multiplier=3.0, rng=_MaxRandom())
    delays = [backoff.next_delay_s() for _ in range(5000)]
    assert max(delays) == 5.0
    assert backoff.attempts == 5000


def test_delays_stay_within_full_jitter_window_when_drawn_many_times() -> None:
    """Seeded draws fall in [0, min(cap, base*multiplier**n)] and actually spread out."""
    rng = random.Random(1234)
    for attempt in range(12):
        window_s = min(30.0, 0.5 * 2.0**attempt)
        draws = []
        for _ in range(500):
            backoff = Backoff(rng=rng)
            for _ in range(attempt):
                backoff.next_delay_s()
            draws.append(backoff.next_delay_s())
        assert all(0.0 <= d <= window_s for d in draws)
        # Full jitter uses the whole window, bottom half included.
        assert min(draws) < 0.1 * window_s
        assert max(draws) > 0.9 * window_s


def test_same_seed_gives_same_delays_when_rng_is_injected() -> None:
    """The schedule depends only on the injected rng."""
    first = Backoff(rng=random.Random(7))
    second = Backoff(rng=random.Random(7))
    assert [first.next_delay_s() for _ in range(10)] == [second.next_delay_s() for _ in range(10)]


def test_schedule_starts_over_when_reset() -> None:
    """After reset the attempt count is zero and the window is back to base_s."""
    backoff = Backoff(base_s=0.5, cap_s=30.0, rng=_MaxRandom())
    for _ in range(6):
        backoff.next_delay_s()
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay_s() == 0.5
    assert backoff.attempts == 1


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"base_s": 0.0}, "base_s"),
        ({"base_s": -1.0}, "base_s"),
        ({"base_s": 10.0, "cap_s": 5.0}, "cap_s"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"base_s": float("nan")}, "base_s"),
    ],
)
def test_construction_fails_when_numbers_are_out_of_range(
    kwargs: dict[str, float], key: str
) -> None:
    """Nonsense settings are refused up front, naming the setting."""
    with pytest.raises(ConfigError) as info:
        Backoff(rng=random.Random(0), **kwargs)
    assert info.value.key == key


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError("network unreachable"), "retryable"),
        (ConnectionResetError("reset by peer"), "retryable"),
        (ConnectionRefusedError("refused"), "retryable"),
        (TimeoutError("connect timed out"), "retryable"),
        (ConnectionClosedError(None, None), "retryable"),
        (ConnectionClosedOK(None, None), "retryable"),
        (TransientError("database locked"), "retryable"),
        (_handshake_rejected(429), "retryable"),
        (_handshake_rejected(500), "retryable"),
        (_handshake_rejected(503), "retryable"),
        (_handshake_rejected(401), "fatal"),
        (_handshake_rejected(403), "fatal"),
        (_handshake_rejected(404), "fatal"),
        (_HttpError(502), "retryable"),
        (_HttpError(429), "retryable"),
        (_HttpError(400), "fatal"),
        (_BybitError(10006), "retryable"),
        (_BybitError(10003), "fatal"),
        (ConfigError("bad symbol"), "fatal"),
        (FatalError("auth failed"), "fatal"),
        (DataError("malformed_kline"), "fatal"),
        (ValueError("a bug"), "fatal"),
        (asyncio.CancelledError(), "fatal"),
        (KeyboardInterrupt(), "fatal"),
    ],
)
def test_failure_is_classified_when_attempt_fails(exc: BaseException, expected: str) -> None:
    """Network trouble, 429/5xx and Bybit 10006 retry; our verdicts, auth and bugs do not."""
    assert classify_failure(exc) == expected


@pytest.mark.parametrize(
    "reply",
    [b"", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: webs"],
    ids=["before_status_line", "inside_headers"],
)
async def test_handshake_is_retryable_when_server_closes_the_socket_during_it(
    reply: bytes,
) -> None:
    """A TCP close mid-handshake (a restarting exchange or balancer) is the network failing."""
    exc = await _handshake_failure(reply)
    assert isinstance(exc.__cause__, EOFError)
    assert classify_failure(exc) == "retryable"


async def test_handshake_is_fatal_when_server_replies_with_something_other_than_http() -> None:
    """A complete reply that is not HTTP is not a dropped connection: retrying repeats it."""
    exc = await _handshake_failure(b"SSH-2.0-OpenSSH_9.6\r\n")
    assert not isinstance(exc.__cause__, EOFError)
    assert classify_failure(exc) == "fatal"

"""Liveness of one Bybit v5 public connection: the JSON ping schedule and topic staleness.

Owns two watchdogs the live feed consults. `Heartbeat` schedules the application ping Bybit asks
for every 20 s (reference bybit-v5.md A4; websockets' protocol pings do not count), matches pongs
to pings by ``req_id`` and says when a pong is overdue. `StalenessWatch` says which topics have
been silent too long: kline pushes come every 1-60 s (A6), and a rejected or silently dropped
topic sends nothing at all. Either verdict means the caller forces a reconnect.

It is sans-I/O: no asyncio, no sockets, no clock reads. Time is passed in as monotonic seconds
(float). It must not send frames, log or reconnect; the feed shell does that.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from trader.errors import ConfigError
from trader.feeds.frames import Pong


class Heartbeat:
    """The application ping schedule and pong deadline of one connection.

    A ping is due ``interval_s`` after the previous ping (or after `reset`), whether or not its
    pong has come back, so Bybit sees the cadence it asks for. Each ping gets a fresh ``req_id``
    from a counter that is never reset, so a pong from an earlier connection can never match a
    ping on the current one.

    A pong answers the ping whose ``req_id`` it echoes and every older outstanding ping: replies
    come back in order on one stream, so a pong for a newer ping proves the link carried the
    older ones too. A pong for an older ping does not clear a newer ping's deadline, and a pong
    whose ``req_id`` matches no outstanding ping (a stale one, or ``""``) changes nothing but
    the `unmatched_pongs` count.

    Args:
        interval_s: Seconds between pings; Bybit recommends 20.
        timeout_s: Seconds a ping may go unanswered before the connection counts as dead.

    Raises:
        ConfigError: When either number is not positive.
    """

    def __init__(self, *, interval_s: float, timeout_s: float) -> None:
        if not interval_s > 0.0:
            raise ConfigError(
                f"ping interval must be positive, got {interval_s!r}", key="feed.ping_interval_s"
            )
        if not timeout_s > 0.0:
            raise ConfigError(
                f"ping timeout must be positive, got {timeout_s!r}", key="feed.ping_timeout_s"
            )
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._counter = 0
        # None until the first reset: with no connection there is nothing to ping.
        self._next_ping_at: float | None = None
        # Outstanding pings, req_id -> send time, oldest first (dicts keep insertion order).
        self._outstanding: dict[str, float] = {}
        self._pings_sent = 0
        self._pongs_received = 0
        self._unmatched_pongs = 0
        self._last_rtt_s: float | None = None

    @property
    def pings_sent(self) -> int:
        """Pings built by `ping_frame` over the object's life."""
        return self._pings_sent

    @property
    def pongs_received(self) -> int:
        """Pongs that matched an outstanding ping over the object's life."""
        return self._pongs_received

    @property
    def unmatched_pongs(self) -> int:
        """Pongs that matched no outstanding ping (stale or foreign) over the object's life."""
        return self._unmatched_pongs

    @property
    def last_rtt_s(self) -> float | None:
        """Round-trip time of the last matched pong, in seconds; None before the first."""
        return self._last_rtt_s

    def reset(self, now: float) -> None:
        """Start the schedule for a fresh connection: first ping due ``interval_s`` from now.

        Outstanding pings belonged to the old connection and are forgotten.
        """
        self._outstanding.clear()
        self._next_ping_at = now + self._interval_s

    def ping_due(self, now: float) -> bool:
        """True when the next ping should be sent; always False before the first `reset`."""
        return self._next_ping_at is not None and now >= self._next_ping_at

    def ping_frame(self, now: float) -> dict[str, Any]:
        """Build the next ping request and record it as sent at ``now``.

        Returns:
            ``{"op": "ping", "req_id": "<counter>"}``; the caller encodes and sends it.
        """
        self._counter += 1
        req_id = str(self._counter)
        self._outstanding[req_id] = now
        self._pings_sent += 1
        self._next_ping_at = now + self._interval_s
        return {"op": "ping", "req_id": req_id}

    def on_pong(self, pong: Pong, now: float) -> None:
        """Apply a pong received at ``now``; see the class docstring for the matching rule."""
        req_id = pong.req_id if isinstance(pong.req_id, str) else str(pong.req_id)
        sent_at = self._outstanding.get(req_id)
        if sent_at is None:
            self._unmatched_pongs += 1
            return
        # Drop this ping and every older one; newer ones keep their deadlines.
        for older in list(self._outstanding):
            del self._outstanding[older]
            if older == req_id:
                break
        self._pongs_received += 1
        self._last_rtt_s = now - sent_at

    def expired(self, now: float) -> bool:
        """True when the oldest unanswered ping has waited more than ``timeout_s``.

        The caller then forces a reconnect: a connection that stops answering pings is dead
        even if the socket still looks open.
        """
        if not self._outstanding:
            return False
        oldest_sent_at = next(iter(self._outstanding.values()))
        return now - oldest_sent_at > self._timeout_s


class StalenessWatch:
    """Which topics have been silent for longer than ``limit_s``.

    Args:
        limit_s: Seconds of silence after which a topic is stale; keep it above Bybit's
            60 s worst-case push gap (A6).

    Raises:
        ConfigError: When ``limit_s`` is not positive.
    """

    def __init__(self, *, limit_s: float) -> None:
        if not limit_s > 0.0:
            raise ConfigError(f"staleness limit must be positive, got {limit_s!r}")
        self._limit_s = limit_s
        self._last_seen: dict[str, float] = {}

    def reset(self, topics: Iterable[str], now: float) -> None:
        """Watch exactly ``topics``, each counted as seen at ``now``.

        Call it on every (re)connect, so a topic that never sends anything on the new
        connection still becomes stale, while the outage itself does not count against it.
        """
        self._last_seen = dict.fromkeys(topics, now)

    def seen(self, topic: str, now: float) -> None:
        """Record data for ``topic`` at ``now``; an unwatched topic starts being watched."""
        self._last_seen[topic] = now

    def stale(self, now: float) -> list[str]:
        """Return the topics silent for more than ``limit_s``, sorted by name."""
        return sorted(t for t, seen_at in self._last_seen.items() if now - seen_at > self._limit_s)

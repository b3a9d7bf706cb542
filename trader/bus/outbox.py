"""The bus's outgoing queue and its policy when the broker is slow or gone.

Owns which encoded messages wait, in what order they leave, and which are dropped when a bound
is reached. The engine publishes synchronously from the trading loop and must never wait on the
broker, so the outbox never blocks and never refuses: it makes room instead, by these rules.

    telemetry (decision, heartbeat; QoS 0)  at most `telemetry_max`; full: the OLDEST telemetry
                                            is dropped (the newest says more), counted
    reliable (order, fill, risk; QoS 1)     at most `reliable_max`; full: the OLDEST reliable
                                            event is dropped, counted. With the defaults this
                                            takes an outage of days; the database holds every
                                            order, fill and risk event regardless, and the gap
                                            shows in the envelope's `seq`
    state (retained; QoS 1)                 one slot: a newer state replaces a waiting one
                                            (superseded, counted), so the state the broker gets
                                            after an outage is always the current one

Messages leave in the order they were published (the lowest `Outbound.order` first, across
the three), so after an outage the backlog arrives in its original order. A taken message stays
in flight until `ack`; what was not acknowledged when the connection broke goes back to the
front (`requeue_unacked`), so QoS 1 delivery is at least once.

It must not do I/O, log, read a clock or touch asyncio: the bus shell does, with the counters
this module keeps.
"""

from __future__ import annotations

from collections import deque

from trader.bus.events import EventKind, Outbound
from trader.errors import ConfigError


class Outbox:
    """Bounded, never-blocking queue of encoded messages; see the module docstring.

    Args:
        telemetry_max: Most QoS 0 messages kept.
        reliable_max: Most QoS 1 event messages kept (the state slot comes on top).

    Raises:
        ConfigError: A bound is below 1.
    """

    def __init__(self, *, telemetry_max: int, reliable_max: int) -> None:
        if telemetry_max < 1 or reliable_max < 1:
            raise ConfigError("outbox bounds must be at least 1", key="mqtt.queue_size")
        self._telemetry_max = telemetry_max
        self._reliable_max = reliable_max
        self._telemetry: deque[Outbound] = deque()
        self._reliable: deque[Outbound] = deque()
        self._state: Outbound | None = None
        self._in_flight: dict[int, Outbound] = {}
        self.acked = 0
        self.telemetry_dropped = 0
        self.reliable_dropped = 0
        self.state_superseded = 0

    def __len__(self) -> int:
        """Messages waiting (not counting those in flight)."""
        return len(self._telemetry) + len(self._reliable) + (self._state is not None)

    @property
    def in_flight(self) -> int:
        """Messages taken and not yet acknowledged."""
        return len(self._in_flight)

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing is in flight."""
        return not self._in_flight and not len(self)

    def put(self, message: Outbound) -> Outbound | None:
        """Queue `message`; return the message dropped to make room, if one was.

        A superseded state is not reported as dropped: the newer one carries everything.
        """
        if message.kind is EventKind.STATE:
            self._set_state(message)
            return None
        if message.reliable:
            self._reliable.append(message)
        else:
            self._telemetry.append(message)
        dropped = self._trim()
        return dropped[0] if dropped else None

    def take(self) -> Outbound | None:
        """Move the oldest waiting message in flight and return it; None when nothing waits."""
        best: Outbound | None = self._state
        for queue in (self._telemetry, self._reliable):
            if queue and (best is None or queue[0].order < best.order):
                best = queue[0]
        if best is None:
            return None
        if best is self._state:
            self._state = None
        elif self._telemetry and best is self._telemetry[0]:
            self._telemetry.popleft()
        else:
            self._reliable.popleft()
        self._in_flight[best.order] = best
        return best

    def ack(self, message: Outbound) -> None:
        """The broker has it (QoS 1 acknowledged, QoS 0 written): it leaves the outbox."""
        del self._in_flight[message.order]
        self.acked += 1

    def requeue_unacked(self) -> None:
        """Put every message in flight back in front of everything queued after it.

        Bounds then apply as for `put` (the oldest go first).
        """
        messages, self._in_flight = self._in_flight.values(), {}
        for message in sorted(messages, key=lambda m: m.order, reverse=True):
            if message.kind is EventKind.STATE:
                self._set_state(message)
                continue
            queue = self._reliable if message.reliable else self._telemetry
            # Sorted newest first and every in-flight message is older than what is queued
            # of its class, so appendleft keeps each queue in publish order.
            queue.appendleft(message)
        self._trim()

    def _set_state(self, message: Outbound) -> None:
        current = self._state
        if current is not None:
            self.state_superseded += 1
            if current.order > message.order:
                return  # a requeued state that a newer one already replaced
        self._state = message

    def _trim(self) -> list[Outbound]:
        """Drop the oldest of each class past its bound; return what was dropped."""
        dropped: list[Outbound] = []
        while len(self._telemetry) > self._telemetry_max:
            dropped.append(self._telemetry.popleft())
            self.telemetry_dropped += 1
        while len(self._reliable) > self._reliable_max:
            dropped.append(self._reliable.popleft())
            self.reliable_dropped += 1
        return dropped

"""One broker connection's work: send what the outbox holds, hand control payloads to the inbox.

Owns the two loops that run while a connection is up. The send loop hands messages to the
client in publish order with at most `max_inflight` awaiting the broker's acknowledgement (the
bounded number of QoS 1 messages in flight), and acknowledges each in the outbox only once the
broker has it. The receive loop passes every control payload to the inbox. Both end when the
connection does, the receive loop first and at once (aiomqtt's message iterator raises on a
lost connection, while a pending publish would wait for its timeout).

It must not connect, reconnect, or decide what is kept or dropped: the bus and the outbox do.
"""

from __future__ import annotations

import asyncio

import aiomqtt

from trader.bus.events import Outbound
from trader.bus.inbox import ControlInbox
from trader.bus.outbox import Outbox


class Session:
    """The send and receive loops of one connection (see the module docstring).

    Args:
        client: The connected, subscribed client.
        outbox: Where messages wait; the bus's `publish` fills it.
        inbox: Where control payloads go.
        control_topic: The only topic whose messages are read.
        wakeup: Set by the bus whenever it queues a message.
        drained: Set here whenever the outbox becomes idle (the bus's `flush` waits on it).
        max_inflight: Most publishes awaiting acknowledgement at once.
        timeout_s: How long a QoS 1 publish may wait for its acknowledgement.
    """

    def __init__(
        self,
        *,
        client: aiomqtt.Client,
        outbox: Outbox,
        inbox: ControlInbox,
        control_topic: str,
        wakeup: asyncio.Event,
        drained: asyncio.Event,
        max_inflight: int,
        timeout_s: float,
    ) -> None:
        self._client = client
        self._outbox = outbox
        self._inbox = inbox
        self._control_topic = control_topic
        self._wakeup = wakeup
        self._drained = drained
        self._max_inflight = max_inflight
        self._timeout_s = timeout_s

    async def run(self) -> None:
        """Send and receive until the connection fails; raises what ended it."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._send_loop(), name="bus.mqtt.send")
            group.create_task(self._receive_loop(), name="bus.mqtt.receive")

    async def _send_loop(self) -> None:
        window = asyncio.Semaphore(self._max_inflight)
        async with asyncio.TaskGroup() as group:
            while True:
                await window.acquire()
                message = await self._next_message()
                group.create_task(self._send_one(message, window), name="bus.mqtt.publish")

    async def _next_message(self) -> Outbound:
        while (message := self._outbox.take()) is None:
            self._wakeup.clear()
            if self._outbox.idle:
                self._drained.set()
            await self._wakeup.wait()
        return message

    async def _send_one(self, message: Outbound, window: asyncio.Semaphore) -> None:
        try:
            await self._client.publish(
                message.topic,
                message.payload,
                qos=int(message.qos),
                retain=message.retain,
                timeout=self._timeout_s,
            )
        finally:
            window.release()
        # Acknowledged (QoS 1) or written (QoS 0): only now does it leave the outbox.
        self._outbox.ack(message)
        if self._outbox.idle:
            self._drained.set()

    async def _receive_loop(self) -> None:
        async for message in self._client.messages:
            if message.topic.matches(self._control_topic):
                await self._inbox.receive(_payload_bytes(message.payload), retained=message.retain)


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()

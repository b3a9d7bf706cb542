"""A plain aiomqtt subscriber that collects what arrives under a topic filter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

import aiomqtt

from tests.support import services


class Listener:
    """Subscribes to `topic_filter` at QoS 1, so each message arrives with its published QoS."""

    def __init__(self, topic_filter: str) -> None:
        self._filter = topic_filter
        self.client = aiomqtt.Client(services.MQTT_HOST, services.MQTT_PORT)

    async def __aenter__(self) -> Listener:
        await self.client.__aenter__()
        await self.client.subscribe(self._filter, qos=1)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.client.__aexit__(exc_type, exc, traceback)

    async def collect(self, count: int, *, timeout_s: float = 5.0) -> list[aiomqtt.Message]:
        """The next `count` messages; fails the test if they do not all arrive in time."""
        return await self.collect_until(
            lambda messages: len(messages) == count, timeout_s=timeout_s
        )

    async def collect_until(
        self, done: Callable[[list[aiomqtt.Message]], bool], *, timeout_s: float = 5.0
    ) -> list[aiomqtt.Message]:
        """Messages as they arrive until `done(messages)`; fails the test past `timeout_s`."""
        messages: list[aiomqtt.Message] = []
        async with asyncio.timeout(timeout_s):
            async for message in self.client.messages:
                messages.append(message)
                if done(messages):
                    break
        return messages

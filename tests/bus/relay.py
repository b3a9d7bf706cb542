"""A TCP relay to the test broker that a test can cut and restore, and a broker that refuses.

`TcpRelay` listens on 127.0.0.1 and forwards each connection to Mosquitto. `cut()` stops
listening and closes every relayed connection, so the bus sees a real outage (its connection
drops, reconnects are refused); `restore()` listens on the same port again. `RefusingBroker`
answers every MQTT CONNECT with a CONNACK refusal, as a broker does for bad credentials.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.support import services

#: MQTT 3.1.1 CONNACK: packet type 2, remaining length 2, no session, return code 5.
CONNACK_NOT_AUTHORIZED = b"\x20\x02\x00\x05"


class TcpRelay:
    """Relays 127.0.0.1:<port> to the Mosquitto test broker until cut."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """The mqtt:// URL that reaches the broker through the relay."""
        return f"mqtt://127.0.0.1:{self.port}"

    async def restore(self) -> None:
        """Listen (again, on the same port once one was chosen)."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and drop every relayed connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in list(self._writers):
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        up_reader, up_writer = await asyncio.open_connection(services.MQTT_HOST, services.MQTT_PORT)
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(_pipe(source, sink), name="test.relay.pipe")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await source.read(65_536):
            sink.write(data)
            await sink.drain()
    sink.close()


class RefusingBroker:
    """Accepts TCP, reads the CONNECT, answers "not authorized" and hangs up; counts attempts."""

    def __init__(self) -> None:
        self.attempts = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RefusingBroker:
        self._server = await asyncio.start_server(self._refuse, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        """The mqtt:// URL of this broker."""
        assert self._server is not None
        return f"mqtt://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts += 1
        await reader.read(1_024)
        writer.write(CONNACK_NOT_AUTHORIZED)
        await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

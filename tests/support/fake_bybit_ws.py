"""Websocket half of the Bybit v5 fake: the public linear stream on a real websockets server.

Owns the connection-level protocol of reference bybit-v5.md A2 and A4 (one ack per
subscribe/unsubscribe request, the error acks, the linear pong), per-connection subscriptions,
the fan-out of push frames to subscribers, the connection faults (close frame, abort without one,
stalled pongs, a rejected subscription, raw text) and the record of every client message. It must
not build kline frames or own the clock; `FakeBybit` hands it finished frames.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

WS_PATH = "/v5/public/linear"


@dataclass(frozen=True, slots=True)
class WsRequest:
    """One text frame a client sent: its connection, and the parsed op, req_id and args.

    `op` is None for a frame that was not a JSON object; `raw` always holds the text.
    """

    conn_id: str
    op: str | None
    req_id: Any
    args: tuple[str, ...]
    raw: str


@dataclass(slots=True)
class _Connection:
    """Server-side state of one client socket."""

    conn_id: str
    ws: ServerConnection
    topics: set[str] = field(default_factory=set)


class FakeBybitWs:
    """The websockets server behind `FakeBybit.ws_url`.

    Args:
        is_topic_served: whether a topic exists (right family, interval and exact symbol).
    """

    def __init__(self, is_topic_served: Callable[[str], bool]) -> None:
        self._is_topic_served = is_topic_served
        self._server: Server | None = None
        self._connections: dict[str, _Connection] = {}
        self._changed = asyncio.Condition()
        self._rejections: set[str] = set()
        self.requests: list[WsRequest] = []
        self.connections_opened = 0
        self.stall_pongs = False
        self.url = ""

    async def start(self) -> str:
        """Bind to 127.0.0.1 on an OS-assigned port and return the stream URL."""
        # No protocol pings from the server: they would tie tests to wall time, and Bybit's
        # liveness is the JSON ping anyway (A4).
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=_check_path, ping_interval=None
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}{WS_PATH}"
        return self.url

    async def close(self) -> None:
        """Stop listening and close every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def open_connections(self) -> int:
        """Number of client sockets currently open."""
        return len(self._connections)

    def reject_next_subscribe(self, topic: str) -> None:
        """Fail the next subscription to `topic` (any connection) with a handler-not-found ack."""
        self._rejections.add(topic)

    async def wait_for_requests(self, op: str | None, count: int) -> list[WsRequest]:
        """Wait until at least `count` requests with this `op` were received, and return them."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._matching(op)) >= count)
            return self._matching(op)

    async def wait_for_connections(self, count: int) -> None:
        """Wait until `count` connections have been opened in total."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.connections_opened >= count)

    async def broadcast(self, topic: str, frame: Mapping[str, Any]) -> int:
        """Send a push frame to every connection subscribed to `topic`; return how many got it."""
        text = json.dumps(frame, separators=(",", ":"))
        sent = 0
        for conn in list(self._connections.values()):
            if topic in conn.topics:
                sent += await _send(conn, text)
        return sent

    async def send_text(self, text: str) -> int:
        """Send raw text to every open connection, subscribed or not; return how many got it."""
        sent = 0
        for conn in list(self._connections.values()):
            sent += await _send(conn, text)
        return sent

    async def close_connections(self, code: int = 1000, reason: str = "") -> None:
        """Close every open connection with a close frame and wait for the handshakes."""
        async with asyncio.TaskGroup() as group:
            for conn in list(self._connections.values()):
                group.create_task(conn.ws.close(code, reason), name="fake_bybit.ws.close")

    def abort_connections(self) -> None:
        """Drop every open TCP connection without a close frame (the client sees 1006)."""
        for conn in list(self._connections.values()):
            conn.ws.transport.abort()

    def _matching(self, op: str | None) -> list[WsRequest]:
        return [request for request in self.requests if request.op == op]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, ws: ServerConnection) -> None:
        """Serve one connection until the client or a fault ends it."""
        conn = _Connection(conn_id=str(uuid.uuid4()), ws=ws)
        self._connections[conn.conn_id] = conn
        self.connections_opened += 1
        await self._notify()
        try:
            # A client vanishing (cleanly or not) is normal here; it just ends this handler.
            with suppress(ConnectionClosed):
                async for message in ws:
                    text = message if isinstance(message, str) else message.decode()
                    await self._on_text(conn, text)
        finally:
            del self._connections[conn.conn_id]

    async def _on_text(self, conn: _Connection, text: str) -> None:
        """Record one client frame and answer it as Bybit's linear stream does."""
        try:
            message = json.loads(text)
        except ValueError as exc:
            await self._record(WsRequest(conn.conn_id, None, "", (), text))
            await self._reply(
                conn, op="", req_id="", ret_msg=f"Failed to decode incoming data: {exc}"
            )
            return
        if not isinstance(message, dict):
            await self._record(WsRequest(conn.conn_id, None, "", (), text))
            await self._reply(conn, op="", req_id="", ret_msg="error:invalid op")
            return
        op = message.get("op")
        req_id = message.get("req_id", "")
        raw_args = message.get("args")
        args = tuple(str(arg) for arg in raw_args) if isinstance(raw_args, list) else ()
        await self._record(WsRequest(conn.conn_id, str(op), req_id, args, text))
        if op == "ping":
            if not self.stall_pongs:
                await self._reply(conn, op="ping", req_id=req_id, ret_msg="pong", success=True)
        elif op == "subscribe":
            failure = self._subscribe(conn, args)
            await self._reply(conn, op="subscribe", req_id=req_id, ret_msg=failure)
        elif op == "unsubscribe":
            failure = self._unsubscribe(conn, args)
            await self._reply(conn, op="unsubscribe", req_id=req_id, ret_msg=failure)
        else:
            # Includes a client "replying" {"op":"pong"} (A2).
            await self._reply(conn, op=str(op), req_id=req_id, ret_msg="error:invalid op")

    def _subscribe(self, conn: _Connection, topics: tuple[str, ...]) -> str:
        """Subscribe the valid topics; return "" or the first failure (one ack per request)."""
        failures: list[str] = []
        for topic in topics:
            if topic in self._rejections:
                self._rejections.discard(topic)
                failures.append(f"error:handler not found,topic:{topic}")
            elif not self._is_topic_served(topic):
                failures.append(f"error:handler not found,topic:{topic}")
            elif topic in conn.topics:
                # The existing stream keeps flowing, as on Bybit.
                failures.append(f"error:already subscribed,topic:{topic}")
            else:
                conn.topics.add(topic)
        return failures[0] if failures else ""

    def _unsubscribe(self, conn: _Connection, topics: tuple[str, ...]) -> str:
        """Unsubscribe; unknown topics fail as subscribe does, a topic not held is a no-op."""
        for topic in topics:
            if not self._is_topic_served(topic):
                return f"error:handler not found,topic:{topic}"
        conn.topics.difference_update(topics)
        return ""

    async def _record(self, request: WsRequest) -> None:
        self.requests.append(request)
        await self._notify()

    async def _reply(
        self, conn: _Connection, *, op: str, req_id: Any, ret_msg: str, success: bool | None = None
    ) -> None:
        """Send the linear ack/pong envelope; success defaults to "no error message"."""
        frame = {
            "success": (not ret_msg) if success is None else success,
            "ret_msg": ret_msg,
            "conn_id": conn.conn_id,
            "req_id": req_id,
            "op": op,
        }
        await _send(conn, json.dumps(frame, separators=(",", ":")))


async def _send(conn: _Connection, text: str) -> int:
    """Send to one connection; 1 if sent, 0 if it was already closing (the client's news)."""
    try:
        await conn.ws.send(text)
    except ConnectionClosed:
        return 0
    return 1


def _check_path(connection: ServerConnection, request: Request) -> Response | None:
    """Refuse the upgrade on any path but the public linear stream, as a 404 like Bybit's."""
    if request.path == WS_PATH:
        return None
    return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")

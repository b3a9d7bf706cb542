"""Reading systemd notify datagrams from a socket a test opened (what PID 1 would receive)."""

from __future__ import annotations

import asyncio
import socket


async def receive_until(sock: socket.socket, wanted: bytes, seen: list[bytes]) -> None:
    """Append datagrams from `sock` to `seen` until one equals `wanted`."""
    loop = asyncio.get_running_loop()
    while not seen or seen[-1] != wanted:
        seen.append(await loop.sock_recv(sock, 4096))

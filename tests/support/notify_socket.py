"""Reading systemd notify datagrams from a socket a test opened (what PID 1 would receive)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


async def receive_until(sock: socket.socket, wanted: bytes, seen: list[bytes]) -> None:
    """Append datagrams from `sock` to `seen` until one equals `wanted`."""
    loop = asyncio.get_running_loop()
    while not seen or seen[-1] != wanted:
        seen.append(await loop.sock_recv(sock, 4096))


@contextmanager
def notify_socket(directory: Path) -> Iterator[tuple[socket.socket, Path]]:
    """A bound, non-blocking datagram socket standing in for systemd's NOTIFY_SOCKET."""
    path = directory / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        yield sock, path


async def receive_running(sock: socket.socket, seen: list[bytes]) -> None:
    """Append datagrams until `seen` holds two WATCHDOG pings and a STATUS line (any order)."""
    loop = asyncio.get_running_loop()
    while seen.count(b"WATCHDOG=1") < 2 or not any(m.startswith(b"STATUS=") for m in seen):
        seen.append(await loop.sock_recv(sock, 4096))

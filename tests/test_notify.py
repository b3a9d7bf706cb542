"""`SystemdNotifier` against a real unix datagram socket bound by the test."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from trader.config import systemd_notify_env
from trader.notify import SystemdNotifier

_RECV_TIMEOUT_S = 2.0  # bounds a failing receive only; sends arrive before the receive starts


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound in tmp_path, with the NOTIFY_SOCKET value that names it."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(_RECV_TIMEOUT_S)
        yield sock, str(path)


def _pending(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued on `sock`, without waiting for more."""
    messages = []
    sock.setblocking(False)
    try:
        while True:
            messages.append(sock.recv(4096))
    except BlockingIOError:
        return messages
    finally:
        sock.settimeout(_RECV_TIMEOUT_S)


def test_each_method_sends_its_exact_payload_when_the_socket_is_a_path(
    receiver: tuple[socket.socket, str],
) -> None:
    """ready, status, watchdog and stopping each send one datagram with the protocol's text."""
    sock, address = receiver
    notifier = SystemdNotifier(address)
    notifier.ready()
    notifier.status("recording: 3 frames")
    notifier.watchdog()
    notifier.stopping()
    assert _pending(sock) == [
        b"READY=1",
        b"STATUS=recording: 3 frames",
        b"WATCHDOG=1",
        b"STOPPING=1",
    ]
    assert notifier.enabled
    assert notifier.failed_sends == 0


def test_status_is_one_line_when_the_text_has_newlines(
    receiver: tuple[socket.socket, str],
) -> None:
    """A newline would start a new assignment, so status joins the lines with spaces."""
    sock, address = receiver
    SystemdNotifier(address).status("a\nb")
    assert sock.recv(4096) == b"STATUS=a b"


def test_messages_reach_the_abstract_socket_when_the_address_starts_with_at() -> None:
    """``@name`` addresses the abstract namespace, as systemd's NOTIFY_SOCKET may."""
    name = f"trader-notify-test-{os.getpid()}-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(_RECV_TIMEOUT_S)
        SystemdNotifier("@" + name).ready()
        assert sock.recv(4096) == b"READY=1"


def test_every_method_is_a_no_op_when_notify_socket_is_unset() -> None:
    """Without NOTIFY_SOCKET (not under systemd) nothing is sent and the watchdog is off."""
    notifier = SystemdNotifier(None, watchdog_usec=200_000)
    notifier.ready()
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    assert notifier.failed_sends == 0


def test_notifier_is_disabled_and_warns_when_the_address_is_relative() -> None:
    """An address that is neither absolute nor abstract is refused once, at construction."""
    with capture_logs() as logs:
        notifier = SystemdNotifier("relative.sock")
    assert not notifier.enabled
    assert [entry["event"] for entry in logs] == ["notify_socket_unsupported"]


def test_watchdog_interval_is_half_the_timeout_when_watchdog_usec_is_set(
    receiver: tuple[socket.socket, str],
) -> None:
    """WATCHDOG_USEC=200000 (0.2 s) gives a ping every 0.1 s."""
    _, address = receiver
    assert SystemdNotifier(address, watchdog_usec=200_000).watchdog_interval_s == 0.1
    assert SystemdNotifier(address).watchdog_interval_s is None


def test_send_does_not_raise_and_logs_once_when_the_socket_vanished(tmp_path: Path) -> None:
    """A send to a socket that no longer exists is counted, logged once and never raised."""
    path = tmp_path / "gone.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    path.unlink()
    notifier = SystemdNotifier(str(path))
    with capture_logs() as logs:
        notifier.ready()
        notifier.watchdog()
        notifier.stopping()
    assert notifier.failed_sends == 3
    assert [entry["event"] for entry in logs] == ["notify_send_failed"]
    assert logs[0]["message"] == "READY=1"


async def test_watchdog_loop_pings_until_cancelled_when_the_watchdog_is_enabled(
    receiver: tuple[socket.socket, str],
) -> None:
    """The loop sends WATCHDOG=1 at once and then on every interval from the event loop."""
    sock, address = receiver
    notifier = SystemdNotifier(address, watchdog_usec=2_000)  # a ping every millisecond
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(_RECV_TIMEOUT_S), asyncio.TaskGroup() as group:
        task = group.create_task(notifier.watchdog_loop(), name="test.watchdog")
        received = [await loop.sock_recv(sock, 4096) for _ in range(3)]
        task.cancel()
    assert received == [b"WATCHDOG=1"] * 3


async def test_watchdog_loop_returns_at_once_when_the_watchdog_is_disabled(
    receiver: tuple[socket.socket, str],
) -> None:
    """Without WATCHDOG_USEC the loop ends immediately and sends nothing."""
    sock, address = receiver
    await SystemdNotifier(address).watchdog_loop()
    assert _pending(sock) == []


def test_config_reads_socket_and_timeout_when_systemd_sets_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """systemd_notify_env returns NOTIFY_SOCKET and WATCHDOG_USEC, None for unset or bad values."""
    monkeypatch.setenv("NOTIFY_SOCKET", "@sd")
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert systemd_notify_env() == ("@sd", 60_000_000)
    monkeypatch.delenv("NOTIFY_SOCKET")
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert systemd_notify_env() == (None, None)

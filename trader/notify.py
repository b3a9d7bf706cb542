"""The systemd notify protocol (``sd_notify``) without libsystemd.

Owns `SystemdNotifier`: ``READY=1``, ``STATUS=...``, ``WATCHDOG=1`` and ``STOPPING=1`` sent as
datagrams to the unix socket systemd names in ``NOTIFY_SOCKET`` (a leading ``@`` is the
abstract namespace), the watchdog interval derived from ``WATCHDOG_USEC``, and the
``watchdog_loop`` that pings from the event loop.

It must not read the environment (``trader.config.systemd_notify_env`` does), raise on a failed
send, or block: every send is best effort, because a service must not die because systemd or
journald hiccups, and a missing ``NOTIFY_SOCKET`` (not under systemd) makes every call a no-op.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Final

import structlog

_US_PER_S: Final = 1_000_000


class SystemdNotifier:
    """Best-effort sender of systemd service notifications.

    Each message opens a non-blocking datagram socket, sends and closes it (as libsystemd does),
    so there is no connection to own and nothing to close. The first failed send is logged
    with its error; later failures are only counted, so a vanished socket cannot flood the log.

    Args:
        notify_socket: ``NOTIFY_SOCKET``: an absolute path, or ``@name`` for the abstract
            namespace. None (or any other form, logged once) disables the notifier.
        watchdog_usec: ``WATCHDOG_USEC``: systemd's watchdog timeout; None means no watchdog.
    """

    def __init__(self, notify_socket: str | None, *, watchdog_usec: int | None = None) -> None:
        self._log = structlog.get_logger().bind(component="notify")
        self._address = _address(notify_socket)
        if notify_socket is not None and self._address is None:
            self._log.warning("notify_socket_unsupported", notify_socket=notify_socket)
        # Half the timeout is the usual practice: one late ping still leaves a margin.
        self._watchdog_interval_s = (
            watchdog_usec / 2 / _US_PER_S
            if self._address is not None and watchdog_usec is not None and watchdog_usec > 0
            else None
        )
        self._failed_sends = 0

    @property
    def enabled(self) -> bool:
        """True when a usable notify socket was given."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None."""
        return self._watchdog_interval_s

    @property
    def failed_sends(self) -> int:
        """Messages that could not be sent so far."""
        return self._failed_sends

    def ready(self) -> None:
        """Tell systemd that start-up finished (``Type=notify`` units become active)."""
        self._send("READY=1")

    def status(self, text: str) -> None:
        """Set the one-line status that ``systemctl status`` shows."""
        # A newline would start a new assignment in the datagram; keep the status one line.
        self._send("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> None:
        """Ping the service watchdog."""
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        """Tell systemd that a clean shutdown has begun."""
        self._send("STOPPING=1")

    async def watchdog_loop(self) -> None:
        """Ping the watchdog every `watchdog_interval_s` until cancelled; return if disabled.

        Runs on the event loop on purpose: a blocked or hung loop stops pinging, and systemd
        kills and restarts the service.
        """
        interval_s = self._watchdog_interval_s
        if interval_s is None:
            return
        while True:
            self.watchdog()
            # A periodic timer, not a synchronisation wait.
            await asyncio.sleep(interval_s)

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never block the loop: a full receive queue drops this message instead.
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            self._failed_sends += 1
            if self._failed_sends == 1:
                self._log.warning(
                    "notify_send_failed", message=message, error=str(exc), further="not logged"
                )


def _address(notify_socket: str | None) -> str | None:
    """The `sendto` address for a ``NOTIFY_SOCKET`` value, or None when unusable."""
    if not notify_socket:
        return None
    if notify_socket.startswith("@"):
        return "\0" + notify_socket[1:]
    if notify_socket.startswith("/"):
        return notify_socket
    # vsock: and relative paths exist in newer systemd; the recorder never runs under those.
    return None

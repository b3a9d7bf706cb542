"""Sending one operator command to `<prefix>/control` (what `trader kill`/`resume` do with MQTT).

Owns a short-lived connection with its own client id (never the daemon's, which the broker would
disconnect), signing commands that need it with `mqtt.control_secret`, and one QoS 1 publish.
It is best effort by design: the command is already in `control_events`, so a broker that is
down only costs the faster path. The message names that row (`event_id`, signed with the rest),
so the daemon wakes for it instead of storing it twice. It must not store anything or decide
what a command does.
"""

from __future__ import annotations

import secrets
import time

import aiomqtt
import orjson
import structlog

from trader.bus._connect import load_tls, make_client, parse_broker_url
from trader.bus.control import UNSIGNED_COMMANDS, sign_command
from trader.bus.events import Topics
from trader.config import MqttSettings
from trader.domain import ControlCommand

log = structlog.get_logger()


async def send_command(
    settings: MqttSettings,
    command: ControlCommand,
    reason: str,
    *,
    flatten: bool,
    event_id: int | None = None,
) -> bool:
    """Publish `command`; True once the broker acknowledged it, False when it could not.

    A command that needs a signature is signed when `mqtt.control_secret` is set, and not sent
    at all otherwise (the daemon would reject it).

    Args:
        settings: The `[mqtt]` section.
        command: What to send.
        reason: The operator's reason.
        flatten: For a kill: also close every position.
        event_id: The `control_events` row the command is already stored as, if it is.
    """
    if settings.url is None:
        return False
    body: dict[str, object] = {"command": command.value, "reason": reason}
    if command is ControlCommand.KILL:
        body["flatten"] = flatten
    if event_id is not None:
        body["event_id"] = event_id
    if command not in UNSIGNED_COMMANDS:
        if settings.control_secret is None:
            log.warning("control_not_sent", reason="mqtt.control_secret is not set")
            return False
        body = sign_command(
            body,
            settings.control_secret.get_secret_value(),
            now_ms=time.time_ns() // 1_000_000,
            nonce=secrets.token_hex(16),
        )
    address = parse_broker_url(settings.url)
    tls = await load_tls(settings) if address.tls else None
    try:
        async with make_client(
            settings, address, tls, identifier=f"trader-cli-{secrets.token_hex(6)}"
        ) as client:
            await client.publish(Topics(settings.topic_prefix).control, orjson.dumps(body), qos=1)
    except (aiomqtt.MqttError, OSError) as exc:
        log.warning("control_not_sent", error=str(exc), broker=f"{address.host}:{address.port}")
        return False
    return True

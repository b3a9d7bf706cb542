"""Broker address, client construction, TLS context and the retry decision for the MQTT bus.

Owns reading `mqtt.url` (`mqtt://host[:1883]`, `mqtts://host[:8883]`), building the aiomqtt
client and the TLS context from the `[mqtt]` settings, and splitting connection failures into
retryable (the network, a broker restarting) and fatal (refused credentials, a client id the
broker will not take): retrying a refusal only repeats it.

It must not open connections, sleep or log; the bus shell does.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from trader.config import MqttSettings
from trader.errors import ConfigError
from trader.feeds.backoff import FailureClass, classify_failure

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
#: CONNACK refusals that describe the broker's moment, not our request (MQTT 5 names; paho
#: maps MQTT 3.1.1's return code 3 to "Server unavailable").
_RETRYABLE_REFUSALS = frozenset(
    {"Server unavailable", "Server busy", "Quota exceeded", "Connection rate exceeded"}
)
#: MQTT 3.1.1's raw CONNACK code for "server unavailable", for a refusal given as an int.
_V311_SERVER_UNAVAILABLE = 3
#: Messages aiomqtt buffers before the bus reads them (only the control topic is subscribed).
_INCOMING_QUEUE_SIZE = 1_024
#: Calls besides publishes that may await the broker at once (subscribes, unsubscribes).
_SUBSCRIBE_CALLS = 4


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker listens and whether to speak TLS."""

    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> BrokerAddress:
    """Split `mqtt://host[:port]` or `mqtts://host[:port]` (already checked by MqttSettings).

    Raises:
        ConfigError: The URL is not of that form.
    """
    scheme, sep, rest = url.partition("://")
    host, _, port = rest.partition(":")
    if not sep or scheme not in _DEFAULT_PORTS or not host or (port and not port.isdigit()):
        raise ConfigError(f"mqtt.url {url!r} is not mqtt://host:port", key="mqtt.url")
    return BrokerAddress(
        host=host, port=int(port) if port else _DEFAULT_PORTS[scheme], tls=scheme == "mqtts"
    )


def make_tls_context(
    *, ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext:
    """A client TLS context that verifies the broker's certificate and host name.

    Reads files: call it through `asyncio.to_thread`.

    Raises:
        ConfigError: A file is missing or is not a certificate or key.
    """
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        if cert_file is not None:
            context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mqtt TLS files unusable: {exc}", key="mqtt.tls_ca_file") from exc
    return context


def make_client(
    settings: MqttSettings,
    address: BrokerAddress,
    tls: ssl.SSLContext | None,
    *,
    identifier: str | None,
    will: aiomqtt.Will | None = None,
) -> aiomqtt.Client:
    """A not-yet-connected client for one connection attempt (clean session, MQTT 3.1.1).

    Args:
        settings: The `[mqtt]` section (credentials, keepalive, timeout).
        address: Where the broker listens.
        tls: The TLS context for mqtts://, else None.
        identifier: The client id (None: the client picks a random one). The daemon passes
            `mqtt.client_id`; a short-lived sender passes its own, since the broker drops the
            older of two connections that share an id.
        will: What the broker publishes for us if the connection drops without a DISCONNECT.
    """
    password = settings.password
    client = aiomqtt.Client(
        address.host,
        address.port,
        username=settings.username,
        password=password.get_secret_value() if password is not None else None,
        identifier=identifier,
        keepalive=settings.keepalive_s,
        timeout=settings.timeout_s,
        tls_context=tls,
        clean_session=True,
        will=will,
        max_queued_incoming_messages=_INCOMING_QUEUE_SIZE,
    )
    # aiomqtt warns on every publish past 10 awaiting their acknowledgement; the bus allows
    # `max_inflight` by design (plus a few subscribes), so the warning would only be noise.
    client.pending_calls_threshold = settings.max_inflight + _SUBSCRIBE_CALLS
    return client


async def load_tls(settings: MqttSettings) -> ssl.SSLContext:
    """`make_tls_context` for `settings`, off the event loop (it reads files).

    Raises:
        ConfigError: A file is missing or is not a certificate or key.
    """
    return await asyncio.to_thread(
        make_tls_context,
        ca_file=settings.tls_ca_file,
        cert_file=settings.tls_cert_file,
        key_file=settings.tls_key_file,
    )


def classify_mqtt_failure(exc: BaseException) -> FailureClass:
    """Whether reconnecting after `exc` can help.

    A CONNACK refusal is fatal unless it says the broker is unavailable or busy; any other
    aiomqtt error (refused TCP connect, lost connection, a timed-out acknowledgement, a TLS
    handshake failure, which aiomqtt reports as a plain MqttError) is retryable. Everything else
    follows the feed's classifier: network errors retry, unforeseen errors are fatal.
    """
    if isinstance(exc, MqttConnectError):
        if isinstance(exc.rc, ReasonCode):
            return "retryable" if exc.rc.getName() in _RETRYABLE_REFUSALS else "fatal"
        return "retryable" if exc.rc == _V311_SERVER_UNAVAILABLE else "fatal"
    if isinstance(exc, aiomqtt.MqttError):
        return "retryable"
    return classify_failure(exc)

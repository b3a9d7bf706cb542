"""Tests for trader.bus._connect and the [mqtt] settings it reads: URLs, TLS and retry rules."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from trader.bus import MqttBus
from trader.bus._connect import (
    BrokerAddress,
    classify_mqtt_failure,
    make_tls_context,
    parse_broker_url,
)
from trader.config import MqttSettings
from trader.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("mqtt://broker", BrokerAddress("broker", 1883, tls=False)),
        ("mqtt://127.0.0.1:1884", BrokerAddress("127.0.0.1", 1884, tls=False)),
        ("mqtts://broker.example", BrokerAddress("broker.example", 8883, tls=True)),
    ],
)
def test_broker_url_gives_host_port_and_tls_when_parsed(url: str, address: BrokerAddress) -> None:
    """mqtt:// and mqtts:// URLs give the host, the port (or the scheme's default) and TLS."""
    assert parse_broker_url(url) == address


@pytest.mark.parametrize(
    "values",
    [
        {"url": "http://broker:1883"},
        {"url": "mqtt://user:pw@broker"},
        {"url": "mqtt://broker:99999"},
        {"url": "mqtt://broker/path"},
        {"topic_prefix": "trader/#"},
        {"topic_prefix": "/trader"},
        {"topic_prefix": ""},
        {"url": "mqtt://broker", "tls_ca_file": "/etc/ca.pem"},
        {"url": "mqtts://broker", "tls_cert_file": "/etc/client.crt"},
        {"reconnect_base_s": 5.0, "reconnect_cap_s": 1.0},
        {"queue_size": 0},
        {"control_secret": "short"},
    ],
)
def test_mqtt_settings_are_refused_when_values_are_bad(values: dict[str, Any]) -> None:
    """Bad URLs, wildcard prefixes and TLS files without mqtts:// fail at start-up."""
    with pytest.raises(ValidationError):
        MqttSettings.model_validate(values)


def _refusal(name: str) -> MqttConnectError:
    return MqttConnectError(ReasonCode(PacketTypes.CONNACK, name))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_refusal("Bad user name or password"), "fatal"),
        (_refusal("Not authorized"), "fatal"),
        (_refusal("Client identifier not valid"), "fatal"),
        (_refusal("Server unavailable"), "retryable"),
        (MqttConnectError(3), "retryable"),
        (MqttConnectError(4), "fatal"),
        (aiomqtt.MqttError("[Errno 111] Connection refused"), "retryable"),
        (aiomqtt.MqttCodeError(7, "Unexpected disconnection"), "retryable"),
        (ConnectionResetError(), "retryable"),
        (KeyError("bug"), "fatal"),
    ],
)
def test_failure_is_classified_when_connection_ends(exc: BaseException, expected: str) -> None:
    """Refused credentials are fatal; a broker that is down, busy or unreachable is retried."""
    assert classify_mqtt_failure(exc) == expected


def test_tls_context_verifies_the_broker_when_built_from_system_store() -> None:
    """mqtts:// without a CA file trusts the system store and checks the host name."""
    context = make_tls_context(ca_file=None, cert_file=None, key_file=None)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


async def test_bus_refuses_to_start_when_a_tls_file_is_missing(tmp_path: Path) -> None:
    """A missing CA file is a configuration error at entry, not a retry loop."""
    settings = MqttSettings(url="mqtts://broker", tls_ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="TLS"):
        async with MqttBus(settings=settings):
            pass

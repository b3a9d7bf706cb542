"""Reachability checks for the local services some integration tests need.

Owns where the test services live (PostgreSQL on 127.0.0.1:5432, Mosquitto on 127.0.0.1:1883)
and the rule for a missing one: skip with a clear reason, or fail when the environment sets
`TRADER_REQUIRE_SERVICES=1` (CI, where a silent skip would hide a broken service). It must not
start, stop or configure the services.
"""

from __future__ import annotations

import socket
from functools import cache

import pytest

from trader.config import environ_flag

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_USER = "postgres"
#: A database that always exists, used to create and drop the per-test databases.
POSTGRES_MAINTENANCE_DB = "postgres"
MQTT_HOST = "127.0.0.1"
MQTT_PORT = 1883

_CONNECT_TIMEOUT_S = 0.5


@cache
def is_reachable(host: str, port: int) -> bool:
    """True when a TCP connection to host:port succeeds (checked once per session)."""
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip the current test when the service is down, or fail it when services are required."""
    if is_reachable(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if environ_flag("TRADER_REQUIRE_SERVICES"):
        pytest.fail(f"{reason} and TRADER_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(reason)


def require_postgres() -> None:
    """`require_service` for the PostgreSQL test server."""
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)


def require_mqtt() -> None:
    """`require_service` for the Mosquitto test broker."""
    require_service("Mosquitto", MQTT_HOST, MQTT_PORT)

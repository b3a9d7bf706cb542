"""The MQTT bus: engine events out, the retained trading state, operator commands in.

    events.py    topics, QoS per kind and the versioned JSON envelope (pure)
    outbox.py    the outgoing queue and its drop policy while the broker is slow or gone (pure)
    control.py   control command parsing, HMAC verification, freshness and replay (pure)
    inbox.py     verified control outcomes waiting for the daemon
    publisher.py `MqttBus`: the aiomqtt connection, reconnects, the engine's `EventPublisher`

The daemon builds it with `build_bus(settings.mqtt)` (None when `mqtt.url` is unset), enters it
after the database and before risk, hands it to the engine as its publisher, and consumes
`bus.control()` in a task of its own. This package must not decide what a command does or what
an event contains.
"""

from trader.bus.control import (
    ControlOutcome,
    ControlRejection,
    ControlVerifier,
    RejectReason,
    VerifiedCommand,
    canonical_bytes,
    sign_command,
)
from trader.bus.events import PRESENCE_FIELD, SCHEMA_VERSION, EventKind, Presence, QoS, Topics
from trader.bus.publisher import BusState, BusStats, MqttBus, build_bus

__all__ = [
    "PRESENCE_FIELD",
    "SCHEMA_VERSION",
    "BusState",
    "BusStats",
    "ControlOutcome",
    "ControlRejection",
    "ControlVerifier",
    "EventKind",
    "MqttBus",
    "Presence",
    "QoS",
    "RejectReason",
    "Topics",
    "VerifiedCommand",
    "build_bus",
    "canonical_bytes",
    "sign_command",
]

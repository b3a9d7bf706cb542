"""MQTT topics and payload schemas: the one place that says what goes where, and how.

Owns the topic layout of CONTRACT.md (`<prefix>/events/<kind>`, the retained `<prefix>/state`,
`<prefix>/control`), the delivery class (QoS) of each event kind, and the JSON envelope every
outgoing payload is wrapped in:

    {"schema_version": 1, "kind": "fill", "bus_id": "3f2a9c0d51e7", "seq": 17,
     "ts_ms": 1718000000000, "data": {...the engine's row...}}

`ts_ms` is the wall-clock epoch ms at which the event was handed to the bus (the row keeps its
own times inside `data`). `seq` counts per kind from 1 for one bus instance (`bus_id`, random
per process), so a consumer sees a gap where events were dropped and a reset where the daemon
restarted; QoS 1 is at-least-once, so a consumer dedupes on `(bus_id, kind, seq)`.

The retained state's `data` carries `"daemon"` (`Presence`): "running" while the daemon trades,
"stopped" or "failed" in the last state it publishes on its way out, and "offline" in the
MQTT will the broker publishes in its place when the connection drops without a goodbye (a
crash, a kill -9, a network cut). A will is fixed when its connection is made: its other fields
are the last state known then (none on the first connection), its `ts_ms` is that moment, and
it takes the next state `seq` (a consumer sees a gap where a will was never needed).

It must not do I/O, log, or read a clock: the bus shell passes `ts_ms` in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any

import orjson

#: Bump when a field of the envelope (or of a `data` row) changes meaning or disappears.
SCHEMA_VERSION = 1


class EventKind(StrEnum):
    """What an event is about; the last level of its topic."""

    DECISION = "decision"
    ORDER = "order"
    FILL = "fill"
    RISK = "risk"
    HEARTBEAT = "heartbeat"
    #: The trading state, published retained at `<prefix>/state` rather than under events/.
    STATE = "state"


class Presence(StrEnum):
    """Whether the daemon behind the retained state is there (its `"daemon"` field)."""

    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    OFFLINE = "offline"


#: The state payload's field that holds the `Presence`.
PRESENCE_FIELD = "daemon"


class QoS(IntEnum):
    """MQTT quality of service levels the bus uses."""

    AT_MOST_ONCE = 0
    AT_LEAST_ONCE = 1


#: Telemetry is best effort; anything an operator or a ledger must not miss is QoS 1.
QOS_BY_KIND: Mapping[EventKind, QoS] = {
    EventKind.DECISION: QoS.AT_MOST_ONCE,
    EventKind.HEARTBEAT: QoS.AT_MOST_ONCE,
    EventKind.ORDER: QoS.AT_LEAST_ONCE,
    EventKind.FILL: QoS.AT_LEAST_ONCE,
    EventKind.RISK: QoS.AT_LEAST_ONCE,
    EventKind.STATE: QoS.AT_LEAST_ONCE,
}


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one daemon, all under `prefix` (validated by `MqttSettings`)."""

    prefix: str

    @property
    def state(self) -> str:
        """The retained trading-state topic."""
        return f"{self.prefix}/state"

    @property
    def control(self) -> str:
        """The topic operators publish commands to."""
        return f"{self.prefix}/control"

    def topic_of(self, kind: EventKind) -> str:
        """The topic an event of `kind` is published to."""
        if kind is EventKind.STATE:
            return self.state
        return f"{self.prefix}/events/{kind.value}"


@dataclass(frozen=True, slots=True)
class Outbound:
    """One encoded message waiting for the broker.

    Attributes:
        order: Position in the bus-wide publish order (the outbox sends lowest first).
        kind: The event kind (decides the queue it waits in).
        topic: Where it goes.
        payload: The encoded envelope.
        qos: Its quality of service.
        retain: Whether the broker keeps it for late subscribers (only the state).
    """

    order: int
    kind: EventKind
    topic: str
    payload: bytes
    qos: QoS
    retain: bool

    @property
    def reliable(self) -> bool:
        """True for QoS 1 kinds, which the outbox never drops while it has room."""
        return self.qos is QoS.AT_LEAST_ONCE


def _json_default(value: object) -> object:
    """orjson's fallback: money stays exact as a decimal string; anything else is a bug."""
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} in an event payload")


def encode_event(
    kind: EventKind, data: Mapping[str, Any], *, bus_id: str, seq: int, ts_ms: int
) -> bytes:
    """Wrap `data` in the versioned envelope and encode it as JSON.

    Args:
        kind: The event kind.
        data: The payload (an engine row); Decimal values become strings, numpy scalars
            numbers, enums their values, NaN null.
        bus_id: The publishing bus instance.
        seq: The per-kind sequence number.
        ts_ms: Wall-clock epoch ms at which the event reached the bus.

    Raises:
        TypeError: `data` holds a value JSON cannot represent (orjson.JSONEncodeError is one).
    """
    envelope = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind.value,
        "bus_id": bus_id,
        "seq": seq,
        "ts_ms": ts_ms,
        "data": data,
    }
    # Numpy scalars reach rows from features and model outputs; they encode as plain numbers.
    options = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    return orjson.dumps(envelope, default=_json_default, option=options)

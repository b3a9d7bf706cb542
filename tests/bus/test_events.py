"""Tests for trader.bus.events: topics, QoS per kind and the JSON envelope."""

from __future__ import annotations

import enum
import math
from decimal import Decimal

import numpy as np
import orjson
import pytest

from trader.bus.events import QOS_BY_KIND, SCHEMA_VERSION, EventKind, QoS, Topics, encode_event


class _Side(enum.Enum):
    BUY = "buy"


def test_topics_follow_the_contract_when_built_from_a_prefix() -> None:
    """Events under <prefix>/events/<kind>, the state and control directly under the prefix."""
    topics = Topics("desk/trader")
    assert topics.topic_of(EventKind.FILL) == "desk/trader/events/fill"
    assert topics.topic_of(EventKind.STATE) == topics.state == "desk/trader/state"
    assert topics.control == "desk/trader/control"


def test_only_telemetry_is_best_effort_when_qos_is_looked_up() -> None:
    """Decisions and heartbeats are QoS 0; orders, fills, risk events and the state QoS 1."""
    best_effort = {kind for kind, qos in QOS_BY_KIND.items() if qos is QoS.AT_MOST_ONCE}
    assert best_effort == {EventKind.DECISION, EventKind.HEARTBEAT}
    assert set(QOS_BY_KIND) == set(EventKind)


def test_envelope_carries_version_and_exact_values_when_encoded() -> None:
    """The envelope has schema_version, kind, bus_id, seq and ts_ms; money stays exact."""
    data = {
        "price": Decimal("0.1"),
        "qty": np.float32(2.5),
        "steps": np.int64(3),
        "side": _Side.BUY,
        "stop_loss": math.nan,
    }
    body = orjson.loads(encode_event(EventKind.ORDER, data, bus_id="b1", seq=7, ts_ms=123))
    assert body == {
        "schema_version": SCHEMA_VERSION,
        "kind": "order",
        "bus_id": "b1",
        "seq": 7,
        "ts_ms": 123,
        "data": {"price": "0.1", "qty": 2.5, "steps": 3, "side": "buy", "stop_loss": None},
    }


def test_encoding_raises_type_error_when_a_value_has_no_json_form() -> None:
    """An arbitrary object is a bug in the caller, reported as TypeError (the bus counts it)."""
    with pytest.raises(TypeError):
        encode_event(EventKind.FILL, {"x": object()}, bus_id="b1", seq=1, ts_ms=1)

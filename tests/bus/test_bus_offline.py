"""Tests for the synchronous side of trader.bus.MqttBus, which needs no broker."""

from __future__ import annotations

import random

import structlog

from trader.bus import MqttBus
from trader.config import MqttSettings
from trader.feeds.backoff import Backoff


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def _bus(clock: _Clock, **overrides: object) -> MqttBus:
    settings = MqttSettings.model_validate({"url": "mqtt://127.0.0.1:9", **overrides})
    return MqttBus(
        settings=settings,
        backoff=Backoff(base_s=0.01, cap_s=0.05, rng=random.Random(0)),
        clock=clock,
    )


async def test_unpublishable_event_is_counted_when_kind_or_payload_is_bad() -> None:
    """publish never raises: an unknown kind or a payload JSON cannot hold is counted instead."""
    bus = _bus(_Clock())
    bus.publish("gossip", {"a": 1})
    bus.publish("fill", {"not_json": object()})
    bus.publish("fill", {"fine": 1})
    stats = bus.stats()
    assert (stats.unpublishable, stats.waiting) == (2, 1)


async def test_drop_warning_is_logged_at_most_once_a_second_when_telemetry_overflows() -> None:
    """A flood of dropped telemetry is counted in full but warned about once per second."""
    clock = _Clock()
    bus = _bus(clock, queue_size=1)
    with structlog.testing.capture_logs() as logs:
        for index in range(100):
            bus.publish("decision", {"i": index})
        clock.now_s += 1.0
        bus.publish("heartbeat", {})
    warnings = [entry for entry in logs if entry["event"] == "mqtt_events_dropped"]
    assert [entry["telemetry_dropped"] for entry in warnings] == [1, 100]
    assert all(entry["log_level"] == "warning" for entry in warnings)
    assert bus.stats().telemetry_dropped == 100


async def test_reliable_drop_is_logged_as_error_when_its_bound_is_reached() -> None:
    """Losing a QoS 1 event (an outage past reliable_queue_size) is an error, not a warning."""
    bus = _bus(_Clock(), reliable_queue_size=2)
    with structlog.testing.capture_logs() as logs:
        for index in range(3):
            bus.publish("fill", {"i": index})
    (entry,) = [entry for entry in logs if entry["event"] == "mqtt_events_dropped"]
    assert (entry["log_level"], entry["reliable_dropped"]) == ("error", 1)

"""Tests for trader.bus.publisher against the real Mosquitto on 127.0.0.1:1883.

Each test uses its own topic prefix, so tests never see each other's messages.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiomqtt
import orjson
import pytest
from pydantic import SecretStr

from tests.bus.listener import Listener
from tests.bus.relay import RefusingBroker, TcpRelay
from tests.support import services
from tests.support.eventually import until
from trader.bus import (
    SCHEMA_VERSION,
    BusState,
    ControlRejection,
    MqttBus,
    RejectReason,
    VerifiedCommand,
    sign_command,
)
from trader.config import MqttSettings
from trader.domain import ControlCommand
from trader.engine import EventPublisher
from trader.errors import FatalError
from trader.feeds.backoff import Backoff

pytestmark = pytest.mark.mqtt

SECRET = "test-control-secret"
BROKER_URL = f"mqtt://{services.MQTT_HOST}:{services.MQTT_PORT}"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A topic prefix no other test (or earlier run) uses; its retained state (a will left by
    a cut connection) is removed afterwards."""
    prefix = f"trader-test/{uuid.uuid4().hex[:12]}"
    yield prefix
    async with aiomqtt.Client(services.MQTT_HOST, services.MQTT_PORT) as client:
        await client.publish(f"{prefix}/state", b"", qos=1, retain=True)


def _bus(
    prefix: str, url: str = BROKER_URL, *, backoff: Backoff | None = None, **overrides: Any
) -> MqttBus:
    settings = MqttSettings(
        url=url,
        topic_prefix=prefix,
        control_secret=SecretStr(SECRET),
        timeout_s=2.0,
        **overrides,
    )
    return MqttBus(settings=settings, backoff=backoff or _fast_backoff())


def _fast_backoff() -> Backoff:
    return Backoff(base_s=0.01, cap_s=0.05, rng=random.Random(0))


def _envelope(message: aiomqtt.Message) -> dict[str, Any]:
    assert isinstance(message.payload, bytes)
    body: dict[str, Any] = orjson.loads(message.payload)
    return body


@pytest.fixture
async def relay() -> AsyncIterator[TcpRelay]:
    """A cuttable relay to the broker, listening."""
    relay = TcpRelay()
    await relay.restore()
    try:
        yield relay
    finally:
        await relay.cut()


async def test_events_arrive_on_kind_topics_with_their_qos_when_published(prefix: str) -> None:
    """Each kind goes to <prefix>/events/<kind> in a versioned envelope at its QoS."""
    kinds = {"decision": 0, "order": 1, "fill": 1, "risk": 1, "heartbeat": 0}
    async with Listener(f"{prefix}/#") as listener, _bus(prefix) as bus:
        publisher: EventPublisher = bus
        assert publisher.enabled
        for kind in kinds:
            publisher.publish(kind, {"symbol": "BTCUSDT", "price": Decimal("65000.5"), "n": 1})
        messages = await listener.collect(len(kinds))
    assert {m.topic.value: m.qos for m in messages} == {
        f"{prefix}/events/{kind}": qos for kind, qos in kinds.items()
    }
    for message in messages:
        envelope = _envelope(message)
        assert envelope["schema_version"] == SCHEMA_VERSION
        assert envelope["kind"] == message.topic.value.rsplit("/", 1)[1]
        assert envelope["bus_id"] == bus.bus_id
        assert envelope["seq"] == 1
        assert abs(envelope["ts_ms"] - time.time() * 1_000) < 60_000
        assert envelope["data"] == {"symbol": "BTCUSDT", "price": "65000.5", "n": 1}
        assert not message.retain


async def test_latest_state_reaches_late_subscriber_when_retained(prefix: str) -> None:
    """The state is retained at <prefix>/state: a subscriber that joins later still gets it."""
    async with _bus(prefix) as bus:
        bus.publish_state({"trading_state": "ACTIVE"})
        bus.publish_state({"trading_state": "HALTED", "reason": "kill"})
        assert await bus.flush(timeout_s=5.0)
    try:
        async with Listener(f"{prefix}/state") as late:
            (message,) = await late.collect(1)
        assert message.retain
        assert message.qos == 1
        assert _envelope(message)["data"] == {"trading_state": "HALTED", "reason": "kill"}
    finally:
        async with aiomqtt.Client(services.MQTT_HOST, services.MQTT_PORT) as client:
            # An empty retained payload deletes it from the (persistent) test broker.
            await client.publish(f"{prefix}/state", b"", qos=1, retain=True)


async def test_control_messages_arrive_as_outcomes_when_a_client_publishes(prefix: str) -> None:
    """Payloads on <prefix>/control reach the daemon parsed: commands, or reasoned rejections."""
    now_ms = time.time_ns() // 1_000_000
    resume = sign_command({"command": "resume"}, SECRET, now_ms=now_ms, nonce=uuid.uuid4().hex)
    payloads = [
        {"command": "kill", "reason": "operator"},
        {"command": "resume", "reason": "unsigned"},
        resume,
        resume,
        "not json at all",
    ]
    async with _bus(prefix) as bus, aiomqtt.Client(services.MQTT_HOST, services.MQTT_PORT) as cli:
        await asyncio.wait_for(bus.wait_connected(), 5.0)
        for payload in payloads:
            raw = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
            await cli.publish(bus.topics.control, raw, qos=1)
        outcomes = []
        async with asyncio.timeout(5.0):
            async for outcome in bus.control():
                outcomes.append(outcome)
                if len(outcomes) == len(payloads):
                    break
    kill, unsigned, accepted, replayed, junk = outcomes
    assert isinstance(kill, VerifiedCommand)
    assert (kill.command, kill.reason, kill.flatten) == (ControlCommand.KILL, "operator", True)
    assert isinstance(accepted, VerifiedCommand)
    assert (accepted.command, accepted.authenticated) == (ControlCommand.RESUME, True)
    reasons = [o.reason for o in (unsigned, replayed, junk) if isinstance(o, ControlRejection)]
    assert reasons == [RejectReason.UNSIGNED, RejectReason.REPLAYED, RejectReason.MALFORMED]
    assert (bus.stats().control_accepted, bus.stats().control_rejected) == (2, 3)


async def test_retained_kill_is_rejected_when_the_bus_subscribes(prefix: str) -> None:
    """An old kill left retained on the control topic does not re-fire at start-up."""
    control = f"{prefix}/control"
    async with aiomqtt.Client(services.MQTT_HOST, services.MQTT_PORT) as client:
        await client.publish(control, orjson.dumps({"command": "kill"}), qos=1, retain=True)
        try:
            async with _bus(prefix) as bus:
                outcome = await asyncio.wait_for(anext(aiter(bus.control())), 5.0)
        finally:
            await client.publish(control, b"", qos=1, retain=True)
    assert isinstance(outcome, ControlRejection)
    assert outcome.reason is RejectReason.RETAINED


async def test_events_wait_and_arrive_when_broker_is_reachable_only_after_start(
    prefix: str, relay: TcpRelay
) -> None:
    """Entering does not need the broker: events queue meanwhile and go out once it is up."""
    await relay.cut()
    backoff = _fast_backoff()
    async with (
        Listener(f"{prefix}/events/#") as listener,
        _bus(prefix, relay.url, backoff=backoff) as bus,
    ):
        bus.publish("order", {"id": "o-1"})
        bus.publish("fill", {"id": "f-1"})
        await until(lambda: backoff.attempts >= 3, timeout_s=5.0, what="refused connects")
        assert bus.state is not BusState.CONNECTED
        assert bus.stats().waiting == 2
        await relay.restore()
        messages = await listener.collect(2)
        assert [_envelope(m)["data"]["id"] for m in messages] == ["o-1", "f-1"]
        assert bus.stats().connects == 1


async def test_publish_never_blocks_and_qos1_backlog_arrives_when_broker_returns(
    prefix: str, relay: TcpRelay
) -> None:
    """During an outage publish returns at once, telemetry beyond the bound is dropped and
    counted, and every QoS 1 event is delivered in order once the broker is back."""
    telemetry_max, decisions, fills = 8, 500, 200
    async with (
        Listener(f"{prefix}/events/#") as listener,
        _bus(prefix, relay.url, queue_size=telemetry_max) as bus,
    ):
        await asyncio.wait_for(bus.wait_connected(), 5.0)
        await relay.cut()
        await until(lambda: bus.state is not BusState.CONNECTED, timeout_s=5.0, what="outage")
        # A plain function cannot wait on the broker or the loop: "never blocks" is its type.
        assert not inspect.iscoroutinefunction(bus.publish)
        for index in range(max(decisions, fills)):
            if index < decisions:
                bus.publish("decision", {"i": index})
            if index < fills:
                bus.publish("fill", {"i": index})
        stats = bus.stats()
        assert stats.telemetry_dropped == decisions - telemetry_max
        assert (stats.reliable_dropped, stats.waiting) == (0, telemetry_max + fills)
        await relay.restore()
        messages = await listener.collect(telemetry_max + fills, timeout_s=10.0)
        assert await bus.flush(timeout_s=5.0)
    by_kind: dict[str, list[int]] = {"decision": [], "fill": []}
    for message in messages:
        envelope = _envelope(message)
        by_kind[envelope["kind"]].append(envelope["data"]["i"])
    assert by_kind["fill"] == list(range(fills))
    assert by_kind["decision"] == list(range(decisions - telemetry_max, decisions))
    assert bus.stats().disconnects == 1


async def test_unacknowledged_events_are_sent_again_when_the_connection_drops_mid_burst(
    prefix: str, relay: TcpRelay
) -> None:
    """Fills in flight when the connection breaks are resent: every one arrives at least once,
    first arrivals in publish order."""
    fills = 2_000
    async with Listener(f"{prefix}/events/#") as listener, _bus(prefix, relay.url) as bus:
        await asyncio.wait_for(bus.wait_connected(), 5.0)
        for index in range(fills):
            bus.publish("fill", {"i": index})
        await until(lambda: bus.stats().published >= 20, timeout_s=5.0, what="sending")
        await relay.cut()
        await until(lambda: bus.state is not BusState.CONNECTED, timeout_s=5.0, what="outage")
        assert bus.stats().published < fills
        await relay.restore()
        seen: dict[int, None] = {}

        def all_seen(messages: list[aiomqtt.Message]) -> bool:
            seen.setdefault(_envelope(messages[-1])["seq"], None)
            return len(seen) == fills

        await listener.collect_until(all_seen, timeout_s=10.0)
    assert list(seen) == list(range(1, fills + 1))


async def test_refused_credentials_are_fatal_when_the_broker_says_not_authorized(
    prefix: str,
) -> None:
    """A CONNACK refusal is not retried: the bus fails its task group with FatalError."""
    async with RefusingBroker() as broker:
        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.timeout(5.0), _bus(prefix, broker.url, username="intruder"):
                await asyncio.Event().wait()  # cancelled by the bus's failing task group
    assert info.group_contains(FatalError)
    assert broker.attempts == 1


async def test_reentry_is_refused_when_the_bus_is_running(prefix: str) -> None:
    """A running bus cannot be entered a second time."""
    async with _bus(prefix) as bus:
        with pytest.raises(RuntimeError, match="re-entered"):
            await bus.__aenter__()


async def test_bus_delivers_again_when_reused_after_exit(prefix: str) -> None:
    """A bus that was exited can be entered again and publishes on the new connection."""
    bus = _bus(prefix)
    async with bus:
        await asyncio.wait_for(bus.wait_connected(), 5.0)
    assert bus.state is BusState.CLOSED
    async with Listener(f"{prefix}/#") as listener, bus:
        bus.publish("risk", {"kind": "halted"})
        (message,) = await listener.collect(1)
    assert _envelope(message)["data"] == {"kind": "halted"}
    assert bus.stats().connects == 2


async def _retained_state(prefix: str) -> dict[str, Any]:
    """The retained `<prefix>/state` as a late subscriber gets it, then removed from the broker."""
    try:
        async with Listener(f"{prefix}/state") as late:
            (message,) = await late.collect(1)
        assert message.retain
        return _envelope(message)
    finally:
        async with aiomqtt.Client(services.MQTT_HOST, services.MQTT_PORT) as client:
            await client.publish(f"{prefix}/state", b"", qos=1, retain=True)


async def test_retained_state_says_offline_when_the_connection_drops_uncleanly(
    prefix: str, relay: TcpRelay
) -> None:
    """The broker publishes the bus's will: the last state known at connect, marked offline."""
    async with _bus(prefix, relay.url) as bus:
        await asyncio.wait_for(bus.wait_connected(), 5.0)
        bus.publish_state({"state": "ACTIVE", "daemon": "running"})
        assert await bus.flush(timeout_s=5.0)
        await relay.cut()  # the broker hears no DISCONNECT: as if the process died
        await until(lambda: bus.state is not BusState.CONNECTED, timeout_s=5.0, what="outage")
        await relay.restore()  # the new connection's will holds the state published above
        await asyncio.wait_for(bus.wait_connected(), 5.0)
        await relay.cut()
        envelope = await _retained_state(prefix)
    assert envelope["schema_version"] == SCHEMA_VERSION
    assert envelope["kind"] == "state"
    assert envelope["bus_id"] == bus.bus_id
    assert envelope["data"] == {"state": "ACTIVE", "daemon": "offline"}


async def test_retained_state_is_kept_when_the_bus_closes_cleanly(prefix: str) -> None:
    """A clean close sends DISCONNECT, so the will is not published over the last state."""
    async with _bus(prefix) as bus:
        await asyncio.wait_for(bus.wait_connected(), 5.0)
        bus.publish_state({"state": "HALTED", "daemon": "stopped"})
        assert await bus.flush(timeout_s=5.0)
    envelope = await _retained_state(prefix)
    assert envelope["data"] == {"state": "HALTED", "daemon": "stopped"}

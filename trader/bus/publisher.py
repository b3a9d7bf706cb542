"""The MQTT bus: events out, the retained state, and operator commands in (aiomqtt).

Owns the broker connection and its lifetime: connecting (username/password, TLS for mqtts://),
subscribing to `<prefix>/control`, sending what the `Outbox` holds with a bounded number of
QoS 1 publishes awaiting their acknowledgement, and reconnecting with jittered, capped
backoff. It implements the engine's `EventPublisher`: `publish` is synchronous, never blocks,
never raises and never waits on the broker, so trading goes on while the broker is down (the
outbox's drop policy says what is kept meanwhile). Control payloads go through the sans-I/O
`ControlVerifier`; the outcomes reach the daemon through `MqttBus.control()`.

It must not decide what a command does, store anything, or hold trading logic: the daemon
stores and applies commands, the engine decides what to publish. Secrets (the password and the
control secret) are never logged.

Failure rules: network failures and a broker that is unavailable are retried forever, with
backoff that resets after each successful subscribe; a refusal of our credentials or client id
is fatal (`FatalError` from the connection task, which fails the TaskGroup the bus runs in and
with it the daemon, as a fatal feed error does).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any

import aiomqtt
import orjson
import structlog

from trader.bus._connect import classify_mqtt_failure, load_tls, make_client, parse_broker_url
from trader.bus._session import Session
from trader.bus.control import ControlVerifier
from trader.bus.events import (
    PRESENCE_FIELD,
    QOS_BY_KIND,
    EventKind,
    Outbound,
    Presence,
    Topics,
    encode_event,
)
from trader.bus.inbox import ControlInbox
from trader.bus.outbox import Outbox
from trader.config import MqttSettings
from trader.errors import ConfigError, FatalError
from trader.feeds.backoff import Backoff

log = structlog.get_logger()

_WARN_INTERVAL_S = 1.0


class BusState(Enum):
    """Where the connection stands."""

    CLOSED = "closed"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"


@dataclass(frozen=True, slots=True)
class BusStats:
    """Counters over the bus's life (for the heartbeat, status and tests)."""

    published: int
    waiting: int
    in_flight: int
    telemetry_dropped: int
    reliable_dropped: int
    state_superseded: int
    unpublishable: int
    connects: int
    disconnects: int
    control_accepted: int
    control_rejected: int
    control_dropped: int
    control_suppressed: int


class _Throttle:
    """True at most once per `interval_s` (warnings that must not flood the log)."""

    def __init__(self, clock: Callable[[], float], interval_s: float) -> None:
        self._clock = clock
        self._interval_s = interval_s
        self._last_s = -float("inf")

    def ready(self) -> bool:
        now_s = self._clock()
        if now_s - self._last_s < self._interval_s:
            return False
        self._last_s = now_s
        return True


class MqttBus:
    """Async context manager for the MQTT bus; an `EventPublisher` for the engine.

    Entering starts the connection task and returns at once (the broker may be down; events
    queue meanwhile); `wait_connected` waits for the first subscribe. Reusable, not re-entrant.

    A broker that is down for long (policy in `trader.bus.outbox`): trading never waits.
    Decisions and heartbeats keep the newest `queue_size`, the oldest dropped and counted (a
    warning at most once a second). Orders, fills and risk events are kept, up to
    `reliable_queue_size` (days at normal rates); only past that is the oldest dropped, logged
    as an error at most once a second. The retained state keeps only the latest. On reconnect
    the backlog leaves in publish order; QoS 1 is at-least-once (dedupe on bus_id, kind, seq).
    The database holds every order, fill and risk event regardless.

    Args:
        settings: The `[mqtt]` section; `url` must be set.
        backoff: Reconnect pacing; default: `reconnect_base_s`/`reconnect_cap_s`, full jitter.
        wall_ms: Epoch ms for envelopes and control freshness.
        clock: Monotonic seconds for rate-limiting warnings.
        sleep: Awaited with each backoff delay.

    Raises:
        ConfigError: `settings.url` is unset or not an MQTT URL.
    """

    #: The engine builds payloads only for an enabled publisher.
    enabled: bool = True

    def __init__(
        self,
        *,
        settings: MqttSettings,
        backoff: Backoff | None = None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if settings.url is None:
            raise ConfigError("mqtt.url is unset: no bus to build", key="mqtt.url")
        self._settings = settings
        self._address = parse_broker_url(settings.url)
        self.topics = Topics(settings.topic_prefix)
        self.bus_id = secrets.token_hex(6)
        self._backoff = backoff or Backoff(
            base_s=settings.reconnect_base_s, cap_s=settings.reconnect_cap_s, rng=random.Random()
        )
        secret = settings.control_secret
        verifier = ControlVerifier(
            secret=secret.get_secret_value() if secret is not None else None,
            max_age_ms=round(settings.control_max_age_s * 1_000),
        )
        self._outbox = Outbox(
            telemetry_max=settings.queue_size, reliable_max=settings.reliable_queue_size
        )
        self._wall_ms = wall_ms
        self._sleep = sleep
        self._log = log.bind(bus="mqtt", prefix=settings.topic_prefix)
        self._inbox = ControlInbox(verifier=verifier, wall_ms=wall_ms, log=self._log, clock=clock)
        self._drop_warning = _Throttle(clock, _WARN_INTERVAL_S)
        self._bad_event_warning = _Throttle(clock, _WARN_INTERVAL_S)
        self._order = itertools.count()
        self._seq: dict[EventKind, int] = dict.fromkeys(EventKind, 0)
        self._last_state: dict[str, Any] = {}
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._connected = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stack: AsyncExitStack | None = None
        self._task: asyncio.Task[None] | None = None
        self._state = BusState.CLOSED
        self._unpublishable = 0
        self._connects = 0
        self._disconnects = 0

    # --- the engine's side ------------------------------------------------------------------

    def publish(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Queue one event for `<prefix>/events/<kind>`; never blocks, never raises.

        Unknown kinds and payloads JSON cannot hold are counted and logged (rate-limited), not
        raised: a telemetry bug must not stop trading. "state" goes to the retained topic.
        """
        try:
            event_kind = EventKind(kind)
        except ValueError:
            self._reject_event(kind, "unknown event kind")
            return
        self._enqueue(event_kind, payload)

    def publish_state(self, payload: Mapping[str, Any]) -> None:
        """Queue the trading state for the retained `<prefix>/state` (latest wins).

        It is also what the next connection's will repeats, as "offline" (`Presence`).
        """
        if self._enqueue(EventKind.STATE, payload):
            self._last_state = dict(payload)

    def _enqueue(self, kind: EventKind, payload: Mapping[str, Any]) -> bool:
        self._seq[kind] += 1
        try:
            body = encode_event(
                kind, payload, bus_id=self.bus_id, seq=self._seq[kind], ts_ms=self._wall_ms()
            )
        except (TypeError, orjson.JSONEncodeError) as exc:
            self._reject_event(kind.value, str(exc))
            return False
        qos = QOS_BY_KIND[kind]
        message = Outbound(
            order=next(self._order),
            kind=kind,
            topic=self.topics.topic_of(kind),
            payload=body,
            qos=qos,
            retain=kind is EventKind.STATE,
        )
        dropped = self._outbox.put(message)
        if dropped is not None and self._drop_warning.ready():
            # Reliable drops mean the outage outlasted reliable_queue_size: say it louder.
            self._log.log(
                logging.ERROR if dropped.reliable else logging.WARNING,
                "mqtt_events_dropped",
                telemetry_dropped=self._outbox.telemetry_dropped,
                reliable_dropped=self._outbox.reliable_dropped,
                waiting=len(self._outbox),
                state=self._state.value,
            )
        self._drained.clear()
        self._wakeup.set()
        return True

    def _will(self) -> aiomqtt.Will:
        """The retained "offline" state the broker publishes if this connection dies uncleanly."""
        self._seq[EventKind.STATE] += 1
        data = {**self._last_state, PRESENCE_FIELD: Presence.OFFLINE.value}
        payload = encode_event(
            EventKind.STATE,
            data,
            bus_id=self.bus_id,
            seq=self._seq[EventKind.STATE],
            ts_ms=self._wall_ms(),
        )
        qos = int(QOS_BY_KIND[EventKind.STATE])
        return aiomqtt.Will(self.topics.state, payload, qos=qos, retain=True)

    def _reject_event(self, kind: str, error: str) -> None:
        self._unpublishable += 1
        if self._bad_event_warning.ready():
            self._log.error(
                "mqtt_event_unpublishable", kind=kind[:40], error=error, total=self._unpublishable
            )

    # --- the daemon's side ------------------------------------------------------------------

    def control(self) -> ControlInbox:
        """The accepted commands and the rejections, in arrival order (`async for`).

        Each outcome is already logged here (`control_received` / `control_rejected`); the
        daemon stores and applies it. Iteration never ends by itself.
        """
        return self._inbox

    @property
    def state(self) -> BusState:
        """The current `BusState`."""
        return self._state

    def stats(self) -> BusStats:
        """A snapshot of the counters."""
        return BusStats(
            waiting=len(self._outbox),
            in_flight=self._outbox.in_flight,
            published=self._outbox.acked,
            telemetry_dropped=self._outbox.telemetry_dropped,
            reliable_dropped=self._outbox.reliable_dropped,
            state_superseded=self._outbox.state_superseded,
            control_accepted=self._inbox.accepted,
            control_rejected=self._inbox.rejected,
            control_dropped=self._inbox.dropped,
            control_suppressed=self._inbox.suppressed,
            unpublishable=self._unpublishable,
            connects=self._connects,
            disconnects=self._disconnects,
        )

    async def wait_connected(self) -> None:
        """Return once the bus is connected and subscribed (at once if it already is)."""
        await self._connected.wait()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued was sent and acknowledged; False if `timeout_s` passed."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._drained.wait()
        except TimeoutError:
            return False
        return True

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> MqttBus:
        """Start the connection task (it connects in the background).

        Raises:
            RuntimeError: The bus is already entered.
            ConfigError: The TLS files cannot be loaded.
        """
        if self._lock.locked():
            raise RuntimeError("MqttBus is already running; it cannot be re-entered")
        await self._lock.acquire()
        try:
            tls = await load_tls(self._settings) if self._address.tls else None
            self._stack = AsyncExitStack()
            group = await self._stack.enter_async_context(asyncio.TaskGroup())
            self._task = group.create_task(self._connection_loop(tls), name="bus.mqtt.connection")
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Cancel the connection task, wait for it, and allow a later entry.

        Whatever was not acknowledged stays queued (call `flush` first to send it).
        """
        await self._stop()

    async def _stop(self) -> None:
        try:
            if self._task is not None:
                self._task.cancel()
            if self._stack is not None:
                await self._stack.aclose()
        finally:
            self._outbox.requeue_unacked()
            self._stack = None
            self._task = None
            self._connected.clear()
            self._state = BusState.CLOSED
            self._lock.release()
            self._log.info("mqtt_closed", **dataclasses.asdict(self.stats()))

    # --- the connection ---------------------------------------------------------------------

    async def _connection_loop(self, tls: ssl.SSLContext | None) -> None:
        """Connect, subscribe, run a session; on a retryable failure back off and go again."""
        while True:
            self._state = BusState.CONNECTING
            try:
                async with make_client(
                    self._settings,
                    self._address,
                    tls,
                    identifier=self._settings.client_id,
                    will=self._will(),
                ) as client:
                    await client.subscribe(self.topics.control, qos=1)
                    self._on_connected()
                    await Session(
                        client=client,
                        outbox=self._outbox,
                        inbox=self._inbox,
                        control_topic=self.topics.control,
                        wakeup=self._wakeup,
                        drained=self._drained,
                        max_inflight=self._settings.max_inflight,
                        timeout_s=self._settings.timeout_s,
                    ).run()
            except Exception as exc:  # task boundary: classified, logged, state changed
                cause = _first_cause(exc)
                self._on_disconnected()
                if classify_mqtt_failure(cause) == "fatal":
                    self._log.error("mqtt_failed", error=str(cause), exc_info=cause)
                    raise FatalError(f"MQTT connection failed for good: {cause}") from cause
                delay_s = self._backoff.next_delay_s()
                self._log.warning(
                    "mqtt_disconnected",
                    error=str(cause) or type(cause).__name__,
                    retry_in_s=round(delay_s, 3),
                    waiting=len(self._outbox),
                )
                self._state = BusState.BACKING_OFF
                await self._sleep(delay_s)

    def _on_connected(self) -> None:
        self._backoff.reset()
        self._connects += 1
        self._state = BusState.CONNECTED
        self._connected.set()
        self._log.info(
            "mqtt_connected",
            host=self._address.host,
            port=self._address.port,
            tls=self._address.tls,
            waiting=len(self._outbox),
        )

    def _on_disconnected(self) -> None:
        if self._connected.is_set():
            self._disconnects += 1
        self._connected.clear()
        # Unacknowledged messages go back in front: QoS 1 is at-least-once across reconnects.
        self._outbox.requeue_unacked()


def _first_cause(exc: BaseException) -> BaseException:
    """The first leaf of nested task-group errors: the failure that ended the session."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def build_bus(settings: MqttSettings, *, backoff: Backoff | None = None) -> MqttBus | None:
    """The bus for `settings`, or None when `mqtt.url` is unset (the engine then publishes
    nothing)."""
    if settings.url is None:
        return None
    return MqttBus(settings=settings, backoff=backoff)

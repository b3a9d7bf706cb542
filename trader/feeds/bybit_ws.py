"""`BybitKlineFeed`: the websockets shell that streams confirmed Bybit v5 kline bars.

Owns the I/O around the sans-I/O feed parts: one websocket connection at a time to the public
linear stream, the subscribe handshake (`SubscriptionBook`), the JSON ping and staleness
watchdogs (`Heartbeat`, `StalenessWatch`), reconnecting with the injected `Backoff`
(`classify_failure` decides whether to try again), and delivery of typed events through a
bounded queue. Frames become typed objects in `parse_frame`; the private `KlineIntake`
(`ConfirmedBarFilter` per topic) decides which items are new confirmed bars and counts every bad
frame or bar in the `RejectionCounter`.

It must not parse or validate JSON itself, backfill over REST (it emits `FeedReconnected` so the
owner of the REST client can), interpolate missing bars, or decide trading state.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import orjson
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from trader.config import redact_url
from trader.domain import Bar
from trader.errors import DataError, TransientError
from trader.feeds._ws_intake import KlineIntake
from trader.feeds.backoff import Backoff, classify_failure
from trader.feeds.frames import Ack, KlinePush, Pong, parse_frame
from trader.feeds.heartbeat import Heartbeat, StalenessWatch
from trader.feeds.subscriptions import SubscriptionBook, TopicState, kline_topic
from trader.replay.rejections import RejectionCounter

# The watchdogs are checked this many times per shortest configured period, so a missed pong or
# a stale topic is noticed within a fifth of that period rather than a whole one late.
_CHECKS_PER_PERIOD: Final = 5
# ...but never less often than once a second, whatever the configured periods are.
_MAX_CHECK_S: Final = 1.0
# Failures worth handing to `classify_failure`; anything else is a bug and ends the feed.
_CONNECTION_FAILURES: Final = (TransientError, WebSocketException, OSError, TimeoutError)


class FeedState(enum.Enum):
    """Where the feed stands."""

    CONNECTING = "connecting"
    SUBSCRIBING = "subscribing"
    STREAMING = "streaming"
    BACKING_OFF = "backing_off"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ConfirmedBar:
    """A new confirmed bar, the wall time (epoch ms) its frame was received and the
    `time.perf_counter_ns()` of that moment (latency measurements start there)."""

    bar: Bar
    recv_ms: int
    recv_ns: int = 0


@dataclass(frozen=True, slots=True)
class FeedReconnected:
    """Every topic is subscribed again after a reconnect; bars may have been missed.

    Attributes:
        last_starts: Per symbol, the start of the newest confirmed bar delivered so far
            (symbols without one are absent); the caller backfills after it over REST.
    """

    last_starts: dict[str, int]


FeedEvent = ConfirmedBar | FeedReconnected


class _ForcedReconnect(TransientError):
    """The watchdog closed the connection on purpose (missed pong or stale topic)."""


class BybitKlineFeed:
    """Confirmed kline bars of several symbols from Bybit's public linear websocket.

    Use as ``async with feed: async for event in feed: ...``. `__aenter__` connects and
    subscribes every topic and returns once all are confirmed; a topic Bybit rejects there
    raises `ConfigError` naming the symbol. Afterwards the feed reconnects by itself on any
    retryable failure, resubscribes and emits `FeedReconnected`. A fatal failure ends iteration
    with that exception once the queued events are consumed. It can be reused after
    `__aexit__` but not entered twice at once.

    Events travel through a bounded queue of ``queue_maxsize``. Policy when full: nothing is
    dropped (confirmed bars must be processed exactly once); the receive loop waits for the
    consumer, and the ping/staleness watchdogs are suspended and restarted around that wait so a
    slow consumer does not read as a dead connection.

    Args:
        ws_url: The public linear stream, e.g. ``wss://stream.bybit.com/v5/public/linear``.
        symbols: Upper-case exchange symbols, one kline topic each.
        interval: The Bybit interval code, e.g. ``"5"``.
        ping_interval_s: Seconds between JSON pings (Bybit asks for 20).
        ping_timeout_s: Seconds a ping may go unanswered before reconnecting.
        staleness_s: Seconds a topic may stay silent before reconnecting (keep it above 60).
        backoff: The reconnect pacing; reset after every fully confirmed subscribe.
        rejections: Where bad frames and bars are counted.
        queue_maxsize: Capacity of the event queue.
        on_frame: Called with ``(recv_ms, text)`` for every received frame (the recorder).
        clock: Monotonic seconds for the watchdogs.
        wall_ms: Epoch milliseconds for ``recv_ms``.
        sleep: Awaited with each backoff delay in seconds.

    Raises:
        ConfigError: Bad interval, symbol or watchdog numbers.
    """

    def __init__(
        self,
        *,
        ws_url: str,
        symbols: Sequence[str],
        interval: str,
        ping_interval_s: float,
        ping_timeout_s: float,
        staleness_s: float,
        backoff: Backoff,
        rejections: RejectionCounter,
        queue_maxsize: int,
        on_frame: Callable[[int, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._ws_url = ws_url
        self._interval = interval
        self._symbols = tuple(dict.fromkeys(symbols))
        self._topics = [kline_topic(interval, symbol) for symbol in self._symbols]
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._staleness_s = staleness_s
        self._check_s = min(
            _MAX_CHECK_S, min(ping_interval_s, ping_timeout_s, staleness_s) / _CHECKS_PER_PERIOD
        )
        self._backoff = backoff
        self._queue_maxsize = queue_maxsize
        self._on_frame = on_frame
        self._clock = clock
        self._wall_ms = wall_ms
        self._sleep = sleep
        self._log = structlog.get_logger().bind(feed="bybit", interval=interval)
        self._lock = asyncio.Lock()
        self._state = FeedState.CLOSED
        self._reconnects = 0
        self._heartbeat = Heartbeat(interval_s=ping_interval_s, timeout_s=ping_timeout_s)
        self._staleness = StalenessWatch(limit_s=staleness_s)
        # The intake outlives each entry, so a reused feed still passes every bar only once.
        self._intake = KlineIntake(self._symbols, interval, rejections)
        self._new_session()

    def _new_session(self) -> None:
        """Fresh per-entry state: the book (so start-up rejections are judged anew) and queue."""
        self._book = SubscriptionBook(self._topics)
        # None is the end-of-stream marker a failed feed leaves after its last event.
        self._queue: asyncio.Queue[FeedEvent | None] = asyncio.Queue(maxsize=self._queue_maxsize)
        self._ws: ClientConnection | None = None
        self._ready: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None
        self._forced_reason: str | None = None
        self._waiting_on_consumer = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stack: AsyncExitStack | None = None

    # --- public state ---------------------------------------------------------------------

    @property
    def state(self) -> FeedState:
        """The current `FeedState`."""
        return self._state

    @property
    def reconnects(self) -> int:
        """Connections lost (or failed) and retried, over the object's life."""
        return self._reconnects

    @property
    def pings_sent(self) -> int:
        """JSON pings sent over the object's life."""
        return self._heartbeat.pings_sent

    @property
    def exchange_time_ms(self) -> int | None:
        """The newest push ``ts`` seen (exchange epoch ms), None before the first push."""
        return self._intake.exchange_time_ms

    def last_price(self, symbol: str) -> float | None:
        """The latest valid close of ``symbol`` (unconfirmed updates included), or None."""
        return self._intake.last_price(symbol)

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> BybitKlineFeed:
        """Connect, subscribe every topic and start the receive and heartbeat tasks.

        Raises:
            RuntimeError: The feed is already entered.
            ConfigError: Bybit rejected a topic on the first connection.
            Exception: Any fatal connection failure (e.g. an HTTP 404 on the handshake).
        """
        if self._lock.locked():
            raise RuntimeError("BybitKlineFeed is already running; it cannot be re-entered")
        await self._lock.acquire()
        try:
            self._new_session()
            self._ready = asyncio.get_running_loop().create_future()
            self._stack = AsyncExitStack()
            group = await self._stack.enter_async_context(asyncio.TaskGroup())
            self._tasks = [
                group.create_task(self._receive_loop(), name="feed.bybit.receive"),
                group.create_task(self._heartbeat_loop(), name="feed.bybit.heartbeat"),
            ]
            await self._ready
        except BaseException:
            # Cancellation included: nothing may outlive a failed entry.
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Cancel and await both tasks, close the connection and allow a later entry."""
        await self._stop()

    async def _stop(self) -> None:
        """Cancel the tasks, wait for them (the TaskGroup exit) and release the lock."""
        try:
            for task in self._tasks:
                task.cancel()
            if self._stack is not None:
                await self._stack.aclose()
        finally:
            self._stack = None
            self._tasks = []
            self._ws = None
            self._state = FeedState.CLOSED
            self._lock.release()
            self._log.info("feed_closed", reconnects=self._reconnects)

    def __aiter__(self) -> BybitKlineFeed:
        """Iterate over events until the feed closes."""
        return self

    async def __anext__(self) -> FeedEvent:
        """Return the next event, waiting for it.

        Raises:
            StopAsyncIteration: The feed was closed and every queued event consumed.
            Exception: The fatal failure that ended the feed, after its queued events.
        """
        if self._queue.empty() and self._state is FeedState.CLOSED:
            return self._end()
        event = await self._queue.get()
        return self._end() if event is None else event

    def _end(self) -> FeedEvent:
        """End iteration: raise the failure that closed the feed, or stop."""
        if self._failure is not None:
            raise self._failure
        raise StopAsyncIteration

    # --- receive task -----------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        """Task boundary of the connection loop: a failure here ends the feed loudly."""
        try:
            await self._connection_loop()
        except Exception as exc:
            self._log.exception("feed_failed", task="feed.bybit.receive")
            await self._fail(exc)

    async def _connection_loop(self) -> None:
        """Loop over connections: connect, subscribe, stream; back off and retry on failure."""
        while True:
            self._state = FeedState.CONNECTING
            reason = "connection_ended"
            try:
                # No websockets protocol pings: liveness is the JSON ping Bybit honours (A4),
                # judged in one place. Closing a dead link must not outlast the pong deadline.
                async with connect(
                    self._ws_url, ping_interval=None, close_timeout=self._ping_timeout_s
                ) as ws:
                    await self._run_connection(ws)
            except _CONNECTION_FAILURES as exc:
                if classify_failure(exc) == "fatal":
                    raise
                reason = self._forced_reason or type(exc).__name__
            finally:
                self._ws = None
            self._forced_reason = None
            self._reconnects += 1
            delay_s = self._backoff.next_delay_s()
            self._state = FeedState.BACKING_OFF
            self._log.warning(
                "feed_reconnecting", reason=reason, delay_s=delay_s, attempt=self._backoff.attempts
            )
            await self._sleep(delay_s)

    async def _run_connection(self, ws: ClientConnection) -> None:
        """Subscribe on a fresh connection, announce it, then read frames until it fails."""
        now = self._clock()
        self._heartbeat.reset(now)
        self._staleness.reset(self._book.topics, now)
        self._book.reset_for_reconnect()
        self._ws = ws
        self._log.info("feed_connected", url=redact_url(self._ws_url))
        self._state = FeedState.SUBSCRIBING
        await self._subscribe(ws)
        self._backoff.reset()
        self._state = FeedState.STREAMING
        self._log.info("feed_subscribed", topics=len(self._book.topics))
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        else:
            last_starts = self._intake.last_starts()
            await self._deliver(FeedReconnected(last_starts=last_starts))
            self._log.info("feed_reconnected", last_starts=last_starts)
        while True:
            await self._receive_one(ws)

    async def _subscribe(self, ws: ClientConnection) -> None:
        """Send every pending topic, a batch at a time, and read until each batch is acked.

        A rejection of a topic that never worked is a config fault and raises `ConfigError`;
        a rejection of one that worked before is retried after a backoff delay.
        """
        while not self._book.all_confirmed:
            for batch in self._book.batches():
                for request in batch:
                    await ws.send(orjson.dumps(request).decode())
                topics = [request["req_id"] for request in batch]
                while any(self._book.state(t) is TopicState.PENDING for t in topics):
                    await self._receive_one(ws)
            if self._book.rejected:
                error = self._book.startup_error()
                if error is not None:
                    raise error
                delay_s = self._backoff.next_delay_s()
                self._log.warning(
                    "feed_subscribe_retrying", rejected=dict(self._book.rejected), delay_s=delay_s
                )
                await self._sleep(delay_s)
                self._book.retry_rejected()

    async def _receive_one(self, ws: ClientConnection) -> None:
        """Read, record and dispatch one frame; bad frames are counted and dropped."""
        message = await ws.recv()
        recv_ns = time.perf_counter_ns()
        recv_ms = self._wall_ms()
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        if self._on_frame is not None:
            self._on_frame(recv_ms, text)
        try:
            frame = parse_frame(text)
        except DataError as exc:
            self._intake.reject(exc)
            return
        if isinstance(frame, KlinePush):
            await self._on_push(frame, recv_ms, recv_ns)
        elif isinstance(frame, Pong):
            self._heartbeat.on_pong(frame, self._clock())
        else:
            self._on_ack(frame)

    def _on_ack(self, ack: Ack) -> None:
        """Apply a subscribe ack to the book; log any other (an error reply, say)."""
        outcome = self._book.on_ack(ack)
        log = self._log.warning if not ack.success else self._log.debug
        log("feed_ack_received", op=ack.op, req_id=ack.req_id, ret_msg=ack.ret_msg, outcome=outcome)

    async def _on_push(self, push: KlinePush, recv_ms: int, recv_ns: int) -> None:
        """Run one push through the intake and deliver its new confirmed bars."""
        if push.topic in self._book.topics:
            self._staleness.seen(push.topic, self._clock())
        for bar in self._intake.on_push(push):
            await self._deliver(ConfirmedBar(bar=bar, recv_ms=recv_ms, recv_ns=recv_ns))

    async def _deliver(self, event: FeedEvent) -> None:
        """Queue one event; when the queue is full, wait (never drop) with watchdogs paused."""
        if not self._queue.full():
            self._queue.put_nowait(event)
            return
        self._waiting_on_consumer = True
        try:
            await self._queue.put(event)
        finally:
            self._waiting_on_consumer = False
        # Frames piled up unread while we waited; judge liveness afresh from here on.
        now = self._clock()
        self._heartbeat.reset(now)
        self._staleness.reset(self._book.topics, now)

    # --- heartbeat task ---------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """Send JSON pings and force a reconnect on a missed pong or a stale topic."""
        try:
            while True:
                # Wall-time pacing of the checks; the verdicts use the injected clock.
                await asyncio.sleep(self._check_s)
                ws = self._ws
                if ws is not None and not self._waiting_on_consumer:
                    await self._check_connection(ws)
        except Exception as exc:
            self._log.exception("feed_failed", task="feed.bybit.heartbeat")
            await self._fail(exc)

    async def _check_connection(self, ws: ClientConnection) -> None:
        """One watchdog round on the current connection."""
        now = self._clock()
        if self._heartbeat.ping_due(now):
            ping = orjson.dumps(self._heartbeat.ping_frame(now)).decode()
            try:
                await ws.send(ping)
            except ConnectionClosed:
                # The receive task sees the same close and reconnects; nothing to add here.
                return
        if self._heartbeat.expired(now):
            await self._force_reconnect(ws, "pong_timeout")
        elif stale := self._staleness.stale(now):
            await self._force_reconnect(ws, f"stale_topics:{','.join(stale)}")

    async def _force_reconnect(self, ws: ClientConnection, reason: str) -> None:
        """Close the connection so the receive task reconnects, remembering why."""
        self._forced_reason = reason
        self._ws = None
        self._log.warning("feed_connection_dead", reason=reason)
        await ws.close(reason=reason[:120])

    async def _fail(self, exc: BaseException) -> None:
        """End the feed after a fatal error: fail the entry or end iteration with it."""
        self._failure = exc
        self._state = FeedState.CLOSED
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(exc)
            return
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        # After every queued event, so a failure never costs a confirmed bar.
        await self._queue.put(None)

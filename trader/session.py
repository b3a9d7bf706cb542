"""The live trading loop: confirmed bars from the feed and REST into slices, slices into the engine.

Owns the order of live work. Websocket confirms go into the `SliceAssembler`; whenever a gap is
possible (start-up, every reconnect, a confirm overdue by exchange time, a symbol's later bar
arriving first) the missing bars are fetched over REST, inserted before any later bar, and the
released slices run through the engine one at a time. REST bars the session uses are stamped
with the exchange time of the fetch (`Bar.known_ms`, so the engine holds stale ones) and go to
the recording, so that replaying the recording reproduces the session. Live slices are flushed
and committed before the next event is taken; catch-up batches flush by the engine's policy.

It also applies operator commands (kill, resume, flatten from `control_events`) before trading
starts, between slices and while a catch-up waits on REST, committing their effects before they
count as applied; pings the systemd watchdog from this loop, REST waits included (a hung loop
stops the pings); keeps the STATUS line
current; and hands the trading state and a heartbeat to the bus. It must not build components
(`trader.daemon` does), parse frames or validate bars (the feed does), or hold trading logic
(the engine does).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import structlog

from trader.bus.events import PRESENCE_FIELD, Presence
from trader.domain import Bar, interval_ms
from trader.engine import Engine
from trader.feeds.backfill import RestBackfill
from trader.feeds.bybit_ws import BybitKlineFeed, ConfirmedBar, FeedReconnected
from trader.feeds.slices import SliceAssembler
from trader.notify import SystemdNotifier
from trader.persistence.control import ControlCommand, ControlEvent

log = structlog.get_logger()

#: The loop wakes at least this often without events (stop flag, overdue confirms, watchdog).
TICK_S: Final = 0.1
#: Shortest wait between two REST backfills that the clock (not a reconnect) asked for.
RETRY_BACKFILL_S: Final = 1.0
#: How often the database is asked for operator commands (kill within a second, measured).
CONTROL_POLL_S: Final = 0.1
#: How often a heartbeat event is published (when there is a bus).
HEARTBEAT_S: Final = 10.0
#: During a catch-up, the loop is handed to other tasks this often (in slices).
_YIELD_EVERY_SLICES: Final = 32
#: Commit latencies kept for the `session_stopped` line (bench/daemon_latency.py reads it).
_LATENCY_SAMPLES: Final = 100_000
#: STATUS is refreshed at most this often.
_STATUS_EVERY_S: Final = 5.0

T = TypeVar("T")


class ControlSource(Protocol):
    """Where operator commands come from (the `control_events` table, MQTT feeding it)."""

    async def pending(self) -> list[ControlEvent]:
        """Commands not applied yet, oldest first."""
        ...

    async def applied(self, event: ControlEvent) -> None:
        """Record that `event` took effect (after its effects were committed)."""
        ...


class _Stopped(Exception):
    """The stop event was set while the loop was waiting on something long."""


@dataclass(slots=True)
class SessionCounters:
    """What the session did, for the summary and the STATUS line."""

    slices: int = 0
    ws_bars: int = 0
    rest_bars: int = 0
    backfills: int = 0


class LiveSession:
    """Runs the engine on the live feed until stopped.

    Args:
        engine: The engine, already restored from the run's snapshot when resuming.
        feed: The entered (subscribed) Bybit kline feed.
        backfill: The entered REST client.
        symbols: The symbols every slice should hold.
        interval: Their interval code.
        warmup_bars: How many bars before now to fetch when the run has none yet.
        grace_ms: How long after a close (exchange time) a confirm may still arrive.
        notifier: Watchdog and STATUS (may be disabled).
        on_rest_bar: Called with each REST bar the session uses (the recorder).
        controls: Operator commands, polled every `CONTROL_POLL_S` and before trading starts.
        on_state: Receives the trading state after each batch of slices and each command
            (the retained MQTT state).
        on_heartbeat: Receives a liveness payload every `HEARTBEAT_S` from this loop (MQTT).
        clock_ns: `time.perf_counter_ns`-like clock for latencies.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        feed: BybitKlineFeed,
        backfill: RestBackfill,
        symbols: Sequence[str],
        interval: str,
        warmup_bars: int,
        grace_ms: int,
        notifier: SystemdNotifier,
        on_rest_bar: Callable[[Bar], None] | None = None,
        controls: ControlSource | None = None,
        on_state: Callable[[dict[str, Any]], None] | None = None,
        on_heartbeat: Callable[[dict[str, Any]], None] | None = None,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self._engine = engine
        self._feed = feed
        self._backfill = backfill
        self._symbols = tuple(symbols)
        self._interval = interval
        self._interval_ms = interval_ms(interval)
        self._warmup_bars = warmup_bars
        self._notifier = notifier
        self._on_rest_bar = on_rest_bar
        self._controls = controls
        self._on_state = on_state
        self._on_heartbeat = on_heartbeat
        self._last_heartbeat_s = 0.0
        self._next_control_s = 0.0
        self._clock_ns = clock_ns
        self._assembler = SliceAssembler(
            self._symbols, interval, last_start_ms=engine.last_slice_start_ms, grace_ms=grace_ms
        )
        self._received_ns: dict[tuple[str, int], int] = {}
        self._backfill_due = True
        self._next_timed_backfill_s = 0.0
        self._last_watchdog_s = 0.0
        self._last_status_s = 0.0
        self.counters = SessionCounters()
        #: Per live slice, microseconds from its last bar's frame received to its rows
        #: committed (the newest `_LATENCY_SAMPLES`).
        self.commit_latency_us: deque[int] = deque(maxlen=_LATENCY_SAMPLES)

    async def run(self, stop: asyncio.Event) -> None:
        """Catch up, then trade every slice until `stop` is set or the feed fails.

        Raises:
            Exception: whatever ended the feed for good, or an engine or writer failure.
        """
        stop_waiter = asyncio.create_task(stop.wait(), name="session.stop")
        try:
            # A kill stored while no daemon ran takes effect before anything trades.
            await self._apply_controls()
            while not stop.is_set():
                event = await self._next_event()
                self._beat()
                if isinstance(event, ConfirmedBar):
                    self._on_confirmed(event)
                elif isinstance(event, FeedReconnected):
                    self._backfill_due = True
                if self._needs_backfill():
                    await self._catch_up(stop_waiter)
                await self._process(self._assembler.ready(), live=True)
                # After the slice, not before: the poll's query must not delay a decision.
                await self._apply_controls()
        except _Stopped:
            log.info("session_stopping", reason="stop requested during backfill")
        finally:
            stop_waiter.cancel()
        log.info(
            "session_stopped",
            **dataclasses.asdict(self.counters),
            **latency_summary_us(self.commit_latency_us),
        )

    async def _next_event(self) -> ConfirmedBar | FeedReconnected | None:
        """The next feed event, or None after a tick without one."""
        try:
            async with asyncio.timeout(TICK_S):
                return await anext(self._feed)
        except TimeoutError:
            return None

    def poke_controls(self) -> None:
        """Check for commands at the loop's next turn (a command just arrived)."""
        self._next_control_s = 0.0

    def publish_state(self, presence: Presence = Presence.RUNNING) -> None:
        """Hand the trading state to `on_state` (the retained MQTT state); also called by the
        daemon when it halts trading on a failure outside this loop, and with the daemon's
        `presence` as the last state before it exits."""
        if self._on_state is None:
            return
        engine = self._engine
        self._on_state(
            {
                "run_id": engine.run_id,
                "state": engine.risk.state.value,
                "risk": engine.risk.status(),
                "last_slice_start_ms": engine.last_slice_start_ms,
                "slices": self.counters.slices,
                "reconnects": self._feed.reconnects,
                PRESENCE_FIELD: presence.value,
            }
        )

    async def _apply_controls(self) -> None:
        """Apply pending operator commands between slices, commit, then mark them applied."""
        now_s = time.monotonic()
        if self._controls is None or now_s < self._next_control_s:
            return
        self._next_control_s = now_s + CONTROL_POLL_S
        events = await self._controls.pending()
        if not events:
            return
        engine = self._engine
        exchange_ms = self._feed.exchange_time_ms
        now_ms = exchange_ms if exchange_ms is not None else time.time_ns() // 1_000_000
        for event in events:
            if event.command is ControlCommand.RESUME:
                await engine.resume(reason=event.reason, now_ms=now_ms)
            else:
                # `flatten` on its own is a kill that flattens: nothing may reopen right after.
                flatten = event.flatten or event.command is ControlCommand.FLATTEN
                await engine.kill(
                    reason=event.reason,
                    now_ms=now_ms,
                    flatten=flatten,
                    price_of=self._feed.last_price,
                )
            log.warning(
                "control_applied",
                id=event.id,
                command=event.command.value,
                source=event.source,
                reason=event.reason,
                state=engine.risk.state.value,
            )
        # The effects are committed before the commands count as applied: a crash in
        # between applies them again at the next start, which is harmless.
        await engine.flush(wait=True)
        for event in events:
            await self._controls.applied(event)
        self.publish_state()

    def _on_confirmed(self, event: ConfirmedBar) -> None:
        bar = event.bar
        if self._assembler.add(bar):
            self.counters.ws_bars += 1
            self._received_ns[(bar.symbol, bar.start_ms)] = event.recv_ns or self._clock_ns()

    def _needs_backfill(self) -> bool:
        if self._backfill_due:
            return True
        if not self._assembler.overdue(self._feed.exchange_time_ms):
            return False
        return time.monotonic() >= self._next_timed_backfill_s

    async def _while_waiting(
        self, work: Coroutine[Any, Any, T], stop_waiter: asyncio.Task[Any]
    ) -> T:
        """Await `work` (REST calls) while this loop goes on beating and applying commands.

        REST may take minutes (retries, the 403 pause): the watchdog must still hear from the
        loop and a kill must still apply. `work` runs as a task of its own and touches only the
        assembler, while this loop touches only the engine, so neither sees the other half-done.
        The work is abandoned (cancelled) when the stop event fires first or this loop fails.
        """
        task = asyncio.create_task(work, name="session.backfill")
        try:
            while True:
                done, _ = await asyncio.wait(
                    {task, stop_waiter}, timeout=TICK_S, return_when=asyncio.FIRST_COMPLETED
                )
                if task in done:
                    return task.result()
                if stop_waiter in done:
                    raise _Stopped
                self._beat()
                await self._apply_controls()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _catch_up(self, stop_waiter: asyncio.Task[Any]) -> None:
        """Fetch every missing closed bar over REST, then run the slices it completes."""
        self._backfill_due = False
        self._next_timed_backfill_s = time.monotonic() + RETRY_BACKFILL_S
        through_ms = await self._while_waiting(self._fetch_missing(), stop_waiter)
        self.counters.backfills += 1
        slices = self._assembler.settle_through(through_ms) + self._assembler.ready()
        await self._process(slices, live=False)
        if slices:
            # What a catch-up built (feature buffers, model state) lives for the whole session;
            # moving it out of the collector's reach keeps full collections, which otherwise
            # walk all of it, from landing in a live slice's latency.
            gc.collect()
            gc.freeze()

    async def _fetch_missing(self) -> int:
        """Hand every symbol's missing closed bars to the assembler; the start to settle through."""
        now_ms = await self._backfill.server_time_ms()
        forming_ms = now_ms - now_ms % self._interval_ms
        through_ms = forming_ms - self._interval_ms
        final_through_ms = self._assembler.grace_over_through(now_ms)
        for symbol in self._symbols:
            newest = await self._fetch(symbol, now_ms, forming_ms)
            # REST may trail the stream by a moment: never settle past what it returned, and
            # when it returned nothing, not past the bars whose grace is over (the symbol's
            # confirm may still be on its way; a slice released without it would refuse it).
            cap_ms = final_through_ms if newest is None else newest
            through_ms = min(through_ms, max(cap_ms, self._assembler.last_start_ms))
        return through_ms

    async def _fetch(self, symbol: str, now_ms: int, forming_ms: int) -> int | None:
        """Hand `symbol`'s missing closed bars to the assembler; the newest start REST had."""
        last_ms = self._assembler.last_start_ms
        if last_ms >= 0:
            from_ms = last_ms + self._interval_ms
        else:
            from_ms = forming_ms - self._warmup_bars * self._interval_ms
        if from_ms >= forming_ms:
            return None
        bars = await self._backfill.closed_bars(
            symbol, from_start_ms=from_ms, to_start_ms=forming_ms, now_ms=now_ms
        )
        received_ns = self._clock_ns()
        for bar in bars:
            stamped = dataclasses.replace(bar, known_ms=now_ms)
            if self._assembler.add(stamped):
                self.counters.rest_bars += 1
                self._received_ns[(bar.symbol, bar.start_ms)] = received_ns
                if self._on_rest_bar is not None:
                    self._on_rest_bar(stamped)
        return bars[-1].start_ms if bars else None

    async def _process(self, slices: Sequence[list[Bar]], *, live: bool) -> None:
        """Run released slices through the engine; commit live ones before going on."""
        if not slices:
            return
        engine = self._engine
        received: list[int] = []
        for bars in slices:
            received_ns = max(self._received_ns.pop((bar.symbol, bar.start_ms), 0) for bar in bars)
            received.append(received_ns or self._clock_ns())
            await engine.process_slice(bars, received_ns=received[-1])
            self.counters.slices += 1
            if engine.should_flush():
                await engine.flush()
            if self.counters.slices % _YIELD_EVERY_SLICES == 0:
                # A long catch-up must not starve the feed's pings and watchdogs (nor the
                # writer) of the loop, nor keep a kill waiting until it ends.
                await asyncio.sleep(0)
                await self._apply_controls()
            self._beat()
        # A live slice is committed before the next event: a crash now loses nothing.
        await engine.flush(wait=live)
        if live:
            committed_ns = self._clock_ns()
            self.commit_latency_us.extend((committed_ns - ns) // 1_000 for ns in received)
            self.publish_state()
        self._status(slices[-1][0].start_ms)

    def _beat(self) -> None:
        """Ping the watchdog (at most once a second) and publish the heartbeat (every
        `HEARTBEAT_S`): proof that this loop still turns."""
        now_s = time.monotonic()
        if now_s - self._last_watchdog_s >= 1.0:
            self._last_watchdog_s = now_s
            self._notifier.watchdog()
        if self._on_heartbeat is not None and now_s - self._last_heartbeat_s >= HEARTBEAT_S:
            self._last_heartbeat_s = now_s
            self._on_heartbeat(
                {
                    "run_id": self._engine.run_id,
                    "state": self._engine.risk.state.value,
                    "feed": self._feed.state.value,
                    "exchange_time_ms": self._feed.exchange_time_ms,
                    "last_slice_start_ms": self._engine.last_slice_start_ms,
                    "reconnects": self._feed.reconnects,
                }
            )

    def _status(self, last_start_ms: int) -> None:
        now_s = time.monotonic()
        if now_s - self._last_status_s < _STATUS_EVERY_S:
            return
        self._last_status_s = now_s
        counters = self.counters
        self._notifier.status(
            f"trading {self._engine.run_id}: {counters.slices} slices, last bar {last_start_ms}, "
            f"risk {self._engine.risk.state.value}, {self._feed.reconnects} reconnects, "
            f"{counters.backfills} backfills"
        )


def latency_summary_us(samples: Sequence[int]) -> dict[str, int]:
    """p50, p99 and max of live commit latencies (µs) for logs; empty without samples."""
    if not samples:
        return {}
    ordered = sorted(samples)
    last = len(ordered) - 1
    return {
        "live_slices": len(ordered),
        "commit_latency_p50_us": ordered[round(0.50 * last)],
        "commit_latency_p99_us": ordered[round(0.99 * last)],
        "commit_latency_max_us": ordered[last],
    }

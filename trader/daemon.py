"""`trader run`: the paper-trading daemon's composition root.

Owns start-up and shutdown of one daemon process, in dependency order: the database (migrated),
the run (the same paper account continues unless `--new-run`), the writer, the optional MQTT
bus, the engine restored from the run's last committed snapshot with its features re-fed from
the bars it stored, the optional recording, the REST client, and the websocket feed; then
`LiveSession` trades until the stop event (SIGTERM/SIGINT, set by the CLI) and everything closes
in reverse order after a final committed flush and a last retained state that says the daemon
stopped (or failed). MQTT control commands are stored in `control_events` by a task of their
own (transient database errors retried; a copy of a command the CLI already stored only wakes
the poll), where the session applies them like the CLI's; each run keeps its own place in
that table, so several daemons on one database each apply every command.
systemd hears READY once every topic is subscribed, STOPPING when the stop begins, and WATCHDOG
and STATUS from the session loop.

A stop while the feed is still connecting ends start-up at once, as a normal stop. A recording
that cannot be written ends the daemon like any fatal error, and so does a database writer that
failed for good, after trading is halted and the halt is published on MQTT.

It must not hold trading logic (the engine), the live event order (the session) or argument
parsing (the CLI).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from trader.bus import (
    ControlOutcome,
    ControlRejection,
    MqttBus,
    Presence,
    VerifiedCommand,
    build_bus,
)
from trader.config import Settings
from trader.domain import Bar
from trader.engine import Engine
from trader.errors import ConfigError, FatalError, first_line
from trader.features.buffer import warmup_bars
from trader.feeds.backfill import RestBackfill
from trader.feeds.backoff import Backoff
from trader.feeds.bybit_ws import BybitKlineFeed
from trader.notify import SystemdNotifier
from trader.persistence import control, repository
from trader.persistence.batch import RunStateSnapshot
from trader.persistence.control import ControlEvent, WriteRetry
from trader.persistence.database import make_engine
from trader.persistence.migrate import ensure_schema
from trader.pipeline import build_engine, build_feed, build_writer
from trader.recorder import RotatingRecording
from trader.session import LiveSession, SessionCounters

log = structlog.get_logger()

#: How long shutdown waits for queued MQTT events (the database holds them all anyway).
_BUS_FLUSH_S = 2.0
#: MQTT rejections waiting to be stored; beyond it they are only logged (the bus rate-limits
#: them well below this).
_REJECTION_BACKLOG = 64
#: Retries of the MQTT intake's writes: 8 attempts, about 7 s of pauses between them.
_INTAKE_RETRY = WriteRetry()
#: The `runs.mode` of daemon runs (the live broker does not exist yet).
PAPER_MODE = "paper"
#: Settings sections a continued run must share with the one that started it: they shape the
#: model's state and the features the snapshot was taken with.
CONTINUITY_SECTIONS = ("strategy", "model", "features")


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    """What `trader run` was asked to do beyond the settings."""

    record_dir: Path | None = None
    new_run: bool = False


@dataclass(frozen=True, slots=True)
class DaemonSummary:
    """How a daemon session ended."""

    run_id: str
    resumed: bool
    counters: SessionCounters
    reconnects: int


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def default_run_id(now: datetime | None = None) -> str:
    """A fresh paper run id such as `paper-20261121T150302.123Z` (milliseconds, so two
    `--new-run` starts within a second still get distinct accounts)."""
    moment = now if now is not None else datetime.now(UTC)
    return moment.strftime("paper-%Y%m%dT%H%M%S") + f".{moment.microsecond // 1_000:03d}Z"


async def run_daemon(
    settings: Settings,
    options: DaemonOptions,
    *,
    stop: asyncio.Event,
    notifier: SystemdNotifier | None = None,
    backoff: Backoff | None = None,
    rest_backoff: Backoff | None = None,
    wall_ms: Callable[[], int] = _wall_ms,
) -> DaemonSummary:
    """Trade on the live feed until `stop` is set; return what the session did.

    Args:
        settings: the validated configuration.
        options: `--record` and `--new-run`.
        stop: set it (SIGTERM/SIGINT) to finish the slice in hand, commit and return.
        notifier: systemd notifications (default: none).
        backoff: websocket reconnect pacing (default: jittered 0.5 s doubling to 30 s).
        rest_backoff: REST retry pacing (same default).
        wall_ms: epoch milliseconds for recording timestamps.

    Raises:
        ConfigError: a bad setting, a topic Bybit rejects, or a run that cannot be continued
            with these settings.
        TraderError: a fatal feed, REST or database failure (the process should exit non-zero
            so systemd restarts it).
    """
    notifier = notifier if notifier is not None else SystemdNotifier(None)
    db = make_engine(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
    try:
        await ensure_schema(db)
        run_id, snapshot = await _open_run(db, settings, options)
        async with AsyncExitStack() as stack:
            halt = _HaltOnWriterFailure(wall_ms)
            writer = await stack.enter_async_context(
                build_writer(db, settings.database, on_fatal=halt)
            )
            bus = build_bus(settings.mqtt)
            if bus is not None:
                await stack.enter_async_context(bus)
                stack.push_async_callback(_flush_bus, bus)
            engine = build_engine(settings, run_id=run_id, sink=writer, publisher=bus)
            halt.engine = engine
            if snapshot is not None:
                await _restore(db, engine, settings, snapshot)
            recording = _open_recording(settings, options, stack, wall_ms)
            rng = random.Random()
            backfill = await stack.enter_async_context(
                RestBackfill(
                    rest_url=settings.feed.rest_url,
                    interval=settings.feed.interval,
                    backoff=rest_backoff if rest_backoff is not None else Backoff(rng=rng),
                    max_attempts=settings.feed.rest_max_attempts,
                    forbidden_pause_s=settings.feed.rest_forbidden_pause_s,
                )
            )
            feed = build_feed(
                settings.feed,
                backoff=backoff if backoff is not None else Backoff(rng=rng),
                wall_ms=wall_ms,
                on_frame=recording.write_frame if recording is not None else None,
            )
            halt.feed = feed
            if not await _enter_feed(stack, feed, settings, stop):
                notifier.stopping()
                log.info("daemon_stopped_while_connecting", run_id=run_id)
                return DaemonSummary(
                    run_id=run_id,
                    resumed=snapshot is not None,
                    counters=SessionCounters(),
                    reconnects=feed.reconnects,
                )
            notifier.ready()
            log.info("daemon_started", run_id=run_id, resumed=snapshot is not None)
            controls = DatabaseControls(db, run_id)
            session = LiveSession(
                engine=engine,
                feed=feed,
                backfill=backfill,
                symbols=settings.feed.symbols,
                interval=settings.feed.interval,
                warmup_bars=warmup_bars(
                    strategic_window=settings.features.strategic_window,
                    scale_window=settings.features.scale_window,
                ),
                grace_ms=round(settings.feed.confirm_grace_s * 1_000),
                notifier=notifier,
                on_rest_bar=recording.write_rest_bar if recording is not None else None,
                controls=controls,
                on_state=bus.publish_state if bus is not None else None,
                on_heartbeat=partial(bus.publish, "heartbeat") if bus is not None else None,
            )
            halt.session = session
            mqtt_control = (
                asyncio.create_task(
                    _mqtt_control_loop(bus.control(), db, run_id, controls, session.poke_controls),
                    name="daemon.mqtt_control",
                )
                if bus is not None
                else None
            )
            try:
                await _run_session(session, stop, recording, settings.recorder.flush_interval_s)
                notifier.stopping()
                # Everything processed is committed with its snapshot before anything closes;
                # a failure here is a failed stop (FAILED below), not a clean one.
                await engine.flush(wait=True)
            except Exception:
                # Fail fast and commit nothing more: the failure may have struck mid-slice,
                # and the restart continues cleanly from the last committed slice.
                log.exception("daemon_failed", run_id=run_id)
                notifier.stopping()  # a second STOPPING after a failed final flush is harmless
                # The bus says goodbye on the way out, so the broker will not send the will.
                session.publish_state(Presence.FAILED)
                raise
            finally:
                if mqtt_control is not None:
                    mqtt_control.cancel()
                    await asyncio.gather(mqtt_control, return_exceptions=True)
            session.publish_state(Presence.STOPPED)
            return DaemonSummary(
                run_id=run_id,
                resumed=snapshot is not None,
                counters=session.counters,
                reconnects=feed.reconnects,
            )
    finally:
        await db.dispose()


class DatabaseControls:
    """Operator commands from the `control_events` table (the CLI and MQTT write there).

    Each run applies every command once, however many daemons share the database: the run's
    `ControlCursor` says which it has applied.

    When the MQTT intake that stores commands here fails (`fail`), the next `pending` raises:
    the session polls it every turn, so the daemon stops at once instead of trading on while
    MQTT commands, a kill among them, go nowhere.
    """

    def __init__(
        self, db: AsyncEngine, run_id: str, *, wall_ms: Callable[[], int] = _wall_ms
    ) -> None:
        self._cursor = control.ControlCursor(db, run_id)
        self._wall_ms = wall_ms
        self._failure: Exception | None = None

    def fail(self, exc: Exception) -> None:
        """Record that the MQTT intake died of `exc`; `pending` raises from now on."""
        self._failure = exc

    async def pending(self) -> list[ControlEvent]:
        """Commands not applied yet, oldest first.

        Raises:
            FatalError: The MQTT intake has failed.
        """
        if self._failure is not None:
            raise FatalError(
                f"storing MQTT control commands failed: {self._failure!r}"
            ) from self._failure
        return await self._cursor.pending(self._wall_ms())

    async def applied(self, event: ControlEvent) -> None:
        """Move this run's cursor past `event` and stamp `applied_at`."""
        await self._cursor.applied(event, self._wall_ms())


class _HaltOnWriterFailure:
    """The writer's `on_fatal`: trading HALTED with the cause, and MQTT told, before the exit.

    Nothing can be committed any more, so the halt is for whoever watches the bus: the retained
    state must not go on saying ACTIVE for a daemon that is exiting. The risk event leaves
    through the engine's publisher, the state through the session; the bus is flushed on the
    way out. Best effort: it runs on the writer's task, so a failure here is logged, not raised.
    The daemon fills in the parts as it builds them (the writer comes first).
    """

    def __init__(self, wall_ms: Callable[[], int]) -> None:
        self._wall_ms = wall_ms
        self.engine: Engine | None = None
        self.feed: BybitKlineFeed | None = None
        self.session: LiveSession | None = None

    def __call__(self, exc: BaseException) -> None:
        engine = self.engine
        if engine is None:
            return
        # The first line names the cause; SQLAlchemy appends the whole statement after it.
        cause = first_line(exc)
        try:
            exchange_ms = self.feed.exchange_time_ms if self.feed is not None else None
            now_ms = exchange_ms if exchange_ms is not None else self._wall_ms()
            engine.halt_on_error(f"database writes failed: {cause}", now_ms)
            if self.session is not None:
                self.session.publish_state()
        except Exception:  # the writer's task boundary: the exit goes ahead regardless
            log.exception("writer_failure_halt_failed", run_id=engine.run_id)
            return
        log.error("trading_halted", run_id=engine.run_id, reason="database writes failed")


async def _run_session(
    session: LiveSession,
    stop: asyncio.Event,
    recording: _LiveRecording | None,
    flush_interval_s: float,
) -> None:
    """Run the session; beside it, flush the recording every `flush_interval_s`, as `trader
    record` does, so a crash loses at most that much. A failed flush ends the session."""
    if recording is None:
        await session.run(stop)
        return
    running = asyncio.create_task(session.run(stop), name="daemon.session")
    flushing = asyncio.create_task(
        recording.flush_every(flush_interval_s), name="daemon.recording_flush"
    )
    try:
        await asyncio.wait({running, flushing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        flushing.cancel()
        if not running.done():
            running.cancel()
        await asyncio.gather(running, flushing, return_exceptions=True)
    if not flushing.cancelled() and (failure := flushing.exception()) is not None:
        raise failure
    running.result()


async def _mqtt_control_loop(
    outcomes: AsyncIterable[ControlOutcome],
    db: AsyncEngine,
    run_id: str,
    controls: DatabaseControls,
    wake: Callable[[], None],
    *,
    retry: WriteRetry = _INTAKE_RETRY,
) -> None:
    """Store verified MQTT commands where the session applies them; store rejections.

    Going through `control_events` keeps one path for CLI and MQTT commands, so a kill sent over
    MQTT is also on record and survives a restart exactly like a CLI kill. A command that names
    the row it is already stored as (`trader kill`/`resume` store, then publish) only wakes the
    session. Writes are retried on transient failures (`retry`); a command that still cannot be
    stored ends the daemon through `controls` (see `DatabaseControls`). Rejections are stored
    by a task of their own, best effort, so they never hold a command up nor stop the daemon.
    """
    rejections: asyncio.Queue[ControlRejection] = asyncio.Queue(maxsize=_REJECTION_BACKLOG)
    recorder = asyncio.create_task(
        _store_rejections_loop(rejections, db, run_id, retry), name="daemon.mqtt_rejections"
    )
    try:
        async for outcome in outcomes:
            if isinstance(outcome, ControlRejection):
                if rejections.full():
                    log.warning("control_rejection_not_stored", reason="backlog full")
                else:
                    rejections.put_nowait(outcome)
                continue
            await _store_command(db, outcome, retry)
            wake()
        await rejections.join()  # only a finite source ends (tests): leave nothing behind
    except Exception as exc:  # task boundary: logged, and the session fails at its next turn
        log.exception("mqtt_control_failed", run_id=run_id)
        controls.fail(exc)
        wake()
    finally:
        recorder.cancel()
        await asyncio.gather(recorder, return_exceptions=True)


async def _store_command(db: AsyncEngine, command: VerifiedCommand, retry: WriteRetry) -> None:
    """Store `command` in `control_events`, unless it names the row it is already stored as."""
    event_id = command.event_id
    if event_id is not None and await retry.run(
        partial(
            control.is_stored,
            db,
            event_id,
            command.command,
            command.reason,
            flatten=command.flatten,
        ),
        what="lookup",
    ):
        log.info("control_already_stored", id=event_id, command=command.command.value)
        return
    # A retry after a commit whose outcome was lost may store the command twice: harmless,
    # a kill or a resume applied twice in a row does what it did once.
    await retry.run(
        partial(
            control.request,
            db,
            command.command,
            command.reason,
            source="mqtt",
            flatten=command.flatten,
        ),
        what="command",
    )


async def _store_rejections_loop(
    rejections: asyncio.Queue[ControlRejection],
    db: AsyncEngine,
    run_id: str,
    retry: WriteRetry,
) -> None:
    """Put each rejection on record with the run (the bus has logged it: `control_rejected`).

    Best effort: a rejection that cannot be stored is logged and dropped, never fatal.
    """
    while True:
        rejection = await rejections.get()
        try:
            await retry.run(
                partial(
                    repository.insert_risk_event,
                    db,
                    run_id=run_id,
                    ts_ms=_wall_ms(),
                    kind="control_rejected",
                    symbol="",
                    detail=f"mqtt {rejection.reason.value}: {rejection.detail}"[:500],
                ),
                what="rejection",
            )
        except Exception:  # task boundary: a lost rejection record must not stop trading
            log.exception("control_rejection_not_stored", reason=rejection.reason.value)
        finally:
            rejections.task_done()


async def _flush_bus(bus: MqttBus) -> None:
    """Give queued events a moment to reach the broker before the bus closes."""
    if not await bus.flush(timeout_s=_BUS_FLUSH_S):
        log.warning("mqtt_events_unsent", waiting=bus.stats().waiting)


async def _enter_feed(
    stack: AsyncExitStack, feed: BybitKlineFeed, settings: Settings, stop: asyncio.Event
) -> bool:
    """Connect and subscribe within `feed.startup_timeout_s`, or fail with one clear line.

    Returns False, the feed left, when `stop` is set first: systemd's stop timeout is shorter
    than the start-up one, and a stop while the exchange is unreachable is no failure.
    """
    timeout_s = settings.feed.startup_timeout_s
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            entering = True

            def stop_now(waiter: asyncio.Task[Any]) -> None:
                # The deadline moved to now cancels the entry exactly as the timeout would.
                if entering and not waiter.cancelled() and not deadline.expired():
                    deadline.reschedule(loop.time())

            waiter = loop.create_task(stop.wait(), name="daemon.startup_stop")
            waiter.add_done_callback(stop_now)
            try:
                await stack.enter_async_context(feed)
            finally:
                entering = False
                waiter.cancel()
    except TimeoutError as exc:
        if stop.is_set():
            return False
        raise FatalError(
            f"could not connect to {settings.feed.ws_url} and subscribe within {timeout_s:g} s "
            "(feed.startup_timeout_s); is the exchange reachable?"
        ) from exc
    return True


async def _open_run(
    db: AsyncEngine, settings: Settings, options: DaemonOptions
) -> tuple[str, RunStateSnapshot | None]:
    """Continue the latest paper run (checking it fits these settings) or start a new one."""
    latest = await repository.latest_run_id(db, mode=PAPER_MODE)
    if latest is not None and not options.new_run:
        run = await repository.get_run(db, latest)
        assert run is not None
        _check_continuable(run.config, settings, latest)
        log.info("run_continued", run_id=latest)
        return latest, await repository.load_run_state(db, latest)
    now = datetime.now(UTC)
    if latest is not None:
        await repository.end_run(db, latest, now)
    run_id = default_run_id(now)
    await repository.create_run(
        db,
        run_id=run_id,
        mode=PAPER_MODE,
        config={"settings": settings.redacted()},
        strategy=settings.strategy.name,
        interval=settings.feed.interval,
        symbols=list(settings.feed.symbols),
        started_at=now,
    )
    log.info("run_created", run_id=run_id, superseded=latest)
    return run_id, None


def _check_continuable(stored: dict[str, Any], settings: Settings, run_id: str) -> None:
    wanted = settings.redacted()
    for section in CONTINUITY_SECTIONS:
        if stored["settings"].get(section) != wanted[section]:
            raise ConfigError(
                f"paper run {run_id!r} was started with different {section} settings; "
                "restore them or start a new account with --new-run",
                key=section,
            )
    stored_feed = stored["settings"]["feed"]
    for key in ("symbols", "interval"):
        if stored_feed.get(key) != wanted["feed"][key]:
            raise ConfigError(
                f"paper run {run_id!r} trades feed.{key}={stored_feed.get(key)!r}; "
                f"restore it or start a new account with --new-run",
                key=f"feed.{key}",
            )


async def _restore(
    db: AsyncEngine, engine: Engine, settings: Settings, snapshot: RunStateSnapshot
) -> None:
    """Load the committed snapshot and re-feed the run's stored bars to the features."""
    engine.load_state_dict(snapshot.state)
    bars = await repository.fetch_run_bars(
        db, snapshot.run_id, settings.feed.interval, snapshot.last_slice_start_ms
    )
    for bar in bars:
        engine.warm((bar,))
    log.info(
        "run_restored",
        run_id=snapshot.run_id,
        last_start_ms=snapshot.last_slice_start_ms,
        warm_bars=len(bars),
    )


def _open_recording(
    settings: Settings, options: DaemonOptions, stack: AsyncExitStack, wall_ms: Callable[[], int]
) -> _LiveRecording | None:
    if options.record_dir is None:
        return None
    try:
        options.record_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--record {options.record_dir}: {exc.strerror or exc}", key="--record"
        ) from exc
    section = settings.recorder
    recording = RotatingRecording(
        options.record_dir,
        rotate_max_bytes=section.rotate_max_bytes,
        rotate_interval_s=section.rotate_interval_s,
        compress=section.compress,
    )
    live = _LiveRecording(recording, wall_ms)
    stack.callback(live.close)
    return live


class _LiveRecording:
    """`--record` as the daemon writes it: a failed write is fatal, flushes are timed.

    Frames are written inside the feed's receive path, whose connection loop retries every
    OSError as a network failure: a full disk raised as OSError there would reconnect forever
    while nothing trades. So a failed write (or flush) becomes `FatalError`, which ends the feed
    and with it the session, as in `trader record`; later writes raise it again.
    """

    def __init__(self, recording: RotatingRecording, wall_ms: Callable[[], int]) -> None:
        self._recording = recording
        self._wall_ms = wall_ms
        self._failure: FatalError | None = None

    def write_frame(self, recv_ms: int, text: str) -> None:
        """The feed's `on_frame`.

        Raises:
            FatalError: The recording cannot be written.
        """
        self._raise_if_failed()
        try:
            self._recording.write_frame(recv_ms, text)
        except OSError as exc:
            raise self._fail(exc) from exc

    def write_rest_bar(self, bar: Bar) -> None:
        """The session's `on_rest_bar`, stamped with the wall clock like a frame.

        Raises:
            FatalError: The recording cannot be written.
        """
        self._raise_if_failed()
        try:
            self._recording.write_rest_bar(self._wall_ms(), bar)
        except OSError as exc:
            raise self._fail(exc) from exc

    async def flush_every(self, interval_s: float) -> None:
        """Hand buffered lines to the OS every `interval_s` (`recorder.flush_interval_s`).

        Raises:
            FatalError: A flush failed.
        """
        while True:
            # A periodic timer, not a synchronisation wait.
            await asyncio.sleep(interval_s)
            self._raise_if_failed()
            try:
                self._recording.flush()
            except OSError as exc:
                raise self._fail(exc) from exc

    def close(self) -> None:
        """Finish the open file. After a failure a failing close is only logged: the failure
        that ended the daemon is the one to report."""
        try:
            self._recording.close()
        except OSError as exc:
            if self._failure is None:
                raise self._fail(exc) from exc
            log.warning("recording_close_failed", error=str(exc))

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _fail(self, exc: OSError) -> FatalError:
        log.error("recording_failed", error=str(exc))
        self._failure = FatalError(f"cannot write the recording: {exc}")
        return self._failure

"""`trader record`: the live Bybit kline stream written to rotating recording files.

Owns `RotatingRecording` (size and time rotation on top of `RecordingWriter`, one complete
JSON Lines file per rotation, gzip by default) and `record`, which runs one `BybitKlineFeed`,
writes every received text frame through the feed's ``on_frame`` hook in the contract's
recording format, flushes on a timer and stops cleanly on a stop event. It reports its life
cycle to systemd through a `SystemdNotifier` (ready, status, watchdog, stopping).

It must not parse or validate frames (the feed and replay do that), backfill gaps over REST,
install signal handlers (the CLI does) or touch the database.

File writes happen on the event loop, not in a worker thread: ``on_frame`` is a synchronous
hook, each frame is a few hundred bytes appended to a buffered (gzip) file, and a flush is one
``write`` to the OS page cache without ``fsync``. That is microseconds per frame at Bybit's
push rate, less than handing each frame to a thread would cost.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from trader.config import Settings
from trader.domain import Bar
from trader.errors import ConfigError, FatalError, TraderError
from trader.feeds.backoff import Backoff
from trader.feeds.bybit_ws import ConfirmedBar, FeedEvent, FeedReconnected
from trader.notify import SystemdNotifier
from trader.pipeline import build_feed
from trader.replay.recording import RecordingWriter

_MS_PER_S: Final = 1_000
#: What one REST bar line counts toward `rotate_max_bytes` (about its JSON size).
_REST_LINE_BYTES: Final = 200


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class _NewFileWriter(RecordingWriter):
    """A `RecordingWriter` that refuses to overwrite: each rotation must start a new file."""

    def _target_for(self, recv_ms: int) -> tuple[Path, bool]:
        path, compress = super()._target_for(recv_ms)
        if path.exists():
            # Only a restart within the same millisecond as an earlier file's first frame gets
            # here; losing that file silently would be worse than stopping.
            raise FileExistsError(f"recording file {path} already exists")
        return path, compress


class RotatingRecording:
    """Recording files in one directory, rotated by size and by time.

    Each file is named ``{prefix}-{recv_ts of its first line}.jsonl.gz`` (``.jsonl`` without
    compression) and is closed before the next one opens, so every finished file is a complete
    gzip member. A file is rotated before a line whose ``recv_ms`` lies ``rotate_interval_s``
    or more after the file's first line, or once the frames in it reach ``rotate_max_bytes``
    (uncompressed, as received). Rotation waits for a later millisecond than the file's first
    line, which keeps the names unique. Not thread-safe; one owner writes.

    Args:
        out_dir: An existing directory.
        rotate_max_bytes: Frame bytes (UTF-8, uncompressed) after which a file is rotated.
        rotate_interval_s: Seconds of ``recv_ms`` one file may span.
        compress: Gzip the files.
        prefix: File name prefix.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        rotate_max_bytes: int,
        rotate_interval_s: float,
        compress: bool = True,
        prefix: str = "frames",
    ) -> None:
        self._out_dir = out_dir
        self._max_bytes = rotate_max_bytes
        self._interval_ms = int(rotate_interval_s * _MS_PER_S)
        self._compress = compress
        self._prefix = prefix
        self._writer: RecordingWriter | None = None
        self._first_ms = 0
        self._bytes_in_file = 0
        self._files: list[Path] = []
        self._frames = 0
        self._log = structlog.get_logger().bind(out_dir=str(out_dir))

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file opened so far, oldest first."""
        return tuple(self._files)

    @property
    def frames_written(self) -> int:
        """Frames written over the object's life, across all files."""
        return self._frames

    def write_frame(self, recv_ms: int, text: str | bytes) -> None:
        """Append one received frame, rotating first when the current file is full or old.

        Raises:
            OSError: The file could not be created or written.
        """
        writer = self._writer_for(recv_ms)
        writer.write_frame(recv_ms, text)
        self._wrote(writer, len(text.encode() if isinstance(text, str) else text))
        self._frames += 1

    def write_rest_bar(self, recv_ms: int, bar: Bar) -> None:
        """Append one bar received over REST (`trader run --record`), rotating like frames.

        Raises:
            OSError: The file could not be created or written.
        """
        writer = self._writer_for(recv_ms)
        writer.write_rest_bar(recv_ms, bar)
        self._wrote(writer, _REST_LINE_BYTES)

    def _writer_for(self, recv_ms: int) -> RecordingWriter:
        if self._writer is not None and self._due(recv_ms):
            self._close_current()
        if self._writer is None:
            self._writer = _NewFileWriter(
                self._out_dir, compress=self._compress, prefix=self._prefix
            )
            self._first_ms, self._bytes_in_file = recv_ms, 0
        return self._writer

    def _wrote(self, writer: RecordingWriter, size_bytes: int) -> None:
        if writer.lines_written == 1 and writer.path is not None:
            self._files.append(writer.path)
            self._log.info("recording_file_opened", path=str(writer.path))
        self._bytes_in_file += size_bytes

    def flush(self) -> None:
        """Hand buffered lines to the OS; the open gzip file is readable up to here."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Finish the open file (gzip trailer included). Closing twice is harmless."""
        if self._writer is not None:
            self._close_current()

    def _due(self, recv_ms: int) -> bool:
        if recv_ms <= self._first_ms:
            return False
        too_old = recv_ms - self._first_ms >= self._interval_ms
        return too_old or self._bytes_in_file >= self._max_bytes

    def _close_current(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            self._log.info(
                "recording_file_closed",
                path=str(writer.path),
                lines=writer.lines_written,
                frame_bytes=self._bytes_in_file,
            )


@dataclass(frozen=True, slots=True)
class RecordSummary:
    """What one `record` call wrote.

    Attributes:
        files: The recording files, oldest first.
        frames: Websocket text frames written.
        confirmed_bars: New confirmed bars the feed delivered.
        reconnects: Times the feed reconnected.
    """

    files: tuple[Path, ...]
    frames: int
    confirmed_bars: int
    reconnects: int


class _Recorder:
    """One recording session: the feed, the files, the counters and the first failure."""

    def __init__(
        self,
        settings: Settings,
        recording: RotatingRecording,
        *,
        backoff: Backoff,
        wall_ms: Callable[[], int],
        on_event: Callable[[FeedEvent], None] | None,
        notifier: SystemdNotifier,
    ) -> None:
        self._notifier = notifier
        self._recording = recording
        self._flush_interval_s = settings.recorder.flush_interval_s
        self._on_event = on_event
        self._feed = build_feed(
            settings.feed, backoff=backoff, on_frame=self._on_frame, wall_ms=wall_ms
        )
        self._done = asyncio.Event()
        self._failure: TraderError | None = None
        self.confirmed_bars = 0
        self._log = structlog.get_logger().bind(component="recorder")

    async def run(self, stop: asyncio.Event) -> RecordSummary:
        """Record until `stop` is set or something fails; always leave the feed and close."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._feed_loop(), name="recorder.feed"),
                    group.create_task(self._flush_loop(), name="recorder.flush"),
                    group.create_task(self._stop_loop(stop), name="recorder.stop"),
                    group.create_task(self._notifier.watchdog_loop(), name="recorder.watchdog"),
                ]
                await self._done.wait()
                # The feed task leaves the feed (even mid-connect) when cancelled, so no frame
                # arrives after the TaskGroup exits and the file can be closed for good.
                for task in tasks:
                    task.cancel()
        finally:
            self._close()
        if self._failure is not None:
            raise self._failure
        return RecordSummary(
            files=self._recording.files,
            frames=self._recording.frames_written,
            confirmed_bars=self.confirmed_bars,
            reconnects=self._feed.reconnects,
        )

    def _on_frame(self, recv_ms: int, text: str) -> None:
        if self._failure is not None:
            return
        try:
            self._recording.write_frame(recv_ms, text)
        except OSError as exc:
            # Raising here would reach the feed's reconnect loop, which retries OSError as a
            # network failure; a full disk is not one, so the session ends instead.
            self._fail(FatalError(f"cannot write the recording: {exc}"), exc)

    async def _feed_loop(self) -> None:
        """Task boundary around the feed: count its events; any failure ends the session."""
        try:
            async with self._feed:
                self._log.info("recording_started")
                # Every topic is subscribed here: the moment a Type=notify unit is up.
                self._notifier.ready()
                async for event in self._feed:
                    self._count(event)
            self._done.set()
        except TraderError as exc:
            self._log.exception("recording_failed", task="recorder.feed")
            self._fail(exc, exc)
        except Exception as exc:
            self._log.exception("recording_failed", task="recorder.feed")
            self._fail(FatalError(f"the feed failed: {exc!r}"), exc)

    def _count(self, event: FeedEvent) -> None:
        if isinstance(event, ConfirmedBar):
            self.confirmed_bars += 1
        elif isinstance(event, FeedReconnected):
            # Bars closed while disconnected are not in the recording; say which, so an
            # operator can fetch them (this command does no REST backfill).
            self._log.warning("recording_gap_possible", last_starts=event.last_starts)
        if self._on_event is not None:
            self._on_event(event)

    async def _flush_loop(self) -> None:
        """Bound what a crash can lose to one flush interval of frames."""
        try:
            while True:
                # A periodic timer, not a synchronisation wait.
                await asyncio.sleep(self._flush_interval_s)
                self._recording.flush()
                self._notifier.status(
                    f"recording: {self._recording.frames_written} frames, "
                    f"{self.confirmed_bars} confirmed bars, {self._feed.reconnects} reconnects"
                )
        except OSError as exc:
            self._log.exception("recording_failed", task="recorder.flush")
            self._fail(FatalError(f"cannot flush the recording: {exc}"), exc)

    async def _stop_loop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._log.info("recording_stopping")
        self._notifier.stopping()
        self._done.set()

    def _close(self) -> None:
        """Close the open file; a failed close is the session's failure unless one came first
        (a full disk fails the write, then usually the close too: the write is the story)."""
        try:
            self._recording.close()
        except OSError as exc:
            self._fail(FatalError(f"cannot close the recording: {exc}"), exc)

    def _fail(self, error: TraderError, cause: BaseException) -> None:
        if self._failure is None:
            if error is not cause:
                error.__cause__ = cause
            self._failure = error
        self._done.set()


async def record(
    settings: Settings,
    out_dir: Path,
    *,
    stop: asyncio.Event,
    backoff: Backoff | None = None,
    wall_ms: Callable[[], int] = _wall_ms,
    on_event: Callable[[FeedEvent], None] | None = None,
    notifier: SystemdNotifier | None = None,
) -> RecordSummary:
    """Record Bybit's kline stream for ``settings.feed`` into ``out_dir`` until ``stop`` is set.

    Every received text frame (acks and pongs included, as the contract asks) becomes one line
    ``{"recv_ts": ms, "frame": ...}``. The feed reconnects by itself; reconnects are logged and
    counted. On ``stop`` the feed is left, and the open file is flushed and closed.

    Args:
        settings: The whole configuration; ``feed`` and ``recorder`` are used.
        out_dir: Directory for the files; created if missing.
        stop: Set it to end the recording cleanly.
        backoff: Reconnect pacing (default: jittered, 0.5 s doubling to 30 s).
        wall_ms: Epoch milliseconds for ``recv_ts`` and time rotation.
        on_event: Called with each feed event after it was counted (an observer for tests
            and progress displays).
        notifier: Where READY, STATUS (each flush), WATCHDOG and STOPPING go (default: none).

    Returns:
        The files written and the counts.

    Raises:
        ConfigError: ``out_dir`` is not a usable directory, or Bybit rejected a topic.
        FatalError: The feed failed for good or the recording could not be written.
    """
    try:
        await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out_dir}: {exc.strerror or exc}", key="--out") from exc
    options = settings.recorder
    recording = RotatingRecording(
        out_dir,
        rotate_max_bytes=options.rotate_max_bytes,
        rotate_interval_s=options.rotate_interval_s,
        compress=options.compress,
    )
    recorder = _Recorder(
        settings,
        recording,
        backoff=backoff if backoff is not None else Backoff(rng=random.Random()),
        wall_ms=wall_ms,
        on_event=on_event,
        notifier=notifier if notifier is not None else SystemdNotifier(None),
    )
    return await recorder.run(stop)

"""The must-show fault session: 24 injected faults of every kind against a running daemon.

Afterwards every closed bar is stored exactly once with the fake's values, in order, from the
stream or REST; every bar has a decision; the daemon never exited; JSON pings kept their
interval; and `trader replay` of the session's own recording gives the same decisions and fills.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.support.daemon_harness import (
    BTC,
    ETH,
    FIVE_MIN_MS,
    HISTORY,
    WARMUP_BARS,
    DaemonDb,
    daemon_settings,
    expected_keys,
    start_daemon_task,
)
from tests.support.eventually import until
from tests.support.fake_bybit import FakeBybit
from trader.config import Settings
from trader.daemon import DaemonOptions
from trader.replay.recording import FrameLine, iter_recording
from trader.replay.runner import ReplayOptions, replay

_STEP_S = 30.0  # bounds a failing wait only
_SYMBOLS = "BTCUSDT,ETHUSDT"
_PING_INTERVAL_S = 0.5


class _Session:
    """Drives the fake through faults and waits for the daemon to catch up after each."""

    def __init__(self, fake: FakeBybit, db: DaemonDb) -> None:
        self.fake = fake
        self.db = db
        self.faults = 0

    def last_closed_ms(self) -> int:
        return self.fake.market.forming_start_ms - FIVE_MIN_MS

    def subscribes(self) -> int:
        return sum(1 for request in self.fake.ws_requests if request.op == "subscribe")

    async def caught_up(self) -> None:
        target = self.last_closed_ms()
        await until(lambda: self.db.last_start() == target, timeout_s=_STEP_S, what="catch-up")

    async def resubscribed(self, before: int, topics: int = 2) -> None:
        async with asyncio.timeout(_STEP_S):
            await self.fake.ws.wait_for_requests("subscribe", before + topics)

    async def fault(self, inject: Callable[[], Awaitable[None]], bars: int = 2) -> None:
        await inject()
        self.faults += 1
        await self.fake.advance_bars(bars)
        await self.caught_up()

    # --- the faults ----------------------------------------------------------------------

    async def server_close(self) -> None:
        before = self.subscribes()
        await self.fake.close_connections(1001, "going away")
        await self.resubscribed(before)

    async def abort(self) -> None:
        before = self.subscribes()
        self.fake.abort_connections()
        await self.resubscribed(before)

    async def pause(self) -> None:
        before = self.subscribes()
        self.fake.pause_pushes()
        await self.fake.advance_bars(3)  # closes that only REST can deliver
        await self.resubscribed(before)  # the staleness watch gave up on the silent topics
        self.fake.resume_pushes()

    async def drop_confirm(self) -> None:
        self.fake.drop_next_confirm("BTCUSDT")

    async def duplicate_confirm(self) -> None:
        self.fake.duplicate_next_confirm("ETHUSDT")

    async def out_of_order(self) -> None:
        await self.fake.push_old_confirm("BTCUSDT", 3)

    async def malformed_text(self) -> None:
        await self.fake.push_text()

    async def nan_kline(self) -> None:
        await self.fake.push_nan_kline("ETHUSDT")

    async def rejected_resubscribe(self) -> None:
        before = self.subscribes()
        self.fake.reject_next_subscribe("kline.5.BTCUSDT")
        await self.fake.close_connections()
        await self.resubscribed(before, topics=3)  # rejected once, then retried

    async def stalled_pongs(self) -> None:
        before = self.subscribes()
        self.fake.stall_pongs(True)
        await self.resubscribed(before)  # the pong deadline forced a reconnect
        self.fake.stall_pongs(False)

    async def rest_rate_limited(self) -> None:
        self.fake.rate_limit_next_klines(2)
        await self.server_close()  # the reconnect backfill meets 10006 twice

    async def rest_forbidden(self) -> None:
        self.fake.forbid_next_calls(1)
        await self.server_close()  # the reconnect backfill meets an HTTP 403


async def test_session_survives_24_faults_and_replays_identically(tmp_path: Path) -> None:
    """Twice through every kind of fault: the daemon keeps running, stores every bar once with the
    fake's values and a decision each, and its recording replays to the same decisions and fills."""
    db = DaemonDb(tmp_path / "trader.db")
    recording = tmp_path / "recording"
    stop = asyncio.Event()
    async with FakeBybit(BTC + ETH, start_ms=BTC[HISTORY].start_ms) as fake:
        settings = daemon_settings(
            fake, db.path, _SYMBOLS, TRADER_FEED__PING_INTERVAL_S=str(_PING_INTERVAL_S)
        )
        session = _Session(fake, db)
        async with asyncio.TaskGroup() as group:
            task = start_daemon_task(group, settings, stop, DaemonOptions(record_dir=recording))
            await session.caught_up()  # the warm-up history, before the clock moves
            await fake.advance_bars(2)
            await session.caught_up()
            kinds = [
                session.server_close,
                session.abort,
                session.pause,
                session.drop_confirm,
                session.duplicate_confirm,
                session.out_of_order,
                session.malformed_text,
                session.nan_kline,
                session.rejected_resubscribe,
                session.stalled_pongs,
                session.rest_rate_limited,
                session.rest_forbidden,
            ]
            for inject in kinds + kinds:
                await session.fault(inject)
                assert not task.done(), f"the daemon exited after {inject.__name__}"
            stop.set()
        summary = task.result()
    last_index = HISTORY + (session.last_closed_ms() - BTC[HISTORY].start_ms) // FIVE_MIN_MS
    expected = expected_keys([BTC, ETH], HISTORY - WARMUP_BARS, last_index)

    assert session.faults == 24
    assert db.bar_keys() == expected  # every bar once, in order, none missing
    assert _stored_values(db) == _fixture_values(expected)
    assert {row[7] for row in db.bars()} == {"ws", "rest"}
    assert db.decision_keys(summary.run_id) == expected
    assert summary.reconnects >= 12
    _assert_ping_interval(recording)
    sources = tuple(sorted(recording.iterdir()))
    await _assert_replay_matches(settings, sources, db, summary.run_id, tmp_path)


def _stored_values(db: DaemonDb) -> list[tuple[object, ...]]:
    return [row[:7] for row in db.bars()]


def _fixture_values(keys: list[tuple[str, int]]) -> list[tuple[object, ...]]:
    by_key = {(bar.symbol, bar.start_ms): bar for bar in BTC + ETH}
    return [
        (
            s,
            t,
            by_key[s, t].open,
            by_key[s, t].high,
            by_key[s, t].low,
            by_key[s, t].close,
            by_key[s, t].volume,
        )
        for s, t in keys
    ]


def _assert_ping_interval(recording: Path) -> None:
    """Pongs (recorded as received) on one connection come every ping interval."""
    pongs: dict[str, list[int]] = {}
    for path in sorted(recording.iterdir()):
        for line in iter_recording(path):
            frame = line.frame if isinstance(line, FrameLine) else None
            if isinstance(frame, dict) and frame.get("op") == "ping" and frame.get("ret_msg"):
                pongs.setdefault(str(frame.get("conn_id")), []).append(line.recv_ms)
    gaps_s = [
        (later - earlier) / 1_000
        for times in pongs.values()
        for earlier, later in itertools.pairwise(times)
    ]
    assert len(gaps_s) >= 5  # most connections are cut by the next fault within a second
    assert 0.8 * _PING_INTERVAL_S <= statistics.median(gaps_s) <= 1.6 * _PING_INTERVAL_S


async def _assert_replay_matches(
    settings: Settings, sources: tuple[Path, ...], db: DaemonDb, run_id: str, tmp_path: Path
) -> None:
    replay_db = DaemonDb(tmp_path / "replay.db")
    replay_settings = settings.model_copy(
        update={
            "database": settings.database.model_copy(
                update={"url": f"sqlite+aiosqlite:///{replay_db.path}"}
            )
        }
    )
    outcome = await replay(replay_settings, ReplayOptions(sources=sources, run_name="parity"))
    assert outcome.results.run_id == "parity"
    assert replay_db.decisions("parity") == db.decisions(run_id)
    assert _fills(replay_db, "parity") == _fills(db, run_id)
    assert db.fills(run_id), "the session should have traded"


def _fills(db: DaemonDb, run_id: str) -> list[tuple[object, ...]]:
    return [row[1:] for row in db.fills(run_id)]

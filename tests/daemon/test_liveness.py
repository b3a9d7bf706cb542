"""The daemon stays responsive while it waits: the watchdog pings and a kill applies during a
catch-up stuck on REST, and a stop during start-up ends the daemon at once, as a normal stop."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

from tests.support.daemon_harness import (
    BTC,
    ETH,
    HISTORY,
    DaemonDb,
    daemon_settings,
    fast_backoff,
)
from tests.support.eventually import until
from tests.support.fake_bybit import FakeBybit
from trader.config import Settings
from trader.daemon import DaemonOptions, DaemonSummary, run_daemon
from trader.notify import SystemdNotifier
from trader.persistence import control
from trader.persistence.control import ControlCommand
from trader.persistence.database import make_engine

_SYMBOLS = "BTCUSDT,ETHUSDT"
#: How long an HTTP 403 stops all REST calls in these tests (Bybit asks for 10 minutes).
_FORBIDDEN_PAUSE_S = 4.0


class _WatchdogClock(SystemdNotifier):
    """Records when each WATCHDOG=1 would have been sent."""

    def __init__(self) -> None:
        super().__init__(None)
        self.pings: list[float] = []

    def watchdog(self) -> None:
        self.pings.append(time.monotonic())


def _start(
    settings: Settings, stop: asyncio.Event, notifier: SystemdNotifier | None = None
) -> asyncio.Task[DaemonSummary]:
    return asyncio.create_task(
        run_daemon(
            settings,
            DaemonOptions(),
            stop=stop,
            notifier=notifier,
            backoff=fast_backoff(),
            rest_backoff=fast_backoff(),
        )
    )


async def _forbidden_catch_up(fake: FakeBybit) -> None:
    """Cut the stream so the reconnect's catch-up meets an HTTP 403; return once it has."""
    calls = len(fake.rest_queries)
    fake.forbid_next_calls(1)
    await fake.close_connections()
    await until(lambda: len(fake.rest_queries) > calls, timeout_s=10, what="the 403")


async def test_watchdog_pings_go_on_while_a_catch_up_waits_out_a_403(tmp_path: Path) -> None:
    """The catch-up's REST pause after a 403 must not silence the watchdog (systemd would kill a
    daemon that is only waiting as Bybit asks)."""
    db = DaemonDb(tmp_path / "trader.db")
    stop = asyncio.Event()
    notifier = _WatchdogClock()
    async with FakeBybit(BTC + ETH, start_ms=BTC[HISTORY].start_ms) as fake:
        settings = daemon_settings(
            fake, db.path, _SYMBOLS, TRADER_FEED__REST_FORBIDDEN_PAUSE_S=str(_FORBIDDEN_PAUSE_S)
        )
        task = _start(settings, stop, notifier)
        try:
            await until(lambda: db.last_start() == BTC[HISTORY - 1].start_ms, what="warm-up")
            await _forbidden_catch_up(fake)
            paused_at = time.monotonic()
            await fake.advance_bars(1)
            await until(
                lambda: db.last_start() == BTC[HISTORY].start_ms, what="caught up after the pause"
            )
            assert time.monotonic() - paused_at >= 0.8 * _FORBIDDEN_PAUSE_S  # it did wait
            stop.set()
            await task
        finally:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
    during = [ping for ping in notifier.pings if ping >= paused_at - 1.0]
    gaps_s = [later - earlier for earlier, later in itertools.pairwise(during)]
    assert len(during) >= _FORBIDDEN_PAUSE_S - 1
    assert max(gaps_s) < 2.0


async def test_a_kill_applies_at_once_while_a_catch_up_waits_out_a_403(tmp_path: Path) -> None:
    """A kill stored while the catch-up waits on REST is applied within a poll or two, not
    after the REST pause."""
    db = DaemonDb(tmp_path / "trader.db")
    stop = asyncio.Event()
    async with FakeBybit(BTC + ETH, start_ms=BTC[HISTORY].start_ms) as fake:
        settings = daemon_settings(
            fake, db.path, _SYMBOLS, TRADER_FEED__REST_FORBIDDEN_PAUSE_S=str(_FORBIDDEN_PAUSE_S)
        )
        task = _start(settings, stop)
        engine = make_engine(f"sqlite+aiosqlite:///{db.path}")
        try:
            await until(lambda: db.last_start() == BTC[HISTORY - 1].start_ms, what="warm-up")
            await _forbidden_catch_up(fake)
            calls = len(fake.rest_queries)
            requested_at = time.monotonic()
            await control.request(engine, ControlCommand.KILL, "operator", source="cli")
            await until(
                lambda: db.rows("SELECT 1 FROM control_events WHERE applied_at IS NOT NULL"),
                timeout_s=_FORBIDDEN_PAUSE_S,
                what="the kill applied",
            )
            assert time.monotonic() - requested_at < 1.5
            assert len(fake.rest_queries) == calls  # still in the pause: mid-catch-up
            assert not task.done()
            stop.set()
            await task
        finally:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
            await engine.dispose()
    (state,) = db.rows("SELECT json_extract(state, '$.risk.machine.state') FROM run_state")
    assert state == ("HALTED",)


async def test_a_stop_while_connecting_at_start_up_ends_the_daemon_at_once(
    tmp_path: Path,
) -> None:
    """SIGTERM while the exchange is unreachable at start-up: a prompt, normal return, not a
    failure once `feed.startup_timeout_s` has passed."""
    db = DaemonDb(tmp_path / "trader.db")
    stop = asyncio.Event()
    async with FakeBybit(BTC, start_ms=BTC[HISTORY].start_ms) as fake:
        settings = daemon_settings(
            fake,
            db.path,
            "BTCUSDT",
            TRADER_FEED__WS_URL="ws://127.0.0.1:9/v5/public/linear",  # nothing listens
            TRADER_FEED__STARTUP_TIMEOUT_S="30",
        )
        task = _start(settings, stop)
        try:
            await asyncio.sleep(0.5)  # connecting, retrying, not ready
            assert not task.done()
            stop.set()
            async with asyncio.timeout(5):
                summary = await task
        finally:
            stop.set()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert summary.counters.slices == 0
    assert summary.reconnects >= 1
    assert fake.rest_queries == []  # nothing traded, nothing fetched

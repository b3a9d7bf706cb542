"""Which paper run a start continues: the same account, a refused change, or `--new-run`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.daemon_harness import (
    BTC,
    HISTORY,
    DaemonDb,
    daemon_settings,
    start_daemon_task,
)
from tests.support.eventually import until
from tests.support.fake_bybit import FakeBybit
from trader.config import Settings
from trader.daemon import DaemonOptions, DaemonSummary, run_daemon
from trader.errors import ConfigError


async def _session(
    fake: FakeBybit, db: DaemonDb, settings: Settings, options: DaemonOptions | None = None
) -> DaemonSummary:
    """Start a daemon, let it catch up and trade one more bar, stop it."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        task = start_daemon_task(group, settings, stop, options)
        target = fake.market.forming_start_ms - 300_000
        await until(lambda: db.last_start() == target, what="catch-up")
        await fake.advance_bars(1)
        await until(lambda: db.last_start() == target + 300_000, what="one live bar")
        stop.set()
    return task.result()


async def test_restart_continues_the_same_paper_run_after_its_last_bar(tmp_path: Path) -> None:
    """A restart resumes the same run, fetches the bars closed while it was down over REST, and
    leaves a decision for every bar."""
    db = DaemonDb(tmp_path / "trader.db")
    async with FakeBybit(BTC, start_ms=BTC[HISTORY].start_ms) as fake:
        settings = daemon_settings(fake, db.path, "BTCUSDT")
        first = await _session(fake, db, settings)
        await fake.advance_bars(2)  # closed while the daemon was down: fetched over REST
        second = await _session(fake, db, settings)
    assert (first.resumed, second.resumed) == (False, True)
    assert second.run_id == first.run_id
    assert second.counters.rest_bars == 2
    assert db.decision_keys(first.run_id) == db.bar_keys()


async def test_changed_strategy_is_refused_until_new_run_starts_a_new_account(
    tmp_path: Path,
) -> None:
    """Changed strategy settings are refused with a hint at `--new-run`; with it a new run starts
    and the old one is ended."""
    db = DaemonDb(tmp_path / "trader.db")
    async with FakeBybit(BTC, start_ms=BTC[HISTORY].start_ms) as fake:
        first = await _session(fake, db, daemon_settings(fake, db.path, "BTCUSDT"))
        changed = daemon_settings(fake, db.path, "BTCUSDT", TRADER_STRATEGY__NAME="buy_hold")
        with pytest.raises(ConfigError, match=r"different strategy settings.*--new-run"):
            await run_daemon(changed, DaemonOptions(), stop=asyncio.Event())
        second = await _session(fake, db, changed, DaemonOptions(new_run=True))
    assert second.run_id != first.run_id
    assert not second.resumed
    ended = db.rows("SELECT id FROM runs WHERE ended_at IS NOT NULL")
    assert ended == [(first.run_id,)]

"""`trader run` in-process against the fake exchange: warm-up, live slices, gaps, shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.daemon_harness import (
    BTC,
    ETH,
    HISTORY,
    WARMUP_BARS,
    DaemonDb,
    daemon_settings,
    expected_keys,
    start_daemon_task,
)
from tests.support.eventually import until
from tests.support.fake_bybit import FakeBybit


async def test_warm_up_then_every_live_bar_once_with_a_decision_each(tmp_path: Path) -> None:
    """Start-up fetches the warm-up history over REST; live confirms follow, each bar once."""
    db = DaemonDb(tmp_path / "trader.db")
    stop = asyncio.Event()
    async with FakeBybit(BTC + ETH, start_ms=BTC[HISTORY].start_ms) as fake:
        settings = daemon_settings(fake, db.path, "BTCUSDT,ETHUSDT")
        async with asyncio.TaskGroup() as group:
            task = start_daemon_task(group, settings, stop)
            last_warm = BTC[HISTORY - 1].start_ms
            await until(lambda: db.last_start() == last_warm, what="warm-up stored")
            await fake.advance_bars(3)
            await until(lambda: db.last_start() == BTC[HISTORY + 2].start_ms, what="live bars")
            stop.set()
        summary = task.result()
    run_id = summary.run_id
    expected = expected_keys([BTC, ETH], HISTORY - WARMUP_BARS, HISTORY + 2)
    assert db.bar_keys() == expected
    assert db.decision_keys(run_id) == expected
    sources = {row[1]: row[7] for row in db.bars() if row[0] == "BTCUSDT"}
    assert sources[BTC[HISTORY - 1].start_ms] == "rest"
    assert sources[BTC[HISTORY].start_ms] == "ws"
    assert summary.counters.ws_bars == 6
    assert summary.counters.rest_bars == 2 * WARMUP_BARS

"""`python -m trader run` as a process: SIGTERM shutdown, and SIGKILL at random points.

The daemon runs exactly as systemd starts it, against the fake exchange in this test's loop,
on a SQLite file the test reads.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path

import pytest

from tests.support.daemon_harness import (
    BTC,
    ETH,
    FIVE_MIN_MS,
    HISTORY,
    WARMUP_BARS,
    DaemonDb,
    expected_keys,
    signed_fill_sum,
    start_daemon_process,
)
from tests.support.eventually import until
from tests.support.fake_bybit import FakeBybit

_SYMBOLS = "BTCUSDT,ETHUSDT"
_WAIT_S = 60.0  # bounds a failing wait only (a cold interpreter start included)


def _last_closed_ms(fake: FakeBybit) -> int:
    return fake.market.forming_start_ms - FIVE_MIN_MS


async def _caught_up(fake: FakeBybit, db: DaemonDb) -> None:
    target = _last_closed_ms(fake)
    await until(lambda: db.last_start() == target, timeout_s=_WAIT_S, what="daemon catch-up")


async def _exit_status(process: asyncio.subprocess.Process, within_s: float) -> tuple[int, str]:
    async with asyncio.timeout(within_s):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode() + stderr.decode()


async def test_sigterm_exits_zero_within_10_s_with_everything_committed(tmp_path: Path) -> None:
    """SIGTERM after live bars: exit 0 within 10 s, every bar and decision stored once and the run
    state at the last slice."""
    db = DaemonDb(tmp_path / "trader.db")
    async with FakeBybit(BTC + ETH, start_ms=BTC[HISTORY].start_ms) as fake:
        process = await start_daemon_process(
            fake, workdir=tmp_path, db_path=db.path, symbols=_SYMBOLS
        )
        try:
            await _caught_up(fake, db)
            await fake.advance_bars(3)
            await _caught_up(fake, db)
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            status, output = await _exit_status(process, within_s=10.0)
            elapsed_s = time.monotonic() - sent
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert status == 0, output[-3_000:]
    assert elapsed_s < 10.0
    assert "stopped" in output
    (run_id,) = db.run_ids()
    expected = expected_keys([BTC, ETH], HISTORY - WARMUP_BARS, HISTORY + 2)
    assert db.bar_keys() == expected
    assert db.decision_keys(run_id) == expected
    state = db.rows("SELECT last_slice_start_ms FROM run_state WHERE run_id = ?", run_id)
    assert state == [(BTC[HISTORY + 2].start_ms,)]


@pytest.mark.parametrize("seed", [11, 12, 13])
async def test_sigkill_twice_then_restart_loses_and_doubles_nothing(
    tmp_path: Path, seed: int
) -> None:
    """Killed at random points (mid-warm-up or mid-stream), restarted on the same database:
    every bar once, a decision per bar, unique client order ids, positions = sum of fills,
    and trading resumed after the last restart."""
    rng = random.Random(seed)
    db = DaemonDb(tmp_path / "trader.db")
    args = ("--symbols", _SYMBOLS)
    async with FakeBybit(BTC + ETH, start_ms=BTC[HISTORY].start_ms) as fake:

        async def start() -> asyncio.subprocess.Process:
            return await start_daemon_process(
                fake,
                workdir=tmp_path,
                db_path=db.path,
                symbols=_SYMBOLS,
                args=args,
                env={"TRADER_STRATEGY__NAME": "random"},  # trades often: resumption shows
            )

        orders_before_last_start = 0
        process = await start()
        try:
            for _kill in range(2):
                await until(db.last_start, timeout_s=_WAIT_S, what="the first commit")
                # A random moment of the session: between bars or while bars stream in.
                await fake.advance_bars(rng.randint(1, 4))
                await asyncio.sleep(rng.uniform(0.0, 1.5))
                process.kill()
                await process.wait()
                await fake.advance_bars(rng.randint(0, 2))  # bars close while it is down
                process = await start()
                (run_id,) = db.run_ids()
                orders_before_last_start = len(db.client_order_ids(run_id))
            await _caught_up(fake, db)
            await fake.advance_bars(12)
            await _caught_up(fake, db)
            process.send_signal(signal.SIGTERM)
            status, output = await _exit_status(process, within_s=10.0)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        last_closed = _last_closed_ms(fake)
    assert status == 0, output[-3_000:]
    assert "run_restored" in output  # the last start resumed from a committed snapshot
    (run_id,) = db.run_ids()
    last_index = HISTORY + (last_closed - BTC[HISTORY].start_ms) // FIVE_MIN_MS
    # The warm-up window ends where the fake's clock stood when a start-up first committed.
    first_index = (db.bar_keys()[0][1] - BTC[0].start_ms) // FIVE_MIN_MS
    assert HISTORY - WARMUP_BARS <= first_index <= HISTORY - WARMUP_BARS + 12
    expected = expected_keys([BTC, ETH], first_index, last_index)
    assert db.bar_keys() == expected
    assert db.decision_keys(run_id) == expected
    order_ids = db.client_order_ids(run_id)
    assert len(order_ids) == len(set(order_ids))
    assert len(order_ids) > orders_before_last_start, "no trading after the last restart"
    fills = signed_fill_sum(db.fills(run_id))
    positions = db.positions(run_id)
    for symbol in {*fills, *positions}:
        assert positions.get(symbol, 0.0) == pytest.approx(fills.get(symbol, 0.0), abs=1e-9)

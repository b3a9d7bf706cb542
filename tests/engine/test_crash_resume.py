"""Crash-resume: a replay SIGKILLed mid-way and run again ends exactly like an uninterrupted one."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.candles import load_candles
from tests.support.eventually import eventually
from tests.support.tables import TABLES, dump_tables

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "BTCUSDT_5m.csv.gz"
ROOT = Path(__file__).resolve().parents[2]


def _replay_cmd(run: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trader",
        "replay",
        str(FIXTURE),
        "--run",
        run,
        "--strategy",
        "random",
        *extra,
    ]


def _env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADER_")}
    env["TRADER_DATABASE__URL"] = f"sqlite+aiosqlite:///{db}"
    # Commit often so the kill lands between many committed batches.
    env["TRADER_DATABASE__FLUSH_INTERVAL_MS"] = "1"
    env["TRADER_DATABASE__FLUSH_MAX_ROWS"] = "50"
    env["TRADER_LOGGING__LEVEL"] = "WARNING"
    return env


def _committed_start_ms(db: Path) -> int | None:
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db) as conn:
            row = conn.execute("SELECT max(last_slice_start_ms) FROM run_state").fetchone()
    except sqlite3.OperationalError:  # tables not created yet
        return None
    return row[0] if row else None


@pytest.mark.slow
def test_killed_replay_ends_identical_when_run_again(tmp_path: Path) -> None:
    """SIGKILL at a random committed point after trading began, rerun: every table matches."""
    bars = load_candles(FIXTURE, "BTCUSDT", "5")
    kill_after_ms = bars[random.Random(20261121).randrange(900, 1300)].start_ms

    whole_db = tmp_path / "whole.db"
    subprocess.run(
        _replay_cmd("r"), env=_env(whole_db), cwd=ROOT, check=True, capture_output=True, timeout=120
    )

    crash_db = tmp_path / "crash.db"
    # --speed paces the first attempt (about 3 s for the file) so the kill lands mid-way.
    victim = subprocess.Popen(
        _replay_cmd("r", "--speed", "150000"),
        env=_env(crash_db),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        eventually(
            lambda: (_committed_start_ms(crash_db) or 0) >= kill_after_ms,
            timeout_s=60,
            what="the replay to commit past the kill point",
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    committed = _committed_start_ms(crash_db)
    assert committed is not None
    assert committed < bars[-1].start_ms, "the kill came after the last commit"

    resumed = subprocess.run(
        _replay_cmd("r"), env=_env(crash_db), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed run r" in resumed.stdout

    whole, crashed = dump_tables(whole_db), dump_tables(crash_db)
    assert len(whole["decisions"]) == len(bars)
    assert whole["fills"], "the run should have traded"
    for table in TABLES:
        assert crashed[table] == whole[table], table

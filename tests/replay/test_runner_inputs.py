"""`replay()` on damaged and mismatched inputs, and the rejection counts it keeps with the run.

A damaged candle file costs one counted rejection and the replay finishes; sources of different
intervals are refused before anything is written; the counts are stored with the run, so that
`load_run_results` (behind `trader report`) gives them back, and a run without them reports
them as not recorded.
"""

from __future__ import annotations

import gzip
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.runs import add_run
from trader.config import Settings
from trader.errors import ConfigError
from trader.persistence import repository
from trader.persistence.database import make_engine
from trader.persistence.migrate import ensure_schema
from trader.replay.runner import ReplayOptions, replay
from trader.run_report import load_run_results, summary_text, write_run_report

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BTC = FIXTURES / "BTCUSDT_5m.csv.gz"
ETH = FIXTURES / "ETHUSDT_5m.csv.gz"
RUN = "inputs"


@pytest.fixture(autouse=True)
def _no_trader_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the shell's TRADER_* settings out: they would beat the URLs these tests pass."""
    for key in list(os.environ):
        if key.startswith("TRADER_"):
            monkeypatch.delenv(key)


def _settings(tmp_path: Path) -> Settings:
    url = f"sqlite+aiosqlite:///{tmp_path / 'trader.db'}"
    return Settings(database={"url": url}, strategy={"name": "ema_cross"})


def _truncated_btc(tmp_path: Path) -> Path:
    """The BTCUSDT fixture's gzip cut in half, under the same name."""
    path = tmp_path / "BTCUSDT_5m.csv.gz"
    data = BTC.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _hourly_eth(tmp_path: Path) -> Path:
    """Three ETHUSDT 60-minute bars in the fixtures' week."""
    path = tmp_path / "ETHUSDT_60m.csv"
    rows = "".join(
        f"2025-06-27 {hour:02d}:00:00+00:00,2400,2410,2390,2405,10\n" for hour in (13, 14, 15)
    )
    path.write_text("timestamp,open,high,low,close,volume\n" + rows, encoding="utf-8")
    return path


async def test_replay_finishes_with_one_rejection_when_a_candle_file_is_cut_short(
    tmp_path: Path,
) -> None:
    """A truncated .csv.gz keeps its readable rows and counts one unreadable_file; ETH runs on."""
    settings = _settings(tmp_path)
    options = ReplayOptions(sources=(_truncated_btc(tmp_path), ETH), run_name=RUN)

    outcome = await replay(settings, options)

    assert outcome.results.rejected == {"unreadable_file": 1}
    assert 1_500 < outcome.results.bars < 3_000
    assert outcome.results.decisions


async def test_config_error_before_any_write_when_sources_differ_in_interval(
    tmp_path: Path,
) -> None:
    """A 5-minute and a 60-minute file are refused with both named, and no run is created."""
    settings = _settings(tmp_path)
    hourly = _hourly_eth(tmp_path)
    options = ReplayOptions(sources=(BTC, hourly), run_name=RUN)

    with pytest.raises(ConfigError) as caught:
        await replay(settings, options)

    assert str(BTC) in str(caught.value)
    assert str(hourly) in str(caught.value)
    db = make_engine(settings.database.url)
    try:
        assert await repository.get_run(db, RUN) is None
    finally:
        await db.dispose()


async def test_stored_counts_reported_when_a_finished_replay_is_loaded_again(
    tmp_path: Path,
) -> None:
    """`load_run_results` without counts (as `trader report` calls it) gives the replay's own."""
    settings = _settings(tmp_path)
    bad = tmp_path / "BTCUSDT_5m.csv.gz"
    lines = gzip.decompress(BTC.read_bytes()).decode().splitlines(keepends=True)
    crossed = lines[5].replace(lines[5].split(",")[2], "1", 1)  # high below low
    rows = [*lines[:6], crossed, lines[5], *lines[6:]]  # then a repeat of the last good row
    bad.write_bytes(gzip.compress("".join(rows).encode()))

    outcome = await replay(settings, ReplayOptions(sources=(bad,), run_name=RUN))
    db = make_engine(settings.database.url)
    try:
        reloaded = await load_run_results(db, RUN)
    finally:
        await db.dispose()

    assert outcome.results.rejected == {"duplicate": 1, "high_below_low": 1}
    assert reloaded.rejected == outcome.results.rejected


async def test_summary_and_metrics_say_not_recorded_when_a_run_has_no_counts(
    tmp_path: Path,
) -> None:
    """A run stored without rejection counts (a live run) reports them as not recorded, not 0."""
    settings = _settings(tmp_path)
    db = make_engine(settings.database.url)
    try:
        await ensure_schema(db)
        await add_run(
            db,
            "live-1",
            strategy="ema_cross",
            config={"settings": settings.redacted()},
            started_at=datetime(2025, 6, 27, tzinfo=UTC),
        )
        results = await load_run_results(db, "live-1")
        paths = await write_run_report(db, results, tmp_path / "report")
    finally:
        await db.dispose()

    text = summary_text(results, color=False)
    assert results.rejected is None
    assert "rejected inputs  not recorded" in text.splitlines()
    assert (
        json.loads(paths.metrics_json.read_text(encoding="utf-8"))["extra"]["rejected_inputs"]
        is None
    )
    assert "not recorded" in summary_text(results, color=True)

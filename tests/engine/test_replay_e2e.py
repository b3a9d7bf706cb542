"""`replay()` end to end through a real database: determinism, frames, bad input, range, pacing.

These run the in-process coroutine behind `trader replay` on the real fixtures and read the rows
back with SQLAlchemy, so the same comparisons work on SQLite and PostgreSQL. The CLI's process
boundary (exit codes, stderr, the console script) is covered in tests/cli.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from trader.cli import parse_time_ms
from trader.config import Settings
from trader.domain import Bar
from trader.persistence.database import make_engine
from trader.persistence.models import Base
from trader.replay.candles import iter_candles
from trader.replay.runner import ReplayOptions, ReplayOutcome, replay
from trader.replay.to_frames import candles_to_frames

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BTC = FIXTURES / "BTCUSDT_5m.csv.gz"
ETH = FIXTURES / "ETHUSDT_5m.csv.gz"
BAR_MS = 300_000
RUN = "e2e"
#: The console script installed next to the interpreter running the tests.
TRADER = str(Path(sys.executable).parent / "trader")
#: Every per-run table the engine writes, plus the shared bars.
RUN_TABLES = (
    "bars",
    "decisions",
    "orders",
    "fills",
    "equity",
    "rewards",
    "positions",
    "risk_events",
)


@pytest.fixture(autouse=True)
def _no_trader_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the shell's TRADER_* settings out: they would beat the URLs these tests pass."""
    for key in list(os.environ):
        if key.startswith("TRADER_") and key != "TRADER_REQUIRE_SERVICES":
            monkeypatch.delenv(key)


def _settings(url: str) -> Settings:
    # The seeded random strategy trades often, so orders and fills are exercised.
    return Settings(database={"url": url}, strategy={"name": "random"})


async def _replay(url: str, *sources: Path, **options: Any) -> ReplayOutcome:
    return await replay(_settings(url), ReplayOptions(sources=sources, run_name=RUN, **options))


async def _dump(
    url: str, tables: Sequence[str], *, skip: Sequence[str] = ("latency_us",)
) -> dict[str, list[dict[str, Any]]]:
    """Each table's rows without the `skip` columns, in a canonical (dialect-free) order."""
    db = make_engine(url)
    try:
        out = {}
        async with db.connect() as conn:
            for name in tables:
                columns = [c for c in Base.metadata.tables[name].columns if c.name not in skip]
                result = await conn.execute(select(*columns))
                # Sorting by repr is a total order on mixed types; equal multisets sort equal.
                rows = sorted(result, key=lambda row: repr(tuple(row)))
                out[name] = [dict(row._mapping) for row in rows]
        return out
    finally:
        await db.dispose()


async def _bar_sources(url: str) -> set[str]:
    rows = await _dump(url, ["bars"], skip=())
    return {row["source"] for row in rows["bars"]}


def _bars(path: Path, count: int | None = None) -> list[Bar]:
    bars = [item for item in iter_candles(path) if isinstance(item, Bar)]
    return bars[:count] if count is not None else bars


async def test_two_replays_store_identical_rows_when_given_the_same_file(tmp_path: Path) -> None:
    """Two replays of the same two files into two databases write the same rows, latency aside."""
    first, second = (f"sqlite+aiosqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    await _replay(first, BTC, ETH)
    await _replay(second, BTC, ETH)

    a, b = await _dump(first, RUN_TABLES), await _dump(second, RUN_TABLES)
    assert len(a["decisions"]) == 3_000
    assert a["fills"], "the seeded random strategy should trade"
    for table in RUN_TABLES:
        assert a[table] == b[table], table


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    """The BTCUSDT fixture turned into Bybit kline frames by `trader data to-frames`."""
    out = tmp_path / "BTCUSDT_5m.jsonl.gz"
    converted = subprocess.run(
        [TRADER, "data", "to-frames", str(BTC), "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert converted.returncode == 0, converted.stderr
    return out


async def test_frames_replay_like_candles_when_converted_with_to_frames(
    tmp_path: Path, recording: Path
) -> None:
    """The to-frames recording replays to the candle file's rows; only `bars.source` differs."""
    candles_url = f"sqlite+aiosqlite:///{tmp_path / 'candles.db'}"
    frames_url = f"sqlite+aiosqlite:///{tmp_path / 'frames.db'}"
    from_candles = await _replay(candles_url, BTC)
    from_frames = await _replay(frames_url, recording)

    assert from_frames.results.rejected == {}
    assert from_frames.results.metrics.final_equity == from_candles.results.metrics.final_equity
    a = await _dump(candles_url, RUN_TABLES, skip=("latency_us", "source"))
    b = await _dump(frames_url, RUN_TABLES, skip=("latency_us", "source"))
    assert len(b["decisions"]) == 1_500
    assert b["fills"], "the seeded random strategy should trade"
    for table in RUN_TABLES:
        assert a[table] == b[table], table
    assert await _bar_sources(candles_url) == {"replay"}
    assert await _bar_sources(frames_url) == {"ws"}


def _confirm_line(lines: list[dict[str, Any]], start_ms: int) -> dict[str, Any]:
    """The recording line that confirms the bar starting at `start_ms`."""
    for line in lines:
        item = line["frame"]["data"][0]
        if item["start"] == start_ms and item["confirm"]:
            return line
    raise AssertionError(f"no confirming push for start={start_ms}")


def _malformed_recording(path: Path, bars: Sequence[Bar]) -> None:
    """Write bars as frames, poison two confirming pushes and add junk lines between them."""
    lines = list(candles_to_frames(bars, updates_per_bar=2, seed=1))
    _confirm_line(lines, bars[300].start_ms)["frame"]["data"][0]["close"] = "NaN"
    crossed = _confirm_line(lines, bars[400].start_ms)["frame"]["data"][0]
    crossed["high"], crossed["low"] = crossed["low"], crossed["high"]
    recv_ms = lines[600]["recv_ts"]
    unknown = {"topic": "tickers.BTCUSDT", "type": "snapshot", "ts": recv_ms, "data": {}}
    text = [json.dumps(line) for line in lines]
    text[500:500] = ["this line is not JSON at all"]
    text[600:600] = [json.dumps({"recv_ts": recv_ms, "frame": "{not json"})]
    text[700:700] = [json.dumps({"recv_ts": recv_ms, "frame": unknown})]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")


async def test_malformed_frames_counted_and_not_stored_when_recording_holds_them(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Junk lines, a NaN kline, a crossed bar and an unknown frame are counted, never stored."""
    bars = _bars(BTC, 900)
    recording = tmp_path / "BTCUSDT_5m.jsonl"
    _malformed_recording(recording, bars)

    outcome = await _replay(sqlite_url, recording)

    assert outcome.results.rejected == {
        "high_below_low": 1,
        "non_finite": 1,
        "unknown_frame": 1,
        "unparseable_frame": 1,
        "unparseable_line": 1,
    }
    rows = await _dump(sqlite_url, ["bars", "decisions"])
    stored = {row["start_ms"] for row in rows["bars"]}
    dropped = {bars[300].start_ms, bars[400].start_ms}
    assert stored == {bar.start_ms for bar in bars} - dropped
    assert sorted(row["bar_start_ms"] for row in rows["decisions"]) == sorted(stored)


async def test_only_bars_in_range_processed_when_from_and_to_given(sqlite_url: str) -> None:
    """ISO-8601 `--from` (inclusive) and `--to` (exclusive) bound the bars that get decisions."""
    bars = _bars(BTC)
    from_ms = parse_time_ms("2025-06-30T20:00:00Z", option="--from")
    to_ms = parse_time_ms("2025-07-01T04:20:00", option="--to")
    assert (from_ms, to_ms) == (bars[959].start_ms, bars[1059].start_ms)

    outcome = await _replay(sqlite_url, BTC, from_ms=from_ms, to_ms=to_ms)

    rows = (await _dump(sqlite_url, ["decisions"]))["decisions"]
    starts = [row["bar_start_ms"] for row in rows]
    assert starts == [bar.start_ms for bar in bars[959:1059]]
    assert outcome.results.bars == 100


async def test_replay_sleeps_bar_spacing_over_speed_when_speed_given(sqlite_url: str) -> None:
    """`--speed 4` asks the injected sleep for 300 s / 4 between consecutive 5m bars."""
    bars = _bars(BTC)
    delays_s: list[float] = []

    async def fake_sleep(delay_s: float) -> None:
        # Records the pacing the runner asks for; the test itself never waits.
        delays_s.append(delay_s)

    options = ReplayOptions(
        sources=(BTC,),
        speed=4.0,
        from_ms=bars[200].start_ms,
        to_ms=bars[260].start_ms,
        run_name=RUN,
    )

    outcome = await replay(_settings(sqlite_url), options, sleep=fake_sleep)

    assert outcome.results.bars == 60
    assert delays_s == [BAR_MS / 1_000 / 4.0] * 59


@pytest.mark.postgres
async def test_postgres_stores_same_decisions_and_fills_as_sqlite_when_replaying(
    postgres_url: str, sqlite_url: str
) -> None:
    """The same replay into PostgreSQL and SQLite yields the same decisions and fills."""
    await _replay(postgres_url, BTC, ETH)
    await _replay(sqlite_url, BTC, ETH)

    on_postgres = await _dump(postgres_url, ["decisions", "fills"])
    on_sqlite = await _dump(sqlite_url, ["decisions", "fills"])
    assert len(on_sqlite["decisions"]) == 3_000
    assert on_sqlite["fills"], "the seeded random strategy should trade"
    assert on_postgres == on_sqlite


async def test_run_and_report_cover_every_symbol_when_one_series_starts_later(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A symbol absent from the first slice is still recorded with the run and plotted."""
    late_eth = tmp_path / "ETHUSDT_5m.csv"
    with gzip.open(FIXTURES / "ETHUSDT_5m.csv.gz", "rt") as source:
        lines = source.read().splitlines()
    late_eth.write_text("\n".join([lines[0], *lines[301:]]) + "\n")  # starts 300 bars later

    outcome = await _replay(
        sqlite_url, FIXTURES / "BTCUSDT_5m.csv.gz", late_eth, report_dir=tmp_path / "report"
    )

    assert outcome.results.symbols == ("BTCUSDT", "ETHUSDT")
    assert outcome.results.bars == 1_500 + 1_200
    extra = json.loads((tmp_path / "report" / "metrics.json").read_text())["extra"]
    assert extra["symbols"] == ["BTCUSDT", "ETHUSDT"]

"""`trader replay` over a candle file with one corrupt row per rejection reason.

900 real BTCUSDT rows, nine of them corrupted in place and three bad rows inserted, replayed once
per module with the seeded random strategy (so it trades across the gaps after the warm-up).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "BTCUSDT_5m.csv.gz"
TRADER = str(Path(sys.executable).parent / "trader")
#: Environment the CLI must not inherit from the test run: our TRADER_* settings, and asyncio
#: debug mode (CI sets it), whose slow-step warnings would add lines to stderr.
NOT_INHERITED = ("TRADER_", "PYTHONASYNCIODEBUG")
ROWS = 900
HEADER = ["timestamp", "open", "high", "low", "close", "volume"]
TIMESTAMP, OPEN, HIGH, LOW, CLOSE, VOLUME = range(6)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Row = list[str]
Edit = Callable[[Row], Row]


def _with(**columns: str) -> Edit:
    """An edit that sets the named columns."""

    def edit(row: Row) -> Row:
        out = list(row)
        for name, value in columns.items():
            out[HEADER.index(name)] = value
        return out

    return edit


#: Rows replaced in place (index into the 900 data rows) -> (reason, edit). The ones past the
#: 782-bar warm-up corrupt bars while the strategy trades.
REPLACED: dict[int, tuple[str, Edit]] = {
    100: ("non_finite", _with(open="nan")),
    150: ("non_finite", _with(close="inf")),
    200: ("non_positive_price", _with(low="0")),
    250: ("non_positive_price", _with(close="-5")),
    300: ("negative_volume", _with(volume="-1.5")),
    500: ("unparseable_row", _with(volume="abc")),
    810: ("high_below_low", lambda r: [*r[:HIGH], r[LOW], r[HIGH], *r[CLOSE:]]),
    830: ("open_outside_range", lambda r: [r[0], str(float(r[HIGH]) + 10), *r[HIGH:]]),
    850: ("close_outside_range", lambda r: [*r[:CLOSE], str(float(r[LOW]) - 10), r[VOLUME]]),
}


def _conflicting(row: Row) -> Row:
    """The same start with another (still valid) close."""
    other = row[OPEN] if row[OPEN] != row[CLOSE] else row[HIGH]
    assert other != row[CLOSE]
    return [*row[:CLOSE], other, row[VOLUME]]


def _older(rows: list[Row], index: int) -> Edit:
    """A valid row for an earlier start, with a different volume so it is not a repeat."""
    return lambda _: [*rows[index][:VOLUME], str(float(rows[index][VOLUME]) + 1)]


def _expected_reasons() -> Counter[str]:
    reasons = Counter(reason for reason, _ in REPLACED.values())
    reasons.update(["duplicate_conflict", "out_of_order", "duplicate"])
    return reasons


def _start_ms(row: Row) -> int:
    return (datetime.fromisoformat(row[TIMESTAMP]) - _EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True)
class CorruptReplay:
    """The written file's valid rows, the finished process and its database."""

    valid: dict[int, Row]
    process: subprocess.CompletedProcess[str]
    db: Path
    report: Path


def _write_corrupt_csv(path: Path) -> dict[int, Row]:
    """Write the corrupt file; return the valid rows by start (the first row read wins)."""
    with gzip.open(FIXTURE, "rt", encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert header == HEADER
    rows = rows[:ROWS]
    inserted: dict[int, tuple[str, Edit]] = {
        860: ("duplicate_conflict", _conflicting),
        870: ("out_of_order", _older(rows, 865)),
        880: ("duplicate", list),
    }
    out: list[Row] = []
    valid: dict[int, Row] = {}
    for index, row in enumerate(rows):
        if index in REPLACED:
            out.append(REPLACED[index][1](row))
        else:
            out.append(row)
            valid[_start_ms(row)] = row
        if index in inserted:
            out.append(inserted[index][1](row))
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *out])
    return valid


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory: pytest.TempPathFactory) -> CorruptReplay:
    """The corrupt file replayed once by the console script into a fresh database."""
    workdir = tmp_path_factory.mktemp("corrupt")
    source, db, report = workdir / "BTCUSDT_5m.csv", workdir / "trader.db", workdir / "report"
    valid = _write_corrupt_csv(source)
    env = {key: value for key, value in os.environ.items() if not key.startswith(NOT_INHERITED)}
    env["TRADER_DATABASE__URL"] = f"sqlite+aiosqlite:///{db}"
    (workdir / "trader.toml").touch()  # shadows /etc/trader/trader.toml
    process = subprocess.run(
        [
            TRADER,
            "replay",
            str(source),
            "--run",
            "bad",
            "--strategy",
            "random",
            "--report",
            str(report),
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return CorruptReplay(valid=valid, process=process, db=db, report=report)


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_each_reason_counted_when_rows_are_corrupt(corrupt: CorruptReplay) -> None:
    """The replay exits 0, and the summary and report count every reason exactly."""
    assert corrupt.process.returncode == 0, corrupt.process.stderr
    expected = _expected_reasons()
    report = json.loads((corrupt.report / "metrics.json").read_text(encoding="utf-8"))
    assert report["extra"]["rejected_inputs"] == dict(expected)
    # The summary may wrap its line; compare with whitespace collapsed.
    text = " ".join(corrupt.process.stdout.split())
    assert f"rejected inputs {expected.total()} (" in text
    for reason, count in expected.items():
        assert f"{reason} {count}" in text, reason


def test_each_rejection_logged_once_without_traceback_when_rows_are_corrupt(
    corrupt: CorruptReplay,
) -> None:
    """stderr holds one `input_rejected` event per bad row and no Python traceback."""
    events = [json.loads(line) for line in corrupt.process.stderr.splitlines()]
    rejected = Counter(e["reason"] for e in events if e["event"] == "input_rejected")
    assert rejected == _expected_reasons()
    assert "Traceback" not in corrupt.process.stderr


def test_no_corrupt_row_stored_when_rows_are_corrupt(corrupt: CorruptReplay) -> None:
    """`bars` holds exactly the valid rows, with the first row's values where a start repeats."""
    stored = _query(corrupt.db, "SELECT start_ms, open, high, low, close, volume FROM bars")
    expected = {
        start: tuple(float(value) for value in row[OPEN:]) for start, row in corrupt.valid.items()
    }
    assert {start: tuple(values) for start, *values in stored} == expected
    assert len(stored) == ROWS - len(REPLACED)


def test_every_valid_row_decided_once_when_rows_are_corrupt(corrupt: CorruptReplay) -> None:
    """Each valid row got exactly one decision, and the run traded after the warm-up."""
    starts = _query(corrupt.db, "SELECT bar_start_ms FROM decisions ORDER BY bar_start_ms")
    assert [start for (start,) in starts] == sorted(corrupt.valid)
    assert _query(corrupt.db, "SELECT count(*) FROM fills")[0][0] > 0

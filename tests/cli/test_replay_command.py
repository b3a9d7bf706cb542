"""`trader replay` and `trader report` as an operator runs them: the console script, one database.

One replay of the BTCUSDT fixture runs once per module; tests that run further commands against
its database work on their own copy under tmp_path.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "BTCUSDT_5m.csv.gz"
#: What the bad rows `source` adds to the fixture are rejected as, in the summary's words.
REJECTED_LINE = "rejected inputs  3 (duplicate 1, high_below_low 1, unparseable_row 1)"
TRADER = str(Path(sys.executable).parent / "trader")
#: Environment the CLI must not inherit from the test run: our TRADER_* settings, and asyncio
#: debug mode (CI sets it), whose slow-step warnings would add lines to stderr.
NOT_INHERITED = ("TRADER_", "PYTHONASYNCIODEBUG")
RUN = "cli"
#: metrics.json keys the contract documents for `--report` and `trader report`.
DOCUMENTED_METRICS = (
    "total_return",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "max_drawdown_duration_bars",
    "win_rate",
    "profit_factor",
    "trades",
    "turnover",
    "exposure",
    "fees_usdt",
)
SUMMARY_LABELS = (
    "bars processed",
    "rejected inputs",
    "decisions",
    "trades",
    "PnL",
    "fees",
    "Sharpe",
    "max drawdown",
)
TABLES = ("runs", "bars", "decisions", "orders", "fills", "equity", "rewards", "positions")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def trader(*args: str, workdir: Path, db: Path) -> subprocess.CompletedProcess[str]:
    """Run the console script in `workdir` against the SQLite file `db`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(NOT_INHERITED)}
    env["TRADER_DATABASE__URL"] = f"sqlite+aiosqlite:///{db}"
    # An empty ./trader.toml wins the config search, so no /etc/trader/trader.toml leaks in.
    (workdir / "trader.toml").touch()
    return subprocess.run(
        [TRADER, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=120
    )


def replay_args(source: Path, report: Path, *extra: str) -> list[str]:
    """The replay command line under test (the same one every time, but for the report dir)."""
    return ["replay", str(source), "--run", RUN, "--report", str(report), *extra]


def summary(stdout: str) -> str:
    """The summary block, without the lines that name a directory or the run's state."""
    return "\n".join(
        line
        for line in stdout.splitlines()
        if not line.startswith(("report written to", "resumed run"))
        and not line.endswith("is already complete; reporting it")
    )


def dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the run tables, sorted."""
    with sqlite3.connect(db) as conn:
        # Table names come from the TABLES constant, never from input.
        return {
            table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)  # noqa: S608
            for table in TABLES
        }


def copy_db(db: Path, into: Path) -> Path:
    """Copy an SQLite file (and its WAL files, if any) into another directory."""
    for path in db.parent.glob(f"{db.name}*"):
        shutil.copy2(path, into / path.name)
    return into / db.name


@dataclass(frozen=True)
class Replayed:
    """The module's replay: its database, report directory and finished process."""

    source: Path
    db: Path
    report: Path
    process: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture plus three bad rows (crossed, unparseable, a repeat), so rejections show."""
    lines = gzip.decompress(FIXTURE.read_bytes()).decode().splitlines(keepends=True)
    good = lines[10]
    stamp = good.split(",", 1)[0]
    crossed = f"{stamp},100,90,110,100,1\n"
    unparseable = f"{stamp},abc,1,1,1,1\n"
    path = tmp_path_factory.mktemp("source") / FIXTURE.name
    path.write_bytes(
        gzip.compress("".join([*lines[:11], crossed, unparseable, good, *lines[11:]]).encode())
    )
    return path


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory, source: Path) -> Replayed:
    """`trader replay SOURCE --run cli --report DIR` run once into a fresh database."""
    workdir = tmp_path_factory.mktemp("replayed")
    db, report = workdir / "trader.db", workdir / "report"
    process = trader(*replay_args(source, report), workdir=workdir, db=db)
    assert process.returncode == 0, process.stderr
    return Replayed(source=source, db=db, report=report, process=process)


def test_summary_printed_when_replay_finishes(replayed: Replayed) -> None:
    """stdout names the run, gives every summary line, the bar count and the report dir."""
    stdout = replayed.process.stdout
    assert stdout.startswith(f"run {RUN} (ema_cross)")
    lines = stdout.splitlines()
    for label in SUMMARY_LABELS:
        assert any(line.startswith(label) for line in lines), label
    assert "bars processed   1,500 " in stdout
    assert REJECTED_LINE in lines
    assert "decisions        1,500 (" in stdout
    assert lines[-1] == f"report written to {replayed.report}"
    assert "Traceback" not in replayed.process.stderr


def test_metrics_json_holds_documented_keys_when_report_written(replayed: Replayed) -> None:
    """metrics.json parses and carries every documented metric, plus the run's context."""
    payload = json.loads((replayed.report / "metrics.json").read_text(encoding="utf-8"))
    metrics = payload["metrics"]
    missing = [key for key in DOCUMENTED_METRICS if key not in metrics]
    assert not missing
    assert all(isinstance(metrics[key], int | float) for key in DOCUMENTED_METRICS)
    assert metrics["trades"] > 0
    assert payload["extra"]["run_id"] == RUN
    assert payload["extra"]["bars"] == 1_500


def test_plots_written_as_png_when_report_written(replayed: Replayed) -> None:
    """Both plots exist and start with the PNG signature."""
    for name in ("equity_drawdown.png", "price_positions.png"):
        assert (replayed.report / name).read_bytes().startswith(PNG_SIGNATURE), name


def test_report_command_reproduces_replay_metrics_when_run_stored(
    replayed: Replayed, tmp_path: Path
) -> None:
    """`trader report --run NAME --out DIR` gives the replay's metrics and summary again."""
    db = copy_db(replayed.db, tmp_path)
    out = tmp_path / "again"

    process = trader("report", "--run", RUN, "--out", str(out), workdir=tmp_path, db=db)

    assert process.returncode == 0, process.stderr
    original = json.loads((replayed.report / "metrics.json").read_text(encoding="utf-8"))
    reproduced = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert reproduced["metrics"] == original["metrics"]
    assert reproduced["extra"]["rejected_inputs"] == original["extra"]["rejected_inputs"]
    assert original["extra"]["rejected_inputs"] == {
        "duplicate": 1,
        "high_below_low": 1,
        "unparseable_row": 1,
    }
    assert REJECTED_LINE in process.stdout.splitlines()
    assert summary(process.stdout) == summary(replayed.process.stdout)


def test_report_exits_2_when_database_holds_no_runs(tmp_path: Path) -> None:
    """`trader report` on an empty database fails with status 2 and one line."""
    process = trader("report", workdir=tmp_path, db=tmp_path / "empty.db")

    assert process.returncode == 2
    assert process.stderr == "trader: error: the database holds no runs yet\n"


def test_rerun_reports_same_results_without_new_rows_when_run_complete(
    replayed: Replayed, tmp_path: Path
) -> None:
    """The same command on a finished run exits 0, reports the same and adds no row."""
    db = copy_db(replayed.db, tmp_path)
    before = dump(db)
    report = tmp_path / "report"

    process = trader(*replay_args(replayed.source, report), workdir=tmp_path, db=db)

    assert process.returncode == 0, process.stderr
    assert f"run {RUN} is already complete; reporting it" in process.stdout
    assert "resumed run" not in process.stdout
    assert summary(process.stdout) == summary(replayed.process.stdout)
    assert (report / "metrics.json").read_text(encoding="utf-8") == (
        replayed.report / "metrics.json"
    ).read_text(encoding="utf-8")
    assert dump(db) == before


def test_rerun_exits_2_when_strategy_differs(replayed: Replayed, tmp_path: Path) -> None:
    """Resuming a run under another strategy is refused with one line and no writes."""
    db = copy_db(replayed.db, tmp_path)
    before = dump(db)

    process = trader(
        *replay_args(replayed.source, tmp_path / "report", "--strategy", "buy_hold"),
        workdir=tmp_path,
        db=db,
    )

    assert process.returncode == 2
    assert process.stderr.count("\n") == 1
    assert process.stderr.startswith(
        f"trader: error: run '{RUN}' was started with different strategy settings"
    )
    assert dump(db) == before


def test_replay_exits_2_naming_both_files_when_sources_differ_in_interval(tmp_path: Path) -> None:
    """A 5-minute and a 60-minute candle file are refused in one line, before any run exists."""
    hourly = tmp_path / "ETHUSDT_60m.csv"
    hourly.write_text(
        "timestamp,open,high,low,close,volume\n2025-06-27 13:00:00+00:00,2400,2410,2390,2405,10\n",
        encoding="utf-8",
    )
    db = tmp_path / "trader.db"

    process = trader("replay", str(FIXTURE), str(hourly), workdir=tmp_path, db=db)

    assert process.returncode == 2
    assert process.stderr.count("\n") == 1
    assert process.stderr.startswith("trader: error: a replay has one interval")
    assert str(FIXTURE) in process.stderr
    assert str(hourly) in process.stderr

"""`trader db upgrade` and `trader db current` on fresh, foreign, broken and missing databases."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from trader.persistence.migrate import head_revision

TRADER = str(Path(sys.executable).parent / "trader")
#: Environment the CLI must not inherit from the test run: our TRADER_* settings, and asyncio
#: debug mode (CI sets it), whose slow-step warnings would add lines to stderr.
NOT_INHERITED = ("TRADER_", "PYTHONASYNCIODEBUG")


def trader(*args: str, workdir: Path, url: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script in `workdir` against `url`, by default `workdir/trader.db`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(NOT_INHERITED)}
    env["TRADER_DATABASE__URL"] = url or f"sqlite+aiosqlite:///{workdir / 'trader.db'}"
    (workdir / "trader.toml").touch()  # shadows /etc/trader/trader.toml
    return subprocess.run(
        [TRADER, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=60
    )


def error_line(process: subprocess.CompletedProcess[str], status: int) -> str:
    """The one `trader: error:` line of a failed command (log lines aside), with no traceback."""
    assert process.returncode == status, process.stderr
    assert "Traceback" not in process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("trader: error: ")]
    assert len(errors) == 1, process.stderr
    return errors[0]


def test_current_prints_head_revision_when_database_upgraded(tmp_path: Path) -> None:
    """`db upgrade` reports the head revision, and `db current` then shows the database at it."""
    head = head_revision()

    upgraded = trader("db", "upgrade", workdir=tmp_path)
    current = trader("db", "current", workdir=tmp_path)

    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout == f"database at revision {head}\n"
    assert current.returncode == 0, current.stderr
    assert current.stdout == f"current: {head}; head: {head}\n"


def test_current_says_empty_when_database_never_migrated(tmp_path: Path) -> None:
    """`db current` on a new database says it is empty and still names the head revision."""
    sqlite3.connect(tmp_path / "trader.db").close()  # an empty file: a database with no tables
    current = trader("db", "current", workdir=tmp_path)

    assert current.returncode == 0, current.stderr
    assert current.stdout == f"current: none (empty database); head: {head_revision()}\n"


def test_current_fails_without_creating_a_file_when_database_file_is_missing(
    tmp_path: Path,
) -> None:
    """`db current` on a SQLite path that does not exist says so, and leaves no file behind."""
    current = trader("db", "current", workdir=tmp_path)

    assert str(tmp_path / "trader.db") in error_line(current, 2)
    assert not (tmp_path / "trader.db").exists()


def test_current_and_upgrade_report_trader_tables_when_revision_is_not_recorded(
    tmp_path: Path,
) -> None:
    """A database with the trader tables but no alembic_version is reported as such, and
    `db upgrade` refuses it in one line instead of stamping or re-creating it."""
    assert trader("db", "upgrade", workdir=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "trader.db") as conn:
        conn.execute("DROP TABLE alembic_version")

    current = trader("db", "current", workdir=tmp_path)
    upgraded = trader("db", "upgrade", workdir=tmp_path)

    assert current.returncode == 0, current.stderr
    assert current.stdout == (
        "current: none (the trader tables exist, but no revision is recorded); "
        f"head: {head_revision()}\n"
    )
    assert "the trader tables but no recorded schema revision" in error_line(upgraded, 1)
    with sqlite3.connect(tmp_path / "trader.db") as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert "alembic_version" not in tables


def test_upgrade_fails_with_one_line_when_database_holds_foreign_tables(tmp_path: Path) -> None:
    """Another application's SQLite file is neither called empty nor migrated."""
    with sqlite3.connect(tmp_path / "trader.db") as conn:
        conn.execute("CREATE TABLE foo (x INTEGER)")

    current = trader("db", "current", workdir=tmp_path)
    upgraded = trader("db", "upgrade", workdir=tmp_path)

    assert current.returncode == 0, current.stderr
    assert current.stdout.startswith("current: none (no revision recorded; 1 table, not the")
    assert "(foo)" in error_line(upgraded, 1)


def test_upgrade_fails_with_one_line_when_revision_is_unknown(tmp_path: Path) -> None:
    """A database stamped by a newer trader is refused, naming the revision, not a traceback."""
    assert trader("db", "upgrade", workdir=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "trader.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")

    upgraded = trader("db", "upgrade", workdir=tmp_path)

    assert "revision ffffffffffff, which this version of trader does not know" in error_line(
        upgraded, 1
    )


@pytest.mark.postgres
@pytest.mark.parametrize("args", [("db", "current"), ("db", "upgrade"), ("status",)])
def test_commands_fail_with_one_line_when_postgres_database_is_missing(
    tmp_path: Path, postgres_url: str, args: tuple[str, ...]
) -> None:
    """A PostgreSQL database that does not exist is one line naming the driver's error."""
    missing = postgres_url.rsplit("/", 1)[0] + "/trader_no_such_database"

    process = trader(*args, workdir=tmp_path, url=missing)

    line = error_line(process, 1)
    assert line.startswith("trader: error: database error: ")
    assert 'database "trader_no_such_database" does not exist' in line

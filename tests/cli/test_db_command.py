"""`trader db upgrade` and `trader db current` on a fresh SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from trader.persistence.migrate import head_revision

TRADER = str(Path(sys.executable).parent / "trader")
#: Environment the CLI must not inherit from the test run: our TRADER_* settings, and asyncio
#: debug mode (CI sets it), whose slow-step warnings would add lines to stderr.
NOT_INHERITED = ("TRADER_", "PYTHONASYNCIODEBUG")


def trader(*args: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run the console script in `workdir` against `workdir/trader.db`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(NOT_INHERITED)}
    env["TRADER_DATABASE__URL"] = f"sqlite+aiosqlite:///{workdir / 'trader.db'}"
    (workdir / "trader.toml").touch()  # shadows /etc/trader/trader.toml
    return subprocess.run(
        [TRADER, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=60
    )


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
    current = trader("db", "current", workdir=tmp_path)

    assert current.returncode == 0, current.stderr
    assert current.stdout == f"current: none (empty database); head: {head_revision()}\n"

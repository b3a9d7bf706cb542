"""The CLI's failure contract (status 2, one `trader: error:` line) and `--help` everywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from trader.cli import app

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "BTCUSDT_5m.csv.gz"
TRADER = str(Path(sys.executable).parent / "trader")
#: Environment the CLI must not inherit from the test run: our TRADER_* settings, and asyncio
#: debug mode (CI sets it), whose slow-step warnings would add lines to stderr.
NOT_INHERITED = ("TRADER_", "PYTHONASYNCIODEBUG")


def trader(
    *args: str, workdir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the console script in `workdir` on a fresh database there, with extra environment."""
    base = {key: value for key, value in os.environ.items() if not key.startswith(NOT_INHERITED)}
    base["TRADER_DATABASE__URL"] = f"sqlite+aiosqlite:///{workdir / 'trader.db'}"
    (workdir / "trader.toml").touch()  # shadows /etc/trader/trader.toml
    return subprocess.run(
        [TRADER, *args],
        cwd=workdir,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_error_line(process: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Status 2, exactly one stderr line in the contract's shape, naming each fragment."""
    assert process.returncode == 2, process.stderr
    lines = process.stderr.splitlines()
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("trader: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in process.stderr


def test_exits_2_naming_the_key_when_config_file_has_unknown_key(tmp_path: Path) -> None:
    """A config file with an unknown key fails at start-up with the key named."""
    config = tmp_path / "bad.toml"
    config.write_text("[risk]\nmax_drawdown_pct = 0.5\n", encoding="utf-8")

    process = trader("replay", str(FIXTURE), "--config", str(config), workdir=tmp_path)

    assert_one_error_line(process, "risk.max_drawdown_pct", "unknown key")


def test_exits_2_naming_the_key_when_environment_value_is_out_of_range(tmp_path: Path) -> None:
    """TRADER_RISK__MAX_DRAWDOWN=2 is refused as a bad value of risk.max_drawdown."""
    process = trader(
        "replay", str(FIXTURE), workdir=tmp_path, env={"TRADER_RISK__MAX_DRAWDOWN": "2"}
    )

    assert_one_error_line(process, "risk.max_drawdown")


def test_exits_2_naming_the_path_when_source_is_missing(tmp_path: Path) -> None:
    """A source file that does not exist is a usage error naming the path."""
    missing = tmp_path / "BTCUSDT_5m.csv"

    process = trader("replay", str(missing), workdir=tmp_path)

    assert_one_error_line(process, str(missing), "does not exist")


def test_exits_2_naming_the_option_when_from_is_unparseable(tmp_path: Path) -> None:
    """`--from yesterday` is neither epoch ms nor ISO-8601."""
    process = trader("replay", str(FIXTURE), "--from", "yesterday", workdir=tmp_path)

    assert_one_error_line(process, "--from", "'yesterday'")


def test_exits_2_naming_the_option_when_run_name_is_too_long(tmp_path: Path) -> None:
    """`--run` longer than `runs.id` holds is a usage error before anything is stored (SQLite
    would take it; PostgreSQL would fail half-way through creating the run)."""
    process = trader("replay", str(FIXTURE), "--run", "r" * 65, workdir=tmp_path)

    assert_one_error_line(process, "--run", "at most 64")
    assert not (tmp_path / "trader.db").exists()


def test_exits_2_naming_the_setting_when_strategy_is_unknown(tmp_path: Path) -> None:
    """`--strategy nope` is refused as a bad strategy.name."""
    process = trader("replay", str(FIXTURE), "--strategy", "nope", workdir=tmp_path)

    assert_one_error_line(process, "strategy.name")


def test_exits_2_with_one_line_when_option_value_is_invalid(tmp_path: Path) -> None:
    """A value the option parser rejects (`--speed -1`) also gives status 2 and one line."""
    process = trader("replay", str(FIXTURE), "--speed", "-1", workdir=tmp_path)

    assert_one_error_line(process, "--speed")


def test_help_exits_0_when_run_as_module(tmp_path: Path) -> None:
    """`python -m trader --help` prints the command list and exits 0."""
    process = subprocess.run(
        [sys.executable, "-m", "trader", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert process.returncode == 0, process.stderr
    for command in ("replay", "report", "db", "data"):
        assert command in process.stdout


def _command_paths(group: TyperGroup, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, TyperGroup):
            yield from _command_paths(command, (*prefix, name))


def test_help_exits_0_when_asked_of_every_subcommand() -> None:
    """`--help` on every registered command and subcommand exits 0 with its usage."""
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    paths = list(_command_paths(root))
    assert ("replay",) in paths
    assert ("db", "current") in paths
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output, path


def test_run_refuses_live_trading_with_one_line_and_status_2(tmp_path: Path) -> None:
    """`--live` (or broker.mode = live) is refused before anything connects."""
    for args, env in ((("run", "--live"), None), (("run",), {"TRADER_BROKER__MODE": "live"})):
        result = trader(*args, workdir=tmp_path, env=env)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            "trader: error: live trading is not available in this build; run without --live (paper)"
        ]


def test_run_reports_an_unreachable_exchange_as_a_fatal_error(tmp_path: Path) -> None:
    """A refused websocket handshake within the start-up timeout ends with status 1, one line."""
    result = trader(
        "run",
        workdir=tmp_path,
        env={
            "TRADER_FEED__WS_URL": "ws://127.0.0.1:9/v5/public/linear",
            "TRADER_FEED__REST_URL": "http://127.0.0.1:9",
            "TRADER_FEED__STARTUP_TIMEOUT_S": "1",
        },
    )
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1].startswith("trader: error: ")


def test_unwritable_output_path_is_one_line_and_status_1(tmp_path: Path) -> None:
    """An OS error (here a recording into a directory that does not exist) is one
    `trader: error:` line naming the path and status 1, not a traceback."""
    out = tmp_path / "missing" / "frames.jsonl"
    process = trader("data", "to-frames", str(FIXTURE), "--out", str(out), workdir=tmp_path)
    assert process.returncode == 1, process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("trader: error: ")]
    assert len(errors) == 1, process.stderr
    assert str(out) in errors[0]
    assert "Traceback" not in process.stderr

"""`trader report`: metrics and plots for a run stored in the database.

Owns the command's options, choosing the run (the latest when none is named) and the lines
printed. It must not compute metrics or draw (that is `trader.run_report`), and imports the
report code only inside the command, so that other commands do not pay for it at start-up.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trader.cli.common import ConfigOption, load_command_settings, run_command, with_database
from trader.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


def report(
    run: Annotated[
        str | None, typer.Option("--run", help="Run id (default: the latest run).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write metrics JSON and plots here.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Metrics and plots for a stored run."""
    from trader.run_report import summary_text

    settings = load_command_settings(config)

    async def go(db: AsyncEngine) -> Any:
        from trader.persistence import repository
        from trader.run_report import load_run_results, write_run_report

        run_id = run or await repository.latest_run_id(db)
        if run_id is None:
            raise ConfigError("the database holds no runs yet", key="--run")
        results = await load_run_results(db, run_id)
        paths = await write_run_report(db, results, out) if out else None
        return results, paths

    results, paths = run_command(lambda: with_database(settings, go))
    typer.echo(summary_text(results, color=sys.stdout.isatty()))
    if paths is not None:
        typer.echo(f"report written to {paths.metrics_json.parent}")

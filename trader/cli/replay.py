"""`trader replay`: recorded frames or candle files through the trading engine.

Owns the command's options, turning them into `ReplayOptions`, the progress display on a
terminal, and the lines printed about the outcome. It must not replay anything itself (that is
`trader.replay.runner`) and imports the engine only inside the command, so that other commands
do not pay for it at start-up.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from trader.cli.common import (
    ConfigOption,
    fail,
    load_command_settings,
    parse_time_ms,
    run_command,
)
from trader.config import Settings


def replay(
    sources: Annotated[
        list[Path], typer.Argument(help="Recordings (.jsonl[.gz]) or candle files.")
    ],
    config: ConfigOption = None,
    speed: Annotated[
        float, typer.Option(min=0.0, help="0 = as fast as possible, N = N x real time.")
    ] = 0.0,
    from_: Annotated[
        str | None, typer.Option("--from", help="First bar start (ISO-8601 or ms).")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="Stop before this bar start.")] = None,
    run: Annotated[
        str | None, typer.Option("--run", help="Run name; the same name resumes.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write metrics JSON and plots here.")
    ] = None,
    strategy: Annotated[str | None, typer.Option(help="Override strategy.name.")] = None,
    symbol: Annotated[
        str | None, typer.Option(help="Symbol of candle files not named SYMBOL_5m.csv.")
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="Interval of such files (Bybit code, e.g. 5).")
    ] = None,
) -> None:
    """Replay recorded frames or candle files through the trading engine."""
    from trader.replay.runner import ReplayOptions
    from trader.replay.runner import replay as run_replay
    from trader.run_report import summary_text

    for path in sources:
        if not path.exists():
            fail(f"source {path} does not exist", 2)
    settings = load_command_settings(config, strategy={"name": strategy} if strategy else None)
    options = ReplayOptions(
        sources=tuple(sources),
        speed=speed,
        from_ms=parse_time_ms(from_, option="--from"),
        to_ms=parse_time_ms(to, option="--to"),
        run_name=run,
        report_dir=report,
        symbol=symbol,
        interval=interval,
    )
    outcome = run_command(lambda: _replay_with_progress(run_replay, settings, options))
    if outcome.already_complete:
        typer.echo(f"run {outcome.results.run_id} is already complete; reporting it")
    elif outcome.resumed:
        typer.echo(f"resumed run {outcome.results.run_id} after its last committed bar")
    typer.echo(summary_text(outcome.results, color=sys.stdout.isatty()))
    if outcome.report is not None:
        typer.echo(f"report written to {outcome.report.metrics_json.parent}")


async def _replay_with_progress(run_replay: Any, settings: Settings, options: Any) -> Any:
    """Run the replay with a progress display when stderr is a terminal."""
    if not sys.stderr.isatty():
        return await run_replay(settings, options)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True
    ) as progress:
        task = progress.add_task("replaying", total=None)

        def on_slice(count: int) -> None:
            if count % 500 == 0:
                progress.update(task, description=f"replaying: {count:,} slices")

        return await run_replay(settings, options, on_slice=on_slice)

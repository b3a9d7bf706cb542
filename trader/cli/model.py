"""`trader train` and `trader evaluate`: the HRM and flat models, trained and evaluated.

Owns the commands' options (checking `--preset`, splitting symbol lists) and turning them into
`TrainOptions` and `EvaluateOptions`. It must not train or evaluate anything (that is
`trader._evaluate_train` and `trader.evaluate`), and imports them only inside the commands:
they pull in torch, which would make every other command slow to start.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from trader.cli.common import ConfigOption, fail, load_command_settings, run_command


def train(
    files: Annotated[list[Path], typer.Argument(help="Candle files (CSV, CSV.GZ or Parquet).")],
    preset: Annotated[str, typer.Option(help="Model size: small or base.")] = "small",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="HRM checkpoint (default hrm-PRESET.pt); the flat one goes beside it."
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Optimiser steps per model (default by preset).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of weights and sampling.")] = 0,
    config: ConfigOption = None,
) -> None:
    """Train the HRM and the flat baseline on the first 70% of each series (validating on the
    last 15% of that), then calibrate the forecast rule and fine-tune the policy offline."""
    from trader._evaluate_train import TrainOptions, describe, train_files

    size = _preset(preset)
    settings = load_command_settings(config)
    options = TrainOptions(
        files=tuple(files),
        out=out or Path(f"hrm-{size}.pt"),
        preset=size,
        steps=steps,
        seed=seed,
        progress=sys.stderr.isatty(),
    )

    # Training is synchronous; wrapping it in a coroutine gives it `run_command`'s failure
    # contract (one line and an exit status) like every other command.
    async def go() -> Any:
        return train_files(settings, options)

    typer.echo(describe(run_command(go)))


def evaluate(
    files: Annotated[list[Path], typer.Argument(help="Candle files (CSV, CSV.GZ or Parquet).")],
    out: Annotated[Path, typer.Option("--out", help="Directory for report.json, .md, plots.")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="HRM checkpoint: evaluated with --no-train, else written to."),
    ] = None,
    flat_checkpoint: Annotated[
        Path | None, typer.Option(help="Flat checkpoint (default: beside --checkpoint, shipped).")
    ] = None,
    no_train: Annotated[
        bool, typer.Option("--no-train", help="Evaluate the given (default: shipped) checkpoints.")
    ] = False,
    preset: Annotated[str, typer.Option(help="Model size when training: small or base.")] = (
        "small"
    ),
    steps: Annotated[int | None, typer.Option(min=1, help="Training steps per model.")] = None,
    folds: Annotated[int, typer.Option(min=1, max=20, help="Walk-forward windows.")] = 3,
    max_bars: Annotated[
        int | None, typer.Option(min=1, help="Cap of held-out bars per series (all when unset).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Replay processes.")] = 2,
    ablations: Annotated[
        bool, typer.Option("--ablations/--no-ablations", help="HRM without ACT, other N x T.")
    ] = True,
    unseen: Annotated[
        str, typer.Option(help="Symbols never trained on, reported apart.")
    ] = "ADAUSDT,DOGEUSDT,DOTUSDT",
    train_symbols: Annotated[
        str, typer.Option(help="Symbols trained on when training.")
    ] = "BTCUSDT,ETHUSDT,SOLUSDT",
    notes: Annotated[
        Path | None, typer.Option(help="Markdown appended to report.md as Notes.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Walk-forward evaluation on the held-out last 30% of every series: hrm, flat, ema_cross and
    buy_hold through the replay engine after fees, with prediction metrics and ablations."""
    import shlex

    from trader.evaluate import EvaluateOptions
    from trader.evaluate import evaluate as run_evaluate

    size = _preset(preset)
    settings = load_command_settings(config)
    options = EvaluateOptions(
        files=tuple(files),
        out_dir=out,
        checkpoint=checkpoint,
        flat_checkpoint=flat_checkpoint,
        train=not no_train,
        preset=size,
        steps=steps,
        unseen=_symbols(unseen),
        train_symbols=_symbols(train_symbols),
        folds=folds,
        max_bars=max_bars,
        workers=workers,
        ablations=ablations,
        command=shlex.join(["trader", *sys.argv[1:]]),
        notes=notes,
    )
    report = run_command(lambda: run_evaluate(settings, options))
    typer.echo(f"report written to {out / 'report.json'} ({len(report.results)} replays)")


def _preset(value: str) -> Literal["small", "base"]:
    """`--preset` checked (exit status 2 otherwise) and narrowed to the model presets."""
    if value == "small":
        return "small"
    if value == "base":
        return "base"
    fail(f"--preset must be small or base, got {value!r}", 2)


def _symbols(text: str) -> tuple[str, ...]:
    """A comma-separated symbol list, upper-cased, blanks dropped."""
    return tuple(symbol.strip().upper() for symbol in text.split(",") if symbol.strip())

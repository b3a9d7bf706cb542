"""The `trader` command line (typer).

Owns argument parsing, loading the settings once, configuring logging once, calling one
function per command, and mapping failures to exit codes: 0 success, 2 usage or configuration
error (one line on stderr), 1 any other fatal error. It must not hold logic of its own.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import structlog
import typer

from trader.config import Settings, load_settings, systemd_notify_env
from trader.domain import Bar
from trader.errors import ConfigError, TraderError
from trader.logs import configure_logging

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from trader.notify import SystemdNotifier
    from trader.recorder import RecordSummary

app = typer.Typer(
    name="trader",
    help="Hierarchical-RL trading daemon for Bybit v5: replay, paper trading, reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations (Alembic).", no_args_is_help=True)
data_app = typer.Typer(help="Data conversion tools.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(data_app, name="data")

T = TypeVar("T")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML config (default ./trader.toml, /etc/trader/trader.toml)."
    ),
]


def _fail(message: str, status: int) -> None:
    sys.stderr.write(f"trader: error: {message}\n")
    raise typer.Exit(status)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    settings = load_settings(config, **{k: v for k, v in overrides.items() if v})
    configure_logging(settings.logging.level, settings.logging.format)
    return settings


def _run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one command's coroutine, translating failures into one line and an exit status."""
    try:
        return asyncio.run(factory())
    except ConfigError as exc:
        _fail(str(exc), 2)
    except TraderError as exc:
        structlog.get_logger().error("command_failed", error=str(exc), kind=type(exc).__name__)
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    raise AssertionError("unreachable")  # pragma: no cover - _fail always raises


async def _with_database(
    settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]], *, migrate: bool = True
) -> T:
    """Run `work` on the configured database (migrated first unless told otherwise), then close."""
    from trader.persistence.database import make_engine

    db = make_engine(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
    try:
        if migrate:
            from trader.persistence.migrate import ensure_schema

            await ensure_schema(db)
        return await work(db)
    finally:
        await db.dispose()


def parse_time_ms(value: str | None, *, option: str) -> int | None:
    """Parse `--from/--to`: epoch milliseconds or ISO-8601 (UTC when no zone is given)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{option} {value!r} is neither epoch milliseconds nor ISO-8601", key=option
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@app.command()
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
            _fail(f"source {path} does not exist", 2)
    settings = _settings(config, strategy={"name": strategy} if strategy else None)
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
    outcome = _run(lambda: _replay_with_progress(run_replay, settings, options))
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


@app.command()
def record(
    out: Annotated[Path, typer.Option("--out", help="Directory for the recording files.")],
    symbols: Annotated[
        str | None, typer.Option(help="Override feed.symbols, e.g. BTCUSDT,ETHUSDT.")
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="Override feed.interval (Bybit code, e.g. 5).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Record the live kline stream to rotating JSONL.gz files until SIGTERM/SIGINT."""
    feed = {key: value for key, value in (("symbols", symbols), ("interval", interval)) if value}
    settings = _settings(config, feed=feed)
    summary = _run(lambda: _record_until_signalled(settings, out))
    typer.echo(
        f"recorded {summary.frames} frames ({summary.confirmed_bars} confirmed bars, "
        f"{summary.reconnects} reconnects) in {len(summary.files)} files under {out}"
    )


async def _record_until_signalled(settings: Settings, out: Path) -> RecordSummary:
    """Run `trader.recorder.record` with SIGTERM and SIGINT setting its stop event."""
    from trader.recorder import record as run_record

    return await _until_signalled(
        lambda stop, notifier: run_record(settings, out, stop=stop, notifier=notifier)
    )


async def _until_signalled(
    work: Callable[[asyncio.Event, SystemdNotifier], Coroutine[Any, Any, T]],
) -> T:
    """Run a long-lived command with SIGTERM/SIGINT setting its stop event and systemd told."""
    import signal

    from trader.notify import SystemdNotifier

    notify_socket, watchdog_usec = systemd_notify_env()
    notifier = SystemdNotifier(notify_socket, watchdog_usec=watchdog_usec)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        return await work(stop, notifier)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


@app.command()
def run(
    symbols: Annotated[
        str | None, typer.Option(help="Override feed.symbols, e.g. BTCUSDT,ETHUSDT.")
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="Override feed.interval (Bybit code, e.g. 5).")
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option("--record", help="Also record frames and REST bars here (replayable)."),
    ] = None,
    new_run: Annotated[
        bool, typer.Option("--new-run", help="Start a new paper account instead of continuing.")
    ] = False,
    live: Annotated[
        bool, typer.Option("--live", help="Trade with real money (not available in this build).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """The paper-trading daemon: Bybit klines -> strategy -> risk -> paper broker, until SIGTERM."""
    from trader.daemon import DaemonOptions, run_daemon

    feed = {key: value for key, value in (("symbols", symbols), ("interval", interval)) if value}
    settings = _settings(config, feed=feed)
    if live or settings.broker.mode == "live":
        _fail("live trading is not available in this build; run without --live (paper)", 2)
    options = DaemonOptions(record_dir=record, new_run=new_run)
    summary = _run(
        lambda: _until_signalled(
            lambda stop, notifier: run_daemon(settings, options, stop=stop, notifier=notifier)
        )
    )
    counters = summary.counters
    typer.echo(
        f"run {summary.run_id} stopped: {counters.slices} slices ({counters.ws_bars} bars from "
        f"the stream, {counters.rest_bars} over REST), {summary.reconnects} reconnects"
    )


@app.command()
def kill(
    flatten: Annotated[
        bool, typer.Option("--flatten/--no-flatten", help="Also close every position (default).")
    ] = True,
    reason: Annotated[str, typer.Option(help="Why; stored and shown by `trader status`.")] = (
        "operator kill"
    ),
    config: ConfigOption = None,
) -> None:
    """Stop opening positions at once (and flatten); lasts across restarts until `resume`."""
    from trader.domain import ControlCommand

    event_id, sent = _run(lambda: _control(config, ControlCommand.KILL, reason, flatten=flatten))
    typer.echo(
        f"kill #{event_id} stored{' and sent over MQTT' if sent else ''}; a running daemon "
        "applies it within a second, otherwise the next start applies it before trading"
    )


@app.command()
def resume(
    reason: Annotated[str, typer.Option(help="Why; stored and shown by `trader status`.")] = (
        "operator resume"
    ),
    config: ConfigOption = None,
) -> None:
    """Lift a kill (or a drawdown halt): trading reopens."""
    from trader.domain import ControlCommand

    event_id, sent = _run(lambda: _control(config, ControlCommand.RESUME, reason, flatten=False))
    typer.echo(
        f"resume #{event_id} stored{' and sent over MQTT' if sent else ''}; a running daemon "
        "applies it within a second"
    )


async def _control(
    config: Path | None, command: Any, reason: str, *, flatten: bool
) -> tuple[int, bool]:
    """Store the command (the path that always works), then also send it over MQTT if set."""
    from trader.persistence._control_sqlite import request_fast

    settings = _settings(config)
    event_id = request_fast(
        settings.database.url,
        command.value,
        reason,
        source="cli",
        flatten=flatten,
        busy_timeout_ms=settings.database.busy_timeout_ms,
    )
    if event_id is None:
        event_id = await _control_slow(settings, command, reason, flatten=flatten)
    sent = False
    if settings.mqtt.url is not None:
        from trader.bus.sender import send_command

        sent = await send_command(settings.mqtt, command, reason, flatten=flatten)
    return event_id, sent


async def _control_slow(settings: Settings, command: Any, reason: str, *, flatten: bool) -> int:
    """The general path: any database, migrated first when it is empty."""
    from sqlalchemy.exc import DBAPIError

    from trader.persistence import control

    async def store(db: AsyncEngine) -> int:
        try:
            return await control.request(db, command, reason, source="cli", flatten=flatten)
        except DBAPIError:
            # No table (a fresh database) or an old schema: only now pay for Alembic, which
            # migrates the empty database or refuses the old one with the line to run. Not
            # checking first keeps a kill fast (the check costs a third of the command's time).
            from trader.persistence.migrate import ensure_schema

            await ensure_schema(db)
            return await control.request(db, command, reason, source="cli", flatten=flatten)

    return await _with_database(settings, store, migrate=False)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    run: Annotated[
        str | None, typer.Option("--run", help="Run id (default: the latest paper run).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Trading state, kill switch, positions, equity, drawdown, last bars, model, feed health."""
    import json

    from trader.status import StatusReport, gather_status, render_text

    settings = _settings(config)

    async def go(db: AsyncEngine) -> StatusReport:
        return await gather_status(db, settings, run_id=run)

    report = _run(lambda: _with_database(settings, go))
    typer.echo(json.dumps(report.as_json(), indent=2) if as_json else render_text(report))


@app.command()
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

    settings = _settings(config)

    async def go(db: AsyncEngine) -> Any:
        from trader.persistence import repository
        from trader.run_report import load_run_results, write_run_report

        run_id = run or await repository.latest_run_id(db)
        if run_id is None:
            raise ConfigError("the database holds no runs yet", key="--run")
        results = await load_run_results(db, run_id)
        paths = await write_run_report(db, results, out) if out else None
        return results, paths

    results, paths = _run(lambda: _with_database(settings, go))
    typer.echo(summary_text(results, color=sys.stdout.isatty()))
    if paths is not None:
        typer.echo(f"report written to {paths.metrics_json.parent}")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Migrate the database to the newest schema."""
    settings = _settings(config)

    from trader.persistence.migrate import upgrade

    typer.echo(
        f"database at revision {_run(lambda: _with_database(settings, upgrade, migrate=False))}"
    )


@db_app.command("current")
def db_current(config: ConfigOption = None) -> None:
    """Print the database's schema revision (and the newest one the code knows)."""
    settings = _settings(config)

    from trader.persistence.migrate import current, head_revision

    revision = _run(lambda: _with_database(settings, current, migrate=False))
    typer.echo(f"current: {revision or 'none (empty database)'}; head: {head_revision()}")


@data_app.command("to-frames")
def data_to_frames(
    source: Annotated[Path, typer.Argument(help="Candle file (CSV, CSV.GZ or Parquet).")],
    out: Annotated[Path, typer.Option("--out", help="Recording to write (.jsonl or .jsonl.gz).")],
    symbol: Annotated[
        str | None, typer.Option(help="Symbol if the file name does not say.")
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="Interval if the file name does not say.")
    ] = None,
    updates_per_bar: Annotated[
        int, typer.Option(min=0, max=20, help="Unconfirmed pushes per bar.")
    ] = 2,
    seed: Annotated[int, typer.Option(help="Seed for the unconfirmed updates.")] = 0,
) -> None:
    """Turn candle files into Bybit v5 kline frames in the recording format."""
    configure_logging("WARNING", "auto")
    from trader.replay.candles import iter_candles
    from trader.replay.rejections import Rejection, RejectionCounter
    from trader.replay.to_frames import candles_to_frames, write_recording

    if not source.exists():
        _fail(f"source {source} does not exist", 2)
    rejections = RejectionCounter()

    def valid_bars() -> Iterator[Bar]:
        for item in iter_candles(source, symbol=symbol, interval=interval):
            if isinstance(item, Rejection):
                rejections.record(item)
            else:
                yield item

    try:
        count = write_recording(
            candles_to_frames(valid_bars(), updates_per_bar=updates_per_bar, seed=seed), out
        )
    except ConfigError as exc:
        _fail(str(exc), 2)
    if rejections.total:
        typer.echo(f"skipped {rejections.total} rejected rows: {rejections.as_dict()}", err=True)
    typer.echo(f"wrote {count} lines to {out}")


#: typer (0.29+) vendors click and exports only some of its exceptions; BadParameter's base is
#: click's UsageError, from which every argument-parsing failure derives.
_USAGE_ERROR: type[Exception] = typer.BadParameter.__mro__[1]


def main() -> None:
    """Console-script entry point: every failure ends as one stderr line and an exit status."""
    try:
        status = app(standalone_mode=False)
    except ConfigError as exc:  # raised while loading settings, before a command's coroutine
        sys.stderr.write(f"trader: error: {exc}\n")
        sys.exit(2)
    except _USAGE_ERROR as exc:
        message = exc.format_message()  # type: ignore[attr-defined]
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `trader`: the help is the answer
            sys.stderr.write(f"{message}\n")
        else:
            sys.stderr.write(f"trader: error: {' '.join(message.split())}\n")
        sys.exit(2)
    except typer.Abort:
        sys.stderr.write("trader: error: interrupted\n")
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)


@app.command()
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

    if preset not in ("small", "base"):
        _fail(f"--preset must be small or base, got {preset!r}", 2)
    settings = _settings(config)
    options = TrainOptions(
        files=tuple(files),
        out=out or Path(f"hrm-{preset}.pt"),
        preset="small" if preset == "small" else "base",
        steps=steps,
        seed=seed,
        progress=sys.stderr.isatty(),
    )

    async def go() -> Any:
        return train_files(settings, options)

    typer.echo(describe(_run(go)))


@app.command()
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

    if preset not in ("small", "base"):
        _fail(f"--preset must be small or base, got {preset!r}", 2)
    settings = _settings(config)
    options = EvaluateOptions(
        files=tuple(files),
        out_dir=out,
        checkpoint=checkpoint,
        flat_checkpoint=flat_checkpoint,
        train=not no_train,
        preset="small" if preset == "small" else "base",
        steps=steps,
        unseen=tuple(s.strip().upper() for s in unseen.split(",") if s.strip()),
        train_symbols=tuple(s.strip().upper() for s in train_symbols.split(",") if s.strip()),
        folds=folds,
        max_bars=max_bars,
        workers=workers,
        ablations=ablations,
        command=shlex.join(["trader", *sys.argv[1:]]),
        notes=notes,
    )
    report = _run(lambda: run_evaluate(settings, options))
    typer.echo(f"report written to {out / 'report.json'} ({len(report.results)} replays)")

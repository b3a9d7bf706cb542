"""`trader record` and `trader run`: the long-lived commands on the live Bybit stream.

Owns their options, running each until SIGTERM/SIGINT with systemd told, and the summary line
printed when one stops. It must not record or trade itself (that is `trader.recorder` and
`trader.daemon`), and imports those only inside the commands, so that other commands do not
pay for them at start-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trader.cli.common import ConfigOption, T, fail, load_command_settings, run_command
from trader.config import Settings, systemd_notify_env

if TYPE_CHECKING:
    from trader.notify import SystemdNotifier
    from trader.recorder import RecordSummary

#: `record` and `run` both take the feed's symbols and interval from the command line.
SymbolsOption = Annotated[
    str | None, typer.Option(help="Override feed.symbols, e.g. BTCUSDT,ETHUSDT.")
]
IntervalOption = Annotated[
    str | None, typer.Option(help="Override feed.interval (Bybit code, e.g. 5).")
]


def _feed_overrides(symbols: str | None, interval: str | None) -> dict[str, str]:
    """The `[feed]` keys given on the command line."""
    return {key: value for key, value in (("symbols", symbols), ("interval", interval)) if value}


def record(
    out: Annotated[Path, typer.Option("--out", help="Directory for the recording files.")],
    symbols: SymbolsOption = None,
    interval: IntervalOption = None,
    config: ConfigOption = None,
) -> None:
    """Record the live kline stream to rotating JSONL.gz files until SIGTERM/SIGINT."""
    settings = load_command_settings(config, feed=_feed_overrides(symbols, interval))
    summary = run_command(lambda: _record_until_signalled(settings, out))
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


def run(
    symbols: SymbolsOption = None,
    interval: IntervalOption = None,
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

    settings = load_command_settings(config, feed=_feed_overrides(symbols, interval))
    if live or settings.broker.mode == "live":
        fail("live trading is not available in this build; run without --live (paper)", 2)
    options = DaemonOptions(record_dir=record, new_run=new_run)
    summary = run_command(
        lambda: _until_signalled(
            lambda stop, notifier: run_daemon(settings, options, stop=stop, notifier=notifier)
        )
    )
    counters = summary.counters
    typer.echo(
        f"run {summary.run_id} stopped: {counters.slices} slices ({counters.ws_bars} bars from "
        f"the stream, {counters.rest_bars} over REST), {summary.reconnects} reconnects"
    )

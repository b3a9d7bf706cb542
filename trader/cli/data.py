"""`trader data`: data conversion tools, as one sub-command group.

Owns the group (`app`, added to the root as `data`) and its command `to-frames`, which turns
candle files into Bybit v5 kline frames in the recording format, counting rejected rows. It must
not parse candles or build frames itself (that is `trader.replay`), and imports that code only
inside the command, so that other commands do not pay for it at start-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trader.cli.common import fail
from trader.logs import configure_logging

if TYPE_CHECKING:
    from trader.domain import Bar

app = typer.Typer(help="Data conversion tools.", no_args_is_help=True)


@app.command("to-frames")
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
    # No settings are loaded (the command needs none), so logging is configured here.
    configure_logging("WARNING", "auto")
    from trader.replay.candles import iter_candles
    from trader.replay.rejections import Rejection, RejectionCounter
    from trader.replay.to_frames import candles_to_frames, write_recording

    if not source.exists():
        fail(f"source {source} does not exist", 2)
    rejections = RejectionCounter()

    def valid_bars() -> Iterator[Bar]:
        for item in iter_candles(source, symbol=symbol, interval=interval):
            if isinstance(item, Rejection):
                rejections.record(item)
            else:
                yield item

    # A ConfigError while writing ends as one stderr line and exit status 2 in `entry.main`.
    count = write_recording(
        candles_to_frames(valid_bars(), updates_per_bar=updates_per_bar, seed=seed), out
    )
    if rejections.total:
        typer.echo(f"skipped {rejections.total} rejected rows: {rejections.as_dict()}", err=True)
    typer.echo(f"wrote {count} lines to {out}")

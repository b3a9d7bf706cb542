"""`trader kill`, `trader resume` and `trader status`: the operator's controls and view.

Owns storing a kill or resume (the SQLite fast path first, the general path where that does not
apply) and also sending it over MQTT when configured, and printing the trading state. It must not
decide what a kill does (the daemon and the risk layer do) and must stay cheap to start:
`trader kill` is what an operator types when something is wrong, so SQLAlchemy and Alembic are
imported only when the fast path cannot store the command, the MQTT client only when MQTT is
configured.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trader.cli.common import ConfigOption, load_command_settings, run_command, with_database
from trader.config import Settings
from trader.domain import ControlCommand

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


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
    stored = _store_and_send(config, ControlCommand.KILL, reason, flatten=flatten)
    typer.echo(
        f"{stored}; a running daemon applies it within a second, otherwise the next start "
        "applies it before trading"
    )


def resume(
    reason: Annotated[str, typer.Option(help="Why; stored and shown by `trader status`.")] = (
        "operator resume"
    ),
    config: ConfigOption = None,
) -> None:
    """Lift a kill (or a drawdown halt): trading reopens."""
    stored = _store_and_send(config, ControlCommand.RESUME, reason, flatten=False)
    typer.echo(f"{stored}; a running daemon applies it within a second")


def _store_and_send(
    config: Path | None, command: ControlCommand, reason: str, *, flatten: bool
) -> str:
    """Store (and send) one control command; returns e.g. "kill #7 stored and sent over MQTT"."""
    event_id, sent = run_command(lambda: _control(config, command, reason, flatten=flatten))
    return f"{command.value} #{event_id} stored{' and sent over MQTT' if sent else ''}"


async def _control(
    config: Path | None, command: ControlCommand, reason: str, *, flatten: bool
) -> tuple[int, bool]:
    """Store the command (the path that always works), then also send it over MQTT if set."""
    from trader.persistence._control_sqlite import request_fast

    settings = load_command_settings(config)
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

        # The message names the stored row: the daemon wakes for it rather than storing a twin.
        sent = await send_command(
            settings.mqtt, command, reason, flatten=flatten, event_id=event_id
        )
    return event_id, sent


async def _control_slow(
    settings: Settings, command: ControlCommand, reason: str, *, flatten: bool
) -> int:
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

    return await with_database(settings, store, migrate=False)


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

    settings = load_command_settings(config)

    async def go(db: AsyncEngine) -> StatusReport:
        return await gather_status(db, settings, run_id=run)

    report = run_command(lambda: with_database(settings, go))
    typer.echo(json.dumps(report.as_json(), indent=2) if as_json else render_text(report))

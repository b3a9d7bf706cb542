"""`trader db`: the database migration commands (Alembic), as one sub-command group.

Owns the group (`app`, added to the root as `db`) and its commands, `upgrade` and `current`.
It must not hold migration logic (that is `trader.persistence.migrate`), imported only inside
the commands because Alembic is slow to import.
"""

from __future__ import annotations

import typer

from trader.cli.common import ConfigOption, load_command_settings, run_command, with_database

app = typer.Typer(help="Database migrations (Alembic).", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Migrate the database to the newest schema."""
    settings = load_command_settings(config)

    from trader.persistence.migrate import upgrade

    revision = run_command(lambda: with_database(settings, upgrade, migrate=False))
    typer.echo(f"database at revision {revision}")


@app.command("current")
def db_current(config: ConfigOption = None) -> None:
    """Print the database's schema revision (and the newest one the code knows)."""
    settings = load_command_settings(config)

    from trader.persistence.migrate import current, head_revision

    revision = run_command(lambda: with_database(settings, current, migrate=False))
    typer.echo(f"current: {revision or 'none (empty database)'}; head: {head_revision()}")

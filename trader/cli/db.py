"""`trader db`: the database migration commands (Alembic), as one sub-command group.

Owns the group (`app`, added to the root as `db`) and its commands, `upgrade` and `current`.
It must not hold migration logic (that is `trader.persistence.migrate`), imported only inside
the commands because Alembic is slow to import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from trader.cli.common import ConfigOption, load_command_settings, run_command, with_database
from trader.errors import ConfigError

if TYPE_CHECKING:
    from trader.persistence.migrate import SchemaState

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
    missing = _missing_sqlite_file(settings.database.url)
    if missing is not None:
        # Connecting would create an empty file there, and report it as an empty database.
        raise ConfigError(
            f"database.url names {missing}, which does not exist; `trader db upgrade` creates it",
            key="database.url",
        )

    from trader.persistence.migrate import head_revision, schema_state

    state = run_command(lambda: with_database(settings, schema_state, migrate=False))
    typer.echo(f"current: {_describe(state)}; head: {head_revision()}")


def _describe(state: SchemaState) -> str:
    if state.revision is not None:
        return state.revision
    if not state.tables:
        return "none (empty database)"
    if state.has_trader_tables:
        return "none (the trader tables exist, but no revision is recorded)"
    tables = f"{len(state.tables)} table" + ("s" if len(state.tables) > 1 else "")
    return f"none (no revision recorded; {tables}, not the trader schema)"


def _missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL when it does not exist yet (None for other URLs)."""
    from sqlalchemy.engine import make_url

    from trader.persistence.database import is_file_sqlite_url

    parsed = make_url(url)
    if not is_file_sqlite_url(parsed) or parsed.query.get("uri"):
        return None  # not a file, or a `file:...` URI that names its file its own way
    path = Path(str(parsed.database))
    return None if path.exists() else path

"""The root `trader` app: which commands it has, in which order, and the console-script entry.

Owns building the Typer app, registering every command module's commands on it (in the order
`trader --help` lists them) and the `db` and `data` groups, and `main`, which maps every
failure that reaches it (settings, argument parsing, Ctrl-C, an OS or database error from a
command) to one stderr line and an exit status. It must not hold a command itself, and must
import only the command modules, which keep their heavy imports inside the commands.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import structlog
import typer

from trader.cli import control, data, db, model, replay, report, run
from trader.errors import ConfigError, first_line

app = typer.Typer(
    name="trader",
    help="Hierarchical-RL trading daemon for Bybit v5: replay, paper trading, reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(data.app, name="data")

# Registration order is the order `trader --help` lists the commands (the groups come after).
app.command()(replay.replay)
app.command()(run.record)
app.command()(run.run)
app.command()(control.kill)
app.command()(control.resume)
app.command()(control.status)
app.command()(report.report)
app.command()(model.train)
app.command()(model.evaluate)

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
    except OSError as exc:  # a path that cannot be read or written, a full disk: one line
        _failed(exc, str(exc))
    except _database_errors() as exc:  # a database that is missing, unreachable or foreign
        _failed(exc, f"database error: {first_line(exc, limit=1_000)}")
    sys.exit(status if isinstance(status, int) else 0)


def _database_errors() -> tuple[type[Exception], ...]:
    """SQLAlchemy's and Alembic's error bases.

    Called only while an exception is being matched (Python evaluates an `except` clause's
    expression lazily), so commands that never fail do not pay for importing them here.
    """
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    return (SQLAlchemyError, CommandError, RevisionError)


def _failed(exc: Exception, message: str) -> NoReturn:
    """One `trader: error:` line for the operator, a `command_failed` event, status 1."""
    structlog.get_logger().error("command_failed", error=str(exc), kind=type(exc).__name__)
    sys.stderr.write(f"trader: error: {message}\n")
    sys.exit(1)

"""What every `trader` command shares: settings loading, the failure contract, the database.

Owns the one `trader: error:` line and its exit status (`fail`), loading the settings and
configuring logging once per command (`load_command_settings`), running a command's coroutine
with failures mapped to exit statuses (`run_command`), opening and closing the configured
database around a piece of work (`with_database`), the `--config` option and the `--from/--to`
time parser. It must not hold any command, and must not import heavy modules at import time:
every command, `trader kill` included, pays for this module before it starts.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import structlog
import typer

from trader.config import Settings, load_settings
from trader.errors import ConfigError, TraderError
from trader.logs import configure_logging

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML config (default ./trader.toml, /etc/trader/trader.toml)."
    ),
]


def fail(message: str, status: int) -> NoReturn:
    """End the command with one `trader: error:` line on stderr and the given exit status."""
    sys.stderr.write(f"trader: error: {message}\n")
    raise typer.Exit(status)


def load_command_settings(config: Path | None, **overrides: Any) -> Settings:
    """Load the settings (empty overrides dropped) and configure logging from them."""
    settings = load_settings(config, **{k: v for k, v in overrides.items() if v})
    configure_logging(settings.logging.level, settings.logging.format)
    return settings


def run_command(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one command's coroutine, translating failures into one line and an exit status."""
    try:
        return asyncio.run(factory())
    except ConfigError as exc:
        fail(str(exc), 2)
    except TraderError as exc:
        structlog.get_logger().error("command_failed", error=str(exc), kind=type(exc).__name__)
        fail(str(exc), 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)


async def with_database(
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

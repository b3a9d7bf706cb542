"""structlog configuration, done once by the CLI.

Owns the log pipeline: JSON lines on stderr when it is not a TTY (journald, CI), a readable console
renderer on a TTY, and a redaction step so that no secret ever reaches a log line. It must not be
called from library code: components only call `structlog.get_logger()`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import orjson
import structlog
from pydantic import SecretStr

#: Keys whose values are replaced wherever they appear in an event.
_SECRET_WORDS = ("password", "secret", "api_key", "token", "signature")
REDACTED = "**redacted**"


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace secret-looking keys and any SecretStr value before rendering."""
    for key, value in list(event.items()):
        if isinstance(value, SecretStr) or any(word in key.lower() for word in _SECRET_WORDS):
            event[key] = REDACTED
    return event


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure_logging(
    level: str = "INFO", fmt: Literal["auto", "json", "console"] = "auto", *, stream: Any = None
) -> None:
    """Configure structlog for the whole process.

    Args:
        level: minimum level name (DEBUG, INFO, WARNING, ERROR).
        fmt: `json`, `console`, or `auto` (console on a TTY, JSON otherwise).
        stream: where to write; defaults to stderr.
    """
    out = stream if stream is not None else sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )

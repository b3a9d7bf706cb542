"""The project's one exception tree.

    TraderError                  base of everything we raise on purpose
    ├── ConfigError              bad or missing configuration (CLI exit status 2)
    ├── TransientError           worth retrying: network, 5xx, a locked database
    ├── FatalError               not worth retrying: auth, schema mismatch, a failing write
    ├── DataError                bad input: a malformed frame or candle row (counted, dropped)
    └── RiskRejected             risk refused an order (carries the reason)

Exceptions carry the fields an operator needs (symbol, key, reason) and are chained with
`raise ... from exc`. This module must not import anything beyond the standard library.
"""

from __future__ import annotations


class TraderError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(TraderError):
    """Configuration is invalid; `key` names the offending setting when known."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class TransientError(TraderError):
    """A failure that may succeed when retried."""


class FatalError(TraderError):
    """A failure that retrying will not fix; the process should stop trading and exit."""


class DataError(TraderError):
    """Input data was rejected; `reason` is a stable, countable label."""

    def __init__(self, reason: str, detail: str = "", *, symbol: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.symbol = symbol


class RiskRejected(TraderError):
    """Risk denied an order; `reason` is a stable label stored in `orders.reject_reason`."""

    def __init__(self, reason: str, *, symbol: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.symbol = symbol


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an error's message (its type's name when empty), whitespace collapsed,
    at most `limit` characters: SQLAlchemy appends the SQL and a link on further lines, and a
    log field or an operator's line wants only what went wrong."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return " ".join(lines[0].split())[:limit]

"""A `runs` row for tests that need one (foreign keys) but not a particular configuration."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from trader.persistence import repository
from trader.persistence.repository import Bind

#: The start time of runs made by `add_run` unless a test gives one.
STARTED_AT = datetime(2024, 1, 1, tzinfo=UTC)


async def add_run(
    bind: Bind,
    run_id: str,
    *,
    mode: str = "paper",
    strategy: str = "random",
    symbols: Sequence[str] = ("BTCUSDT",),
    config: dict[str, Any] | None = None,
    started_at: datetime = STARTED_AT,
) -> None:
    """Store run `run_id` (5m bars, an empty config unless given)."""
    await repository.create_run(
        bind,
        run_id=run_id,
        mode=mode,
        config=config if config is not None else {},
        strategy=strategy,
        interval="5",
        symbols=list(symbols),
        started_at=started_at,
    )

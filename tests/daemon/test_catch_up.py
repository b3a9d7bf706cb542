"""A catch-up never releases a slice before a symbol's confirm could still arrive.

Unit level: the session with stand-in engine, feed and REST client, so the exchange clock and
what REST returns are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from trader.domain import Bar, BarSource
from trader.feeds.bybit_ws import ConfirmedBar
from trader.notify import SystemdNotifier
from trader.session import LiveSession

INTERVAL_MS = 300_000
T0_MS = 1_700_000_100_000 - 1_700_000_100_000 % INTERVAL_MS


def _bar(symbol: str, index: int) -> Bar:
    return Bar(symbol, "5", T0_MS + index * INTERVAL_MS, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, BarSource.WS)


class _Risk:
    class state:  # mirrors the engine's attribute
        value = "ACTIVE"


class _Engine:
    run_id = "r"
    risk = _Risk()
    last_slice_start_ms = T0_MS + 10 * INTERVAL_MS

    def __init__(self) -> None:
        self.slices: list[list[tuple[str, int]]] = []

    async def process_slice(self, bars: Sequence[Bar], received_ns: int | None = None) -> None:
        self.slices.append([(b.symbol, (b.start_ms - T0_MS) // INTERVAL_MS) for b in bars])

    def should_flush(self) -> bool:
        return False

    async def flush(self, wait: bool = False) -> None:
        """Nothing to write."""


class _Feed:
    reconnects = 0
    exchange_time_ms = None

    class state:  # mirrors the feed's attribute
        value = "streaming"


class _Rest:
    """Serves the given bars; the exchange clock is 1 s after bar 11 closed."""

    def __init__(self, rows: dict[str, list[Bar]]) -> None:
        self.rows = rows

    async def server_time_ms(self) -> int:
        return T0_MS + 12 * INTERVAL_MS + 1_000

    async def closed_bars(
        self, symbol: str, *, from_start_ms: int, to_start_ms: int, now_ms: int
    ) -> list[Bar]:
        return [b for b in self.rows.get(symbol, []) if from_start_ms <= b.start_ms < to_start_ms]


async def _catch_up_then_late_confirm(eth_rows: list[Bar]) -> tuple[_Engine, LiveSession]:
    engine = _Engine()
    rest = _Rest({"BTCUSDT": [_bar("BTCUSDT", 11)], "ETHUSDT": eth_rows})
    session = LiveSession(
        engine=engine,  # type: ignore[arg-type]
        feed=_Feed(),  # type: ignore[arg-type]
        backfill=rest,  # type: ignore[arg-type]
        symbols=["BTCUSDT", "ETHUSDT"],
        interval="5",
        warmup_bars=5,
        grace_ms=5_000,
        notifier=SystemdNotifier(None),
    )
    never: asyncio.Task[Any] = asyncio.create_task(asyncio.Event().wait())
    try:
        await session._catch_up(never)
    finally:
        never.cancel()
    # ETH's websocket confirm for bar 11 arrives a moment after the catch-up.
    session._on_confirmed(ConfirmedBar(_bar("ETHUSDT", 11), 0))
    await session._process(session._assembler.ready(), live=True)
    return engine, session


@pytest.mark.parametrize("rest_has_eth", [True, False])
async def test_late_confirm_joins_its_slice_when_rest_had_nothing_yet(rest_has_eth: bool) -> None:
    """Within the confirm grace, a symbol REST returned nothing for holds the slice back, so
    its confirm still joins it: the slice runs with both symbols either way."""
    engine, session = await _catch_up_then_late_confirm(
        [_bar("ETHUSDT", 11)] if rest_has_eth else []
    )
    assert engine.slices == [[("BTCUSDT", 11), ("ETHUSDT", 11)]]
    # With REST's copy in, the confirm is a duplicate of a processed bar (refused, harmless).
    assert session._assembler.refused == (1 if rest_has_eth else 0)

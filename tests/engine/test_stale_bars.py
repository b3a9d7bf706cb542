"""The stale-bar rule: a bar known too long after its close is processed but never traded."""

from __future__ import annotations

import dataclasses

import pytest

from tests.support.candles import load_candles
from tests.support.daemon_harness import FIXTURES
from tests.support.engine_harness import run_engine, settings_for, slices
from trader.domain import Bar

_BARS = load_candles(FIXTURES / "BTCUSDT_5m.csv.gz", "BTCUSDT", "5")[:400]
_FEATURES = {"tactical_window": 32, "strategic_window": 64, "scale_window": 32}


def _known(bars: list[Bar], delay_ms: int | None) -> list[Bar]:
    return [
        dataclasses.replace(bar, known_ms=None if delay_ms is None else bar.close_ms + delay_ms)
        for bar in bars
    ]


@pytest.mark.parametrize(
    ("delay_ms", "trades"),
    [(None, True), (12, True), (30_000, True), (30_001, False), (3_600_000, False)],
)
async def test_buy_and_hold_enters_only_on_a_bar_known_in_time(
    delay_ms: int | None, trades: bool
) -> None:
    """Buy-and-hold enters on a bar known within max_bar_age_s; a later one is held, with an
    event."""
    settings = settings_for("buy_hold", features=_FEATURES, risk={"max_bar_age_s": 30.0})
    _, sink = await run_engine(settings, slices(_known(_BARS, delay_ms)))
    decisions = sink.rows("decisions")
    acted = [row for row in decisions if row["action"] != "HOLD"]
    stale_events = [row for row in sink.rows("risk_events") if row["kind"] == "stale_bar"]

    assert len(decisions) == len(_BARS)  # a decision for every bar, stale or not
    assert bool(sink.rows("orders")) is trades
    assert bool(acted) is trades
    assert bool(stale_events) is not trades
    if stale_events:
        assert "BUY_LONG held" in stale_events[0]["detail"]

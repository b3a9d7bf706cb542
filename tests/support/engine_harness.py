"""Runs the real engine over bars with an in-memory sink, for engine-level tests.

The sink keeps every WriteBatch, so tests can inspect exactly the rows the writer would commit
without a database; the database path itself is covered by the replay tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from itertools import groupby
from typing import Any

from strategies.base import SymbolContext
from trader.config import Settings
from trader.domain import Action, Bar, Decision, DecisionType
from trader.engine import Engine
from trader.persistence.batch import WriteBatch
from trader.pipeline import build_engine

TABLES = ("bars", "decisions", "orders", "fills", "equity", "rewards", "risk_events", "positions")


class ListSink:
    """A BatchSink that keeps batches in memory."""

    def __init__(self) -> None:
        self.batches: list[WriteBatch] = []

    async def submit(self, batch: WriteBatch) -> None:
        """Keep the batch."""
        self.batches.append(batch)

    async def flush(self) -> None:
        """Nothing to wait for."""

    def rows(self, table: str, *, drop: Sequence[str] = ("latency_us",)) -> list[dict[str, Any]]:
        """All rows of one table in submission order, minus volatile columns."""
        out = []
        for batch in self.batches:
            for row in getattr(batch, table):
                out.append({k: v for k, v in row.items() if k not in drop})
        return out


class ScriptedStrategy:
    """Decides what a script says: `{bar start_ms: (action, decision_type)}`, else HOLD.

    Entries decline risk's default exits, so a test controls exactly what closes a position.
    """

    name = "scripted"
    model_version = "scripted"

    def __init__(self, script: dict[int, tuple[Action, DecisionType]]) -> None:
        self.script = script

    def decide(self, contexts: Sequence[SymbolContext]) -> list[Decision]:
        """One decision per context: the scripted one for its bar, else a procedural HOLD."""
        out = []
        for context in contexts:
            bar = context.bar
            entry = self.script.get(bar.start_ms)
            if entry is None:
                out.append(Decision.hold(bar.symbol, bar.start_ms, model_version="scripted"))
                continue
            action, kind = entry
            out.append(
                Decision(
                    symbol=bar.symbol,
                    bar_start_ms=bar.start_ms,
                    action=action,
                    size=1.0,
                    confidence=1.0,
                    decision_type=kind,
                    model_version="scripted",
                    default_exits=False,
                )
            )
        return out

    def state_dict(self) -> dict[str, Any]:
        """Stateless."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless."""


def slices(bars: Iterable[Bar]) -> list[list[Bar]]:
    """Group time-ordered bars of several symbols into bar-close slices."""
    ordered = sorted(bars, key=lambda b: (b.start_ms, b.symbol))
    return [list(group) for _, group in groupby(ordered, key=lambda b: b.start_ms)]


def settings_for(name: str, /, **sections: dict[str, Any]) -> Settings:
    """Default settings with a chosen strategy and section overrides."""
    strategy_section = {"name": name, **sections.pop("strategy", {})}
    return Settings(strategy=strategy_section, **sections)


async def run_engine(
    settings: Settings,
    bar_slices: Sequence[Sequence[Bar]],
    *,
    flush_every: int = 100,
    engine: Engine | None = None,
    sink: ListSink | None = None,
) -> tuple[Engine, ListSink]:
    """Process slices, flushing every `flush_every` slices and at the end."""
    sink = sink if sink is not None else ListSink()
    engine = engine if engine is not None else build_engine(settings, run_id="t", sink=sink)
    for index, bar_slice in enumerate(bar_slices, start=1):
        await engine.process_slice(bar_slice)
        if index % flush_every == 0:
            await engine.flush()
    await engine.flush(wait=True)
    return engine, sink


def perturbed(bars: Sequence[Bar], after_index: int, factor: float) -> list[Bar]:
    """A copy whose bars after `after_index` are scaled in price and volume (still valid)."""
    out = list(bars[: after_index + 1])
    for index, bar in enumerate(bars[after_index + 1 :], start=1):
        f = factor if index % 2 else 1.0 / factor
        out.append(
            dataclasses.replace(
                bar,
                open=bar.open * f,
                high=bar.high * f,
                low=bar.low * f,
                close=bar.close * f,
                volume=bar.volume * 3.0,
                turnover=bar.turnover * 3.0 * f,
            )
        )
    return out

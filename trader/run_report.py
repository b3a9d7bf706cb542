"""Results of a stored run: loaded from the database, summarised, and written as a report.

Owns turning a run's rows (equity, fills, decisions, bars) into metrics, the terminal summary
and the report directory, for both `trader replay` (at the end of a replay) and `trader report`
(for any stored run). The database is the source of truth, so a resumed replay reports the
whole run, not just the part after the restart. That includes the replay's rejected-input
counts, which `store_rejections` keeps in the run's ``runs.config`` under
``"rejected_inputs"`` when the run ends; a run without them (a live run, or a replay that never
finished) reports them as not recorded, never as 0. It must not run the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trader.domain import interval_ms
from trader.errors import ConfigError
from trader.metrics import (
    EquityPoint,
    FillPoint,
    Metrics,
    PricePoint,
    compute_metrics,
    render_summary,
)
from trader.persistence import repository
from trader.persistence.models import Run

if TYPE_CHECKING:
    from trader.report import ReportPaths

#: The key of `runs.config` that holds a finished replay's rejected-input counts by reason.
REJECTED_KEY = "rejected_inputs"


@dataclass(frozen=True, slots=True)
class RunResults:
    """Everything the summary and the report need about one run."""

    run_id: str
    strategy: str
    interval: str
    symbols: tuple[str, ...]
    initial_equity: float
    equity: list[EquityPoint]
    fills: list[FillPoint]
    decisions: dict[str, int]
    metrics: Metrics
    #: Rejected inputs by reason; None when the run has none stored (live runs).
    rejected: dict[str, int] | None

    @property
    def bars(self) -> int:
        """Bars processed: the engine writes one decision per processed bar."""
        return sum(self.decisions.values())


async def store_rejections(conn: AsyncConnection, run_id: str, rejected: Mapping[str, int]) -> None:
    """Keep a replay's rejected-input counts with its run (call in the transaction ending it)."""
    stored = (await conn.execute(select(Run.config).where(Run.id == run_id))).scalar_one()
    config = {**stored, REJECTED_KEY: dict(rejected)}
    await conn.execute(update(Run).where(Run.id == run_id).values(config=config))


def stored_rejections(config: Mapping[str, Any]) -> dict[str, int] | None:
    """The rejected-input counts kept in a run's config, or None when it holds none."""
    counts = config.get(REJECTED_KEY)
    if not isinstance(counts, dict) or not all(
        isinstance(reason, str) and type(count) is int for reason, count in counts.items()
    ):
        return None
    return {reason: counts[reason] for reason in sorted(counts)}


async def load_run_results(
    db: AsyncEngine, run_id: str, *, rejected: Mapping[str, int] | None = None
) -> RunResults:
    """Load a run's rows and compute its metrics.

    Args:
        db: The database.
        run_id: The run.
        rejected: Rejected-input counts to report; None reads the ones stored with the run
            (None again when it has none).

    Raises:
        ConfigError: no run with that id exists.
    """
    run = await repository.get_run(db, run_id)
    if run is None:
        raise ConfigError(f"no run named {run_id!r} in the database", key="--run")
    initial_equity = float(run.config["settings"]["broker"]["initial_equity"])
    equity = [
        EquityPoint(
            ts_ms=row.ts_ms,
            equity=row.equity,
            cash=row.cash,
            unrealized_pnl=row.unrealized_pnl,
            drawdown=row.drawdown,
            gross_exposure_usdt=row.gross_exposure_usdt,
        )
        for row in await repository.fetch_equity(db, run_id)
    ]
    fills = [
        FillPoint(
            ts_ms=row.ts_ms,
            symbol=row.symbol,
            side=row.side,
            qty=row.qty,
            price=row.price,
            fee=row.fee,
            reason=row.reason,
        )
        for row in await repository.fetch_fills(db, run_id)
    ]
    metrics = compute_metrics(
        equity=equity,
        fills=fills,
        initial_equity=initial_equity,
        interval_ms=interval_ms(run.interval),
    )
    return RunResults(
        run_id=run_id,
        strategy=run.strategy,
        interval=run.interval,
        symbols=tuple(run.symbols),
        initial_equity=initial_equity,
        equity=equity,
        fills=fills,
        decisions=await repository.count_decisions(db, run_id),
        metrics=metrics,
        rejected=dict(rejected) if rejected is not None else stored_rejections(run.config),
    )


def summary_text(results: RunResults, *, color: bool) -> str:
    """The end-of-run summary printed by `trader replay` and `trader report`."""
    return render_summary(
        metrics=results.metrics,
        bars=results.bars,
        rejected=results.rejected,
        decisions=results.decisions,
        title=f"run {results.run_id} ({results.strategy})",
        color=color,
    )


async def write_run_report(db: AsyncEngine, results: RunResults, out_dir: Path) -> ReportPaths:
    """Write metrics.json and the plots for a run into `out_dir`."""
    # Imported here: matplotlib costs about half a second, and most replays write no report.
    from trader.report import write_report

    prices: dict[str, list[PricePoint]] = {}
    if results.equity:
        first, last = results.equity[0].ts_ms, results.equity[-1].ts_ms
        step = interval_ms(results.interval)
        for symbol in results.symbols:
            bars = await repository.fetch_bars(db, symbol, results.interval, first - step, last)
            prices[symbol] = [PricePoint(ts_ms=b.start_ms + step, close=b.close) for b in bars]
    extra: dict[str, Any] = {
        "run_id": results.run_id,
        "strategy": results.strategy,
        "interval": results.interval,
        "symbols": list(results.symbols),
        "bars": results.bars,
        "decisions": results.decisions,
        "rejected_inputs": results.rejected,
    }
    return write_report(
        out_dir,
        metrics=results.metrics,
        equity=results.equity,
        fills=results.fills,
        prices=prices,
        title=f"{results.run_id} - {results.strategy}",
        extra=extra,
    )

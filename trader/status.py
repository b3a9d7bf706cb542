"""`trader status`: the paper account as the database holds it, whether or not a daemon runs.

Owns gathering one run's operator view (trading state and its reasons from the committed risk
snapshot, the kill switch's latest commands, positions, equity and drawdown, the last bar per
symbol and how old it is, the model version) and rendering it as text or JSON. It reads only
committed rows, so it never disturbs a running daemon. It must not change anything.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from trader.config import Settings
from trader.domain import interval_ms
from trader.errors import ConfigError
from trader.persistence import control, repository
from trader.pipeline import build_risk

#: A bar older than this many intervals (by the local clock) marks the feed as stale.
_STALE_INTERVALS = 2


@dataclass(frozen=True, slots=True)
class StatusReport:
    """What `trader status` shows."""

    run_id: str
    state: str
    reason: str | None
    detail: str | None
    drawdown: float | None
    equity: str | None
    peak_equity: str | None
    positions: dict[str, str]
    last_bar_ms: dict[str, int]
    feed: str
    model_version: str | None
    controls: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        """The JSON document `trader status --json` prints."""
        return asdict(self)


async def gather_status(
    db: AsyncEngine, settings: Settings, *, run_id: str | None = None, now_ms: int | None = None
) -> StatusReport:
    """The status of `run_id` (default: the latest paper run).

    Raises:
        ConfigError: there is no such run.
    """
    run_id = run_id or await repository.latest_run_id(db, mode="paper")
    if run_id is None:
        raise ConfigError("the database holds no paper run yet; start one with `trader run`")
    if await repository.get_run(db, run_id) is None:
        raise ConfigError(f"run {run_id!r} does not exist", key="--run")
    # Only the risk layer's committed state is needed: no engine, so no model is loaded.
    layer = build_risk(settings)
    snapshot = await repository.load_run_state(db, run_id)
    if snapshot is not None:
        layer.load_state_dict(snapshot.state["risk"])
    risk = layer.status()
    equity = await repository.latest_equity(db, run_id)
    model_version = await repository.latest_model_version(db, run_id)
    last_bars = await repository.last_bar_starts(db, run_id)
    now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    return StatusReport(
        run_id=run_id,
        state=layer.state.value,
        reason=risk.get("reason"),
        detail=risk.get("detail"),
        drawdown=float(equity.drawdown) if equity is not None else None,
        equity=str(equity.equity) if equity is not None else None,
        peak_equity=risk.get("peak_equity"),
        positions={
            p.symbol: str(p.qty) for p in await repository.fetch_positions(db, run_id) if p.qty
        },
        last_bar_ms=last_bars,
        feed=_feed_health(last_bars, settings.feed.interval, now_ms),
        model_version=model_version,
        controls=[
            {
                "id": event.id,
                "command": event.command.value,
                "reason": event.reason,
                "source": event.source,
                "flatten": event.flatten,
                "created_at": event.created_at.isoformat(),
                "applied_at": event.applied_at.isoformat() if event.applied_at else None,
            }
            for event in await control.recent(db, limit=5)
        ],
    )


def _feed_health(last_bars: dict[str, int], interval: str, now_ms: int) -> str:
    if not last_bars:
        return "no bars yet"
    length_ms = interval_ms(interval)
    newest_close_ms = max(last_bars.values()) + length_ms
    age_s = max(0, now_ms - newest_close_ms) // 1_000
    if now_ms - newest_close_ms > _STALE_INTERVALS * length_ms:
        return f"stale: the newest bar closed {age_s} s ago (is the daemon running?)"
    return f"ok: the newest bar closed {age_s} s ago"


def render_text(report: StatusReport) -> str:
    """The human-readable status."""
    drawdown = f"{report.drawdown:.2%}" if report.drawdown is not None else "-"
    lines = [
        f"run            {report.run_id}",
        f"trading state  {report.state}"
        + (f" ({report.reason}: {report.detail})" if report.reason else ""),
        f"equity         {report.equity or '-'} USDT (peak {report.peak_equity or '-'})",
        f"drawdown       {drawdown}",
        f"feed           {report.feed}",
        f"model          {report.model_version or '-'}",
        "positions      "
        + (", ".join(f"{s} {q}" for s, q in sorted(report.positions.items())) or "flat"),
        "last bars      "
        + (", ".join(f"{s} {t}" for s, t in sorted(report.last_bar_ms.items())) or "-"),
    ]
    for event in report.controls[:3]:
        applied = event["applied_at"] or "pending"
        lines.append(
            f"control        #{event['id']} {event['command']} ({event['source']}): "
            f"{event['reason']!r}, applied {applied}"
        )
    return "\n".join(lines)

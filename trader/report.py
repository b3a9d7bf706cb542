"""A run's report directory: `metrics.json` and two PNG plots.

Owns the on-disk shape of a report (`ReportPaths`, `REPORT_SCHEMA_VERSION`) and how the plots
look. Used by `trader replay --report DIR` and `trader report --run ID`; `trader evaluate`'s
own plots are rendered through `png_bytes`.

It must not compute metrics (that is `trader.metrics`), read a database or import the engine.
It must not touch pyplot's global state: figures are plain `matplotlib.figure.Figure` objects
drawn by an explicit Agg canvas, so reports can be written from any thread and never open a
window or leak figures.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter
from numpy.typing import NDArray

from trader.metrics import (
    EquityPoint,
    FillPoint,
    FillRole,
    Metrics,
    PositionStep,
    PricePoint,
    drawdown_series,
    reconstruct_trades,
)

#: Version of the `metrics.json` layout; bump it when a key moves or changes meaning.
REPORT_SCHEMA_VERSION = 1

_DPI = 110
_WIDTH_IN = 12.0
_PANEL_HEIGHT_IN = 3.0
_LONG_COLOR = "tab:green"
_SHORT_COLOR = "tab:red"
_SHADE_ALPHA = 0.15
_LEGEND_COLUMNS = 4
_MANY_FILLS = 150
_SIDE_MARKERS = {"buy": "^", "sell": "v"}
_ROLE_COLORS = {FillRole.ENTRY: "tab:blue", FillRole.EXIT: "black", FillRole.FLIP: "tab:purple"}


@dataclass(frozen=True, slots=True)
class ReportPaths:
    """Where `write_report` put each file."""

    metrics_json: Path
    equity_drawdown_png: Path
    price_positions_png: Path


def write_report(
    out_dir: Path,
    *,
    metrics: Metrics,
    equity: Sequence[EquityPoint],
    fills: Sequence[FillPoint],
    prices: Mapping[str, Sequence[PricePoint]],
    title: str,
    extra: Mapping[str, Any] | None = None,
) -> ReportPaths:
    """Write `metrics.json`, `equity_drawdown.png` and `price_positions.png` into `out_dir`.

    `metrics.json` is `{"schema_version", "title", "metrics": Metrics.as_dict(), "extra"}`;
    `extra` carries caller context (run id, strategy, rejected counts) and must be JSON-able
    without NaN. Each file is written to a temporary name and renamed, so a crash never leaves
    a half-written report file behind. Existing files are replaced.

    Args:
        out_dir: report directory; created (with parents) if missing.
        metrics: the run's metrics.
        equity: one point per bar close, in time order.
        fills: executions in the order they happened.
        prices: close prices per symbol, each in time order; may be empty for a symbol.
        title: headline for the JSON and both plots.
        extra: more JSON-able context stored under `"extra"`.

    Returns:
        The paths written.

    Raises:
        ValueError: `extra` holds NaN/inf, or fills are out of order.
        TypeError: `extra` holds something JSON cannot encode.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(
        metrics_json=out_dir / "metrics.json",
        equity_drawdown_png=out_dir / "equity_drawdown.png",
        price_positions_png=out_dir / "price_positions.png",
    )
    payload = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "title": title,
        "metrics": metrics.as_dict(),
        "extra": dict(extra or {}),
    }
    # allow_nan=False: NaN is not JSON, and every report must parse with a strict JSON reader.
    text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    _write_atomic(paths.metrics_json, text.encode())
    steps = reconstruct_trades(fills).steps
    equity_fig = _equity_figure(equity, metrics.initial_equity, metrics.interval_ms, title)
    _write_atomic(paths.equity_drawdown_png, png_bytes(equity_fig))
    price_fig = _price_figure(prices, steps, metrics.interval_ms, title)
    _write_atomic(paths.price_positions_png, png_bytes(price_fig))
    return paths


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def png_bytes(fig: Figure, *, dpi: int = _DPI) -> bytes:
    """`fig` rendered as PNG by its own Agg canvas (no pyplot state); the figure is cleared."""
    FigureCanvasAgg(fig)  # attaches the Agg canvas to fig: no pyplot, no backend switch
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    fig.clear()  # drop artists now; a report can hold 100k-point lines
    return buffer.getvalue()


def _dates(ts_ms: Sequence[int] | NDArray[np.int64]) -> NDArray[np.datetime64]:
    # Matplotlib reads naive datetime64 as UTC, which is what epoch milliseconds are.
    return np.asarray(ts_ms, dtype="datetime64[ms]")


def _utc_date_axis(ax: Axes) -> None:
    # matplotlib.dates ships without annotations on these constructors, hence the ignores.
    locator = mdates.AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
    formatter = mdates.ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(formatter)
    ax.set_xlabel("time (UTC)")


def _plain_y(ax: Axes) -> None:
    # The default offset notation ("1e4 + 2.5") is unreadable for account equity and prices.
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    ax.yaxis.set_major_formatter(formatter)


def _legend_above(ax: Axes) -> None:
    # Above the panel, right of its left-aligned title: a legend inside would hide data.
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            labels,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncols=min(len(handles), _LEGEND_COLUMNS),
            fontsize="small",
            frameon=False,
            borderaxespad=0.2,
        )


def _widen_instant(ax: Axes, ts_ms: Sequence[int], interval_ms: int) -> None:
    # Data at a single instant makes matplotlib widen the date axis to years; show a few bars.
    if ts_ms and min(ts_ms) == max(ts_ms):
        ax.set_xlim(_dates([ts_ms[0] - 2 * interval_ms, ts_ms[0] + 2 * interval_ms]).tolist())


def _note(ax: Axes, text: str, *, blank: bool = False) -> None:
    # Upper centre, clear of fills that sit mid-panel; a blank panel also drops its 0..1 ticks.
    ax.text(0.5, 0.9, text, transform=ax.transAxes, ha="center", va="top", color="grey")
    if blank:
        ax.set_xticks([])
        ax.set_yticks([])


def _equity_figure(
    equity: Sequence[EquityPoint], initial_equity: float, interval_ms: int, title: str
) -> Figure:
    fig = Figure(figsize=(_WIDTH_IN, 6.5), layout="constrained")
    ax_eq, ax_dd = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    fig.suptitle(title)
    ax_eq.set_title("equity and drawdown", loc="left", fontsize="medium")
    ax_eq.set_ylabel("equity (USDT)")
    ax_dd.set_ylabel("drawdown (%)")
    if not equity:
        _note(ax_eq, "no bars", blank=True)
        _note(ax_dd, "", blank=True)
        ax_dd.set_xlabel("time (UTC)")
        return fig
    x = _dates([p.ts_ms for p in equity])
    values = np.array([p.equity for p in equity], dtype=np.float64)
    # Same convention as the metrics: the drop is measured from a peak that starts at the
    # initial equity, so a first losing bar already shows as drawdown.
    drawdown_pct = -100.0 * drawdown_series(np.concatenate(([initial_equity], values)))[1:]
    marker = "o" if len(equity) == 1 else None  # a single point draws no line
    ax_eq.plot(x, values, color="tab:blue", linewidth=1.2, marker=marker, label="equity")
    ax_eq.axhline(initial_equity, color="grey", linestyle="--", linewidth=0.8, label="initial")
    _legend_above(ax_eq)
    ax_dd.fill_between(x, drawdown_pct, 0.0, color=_SHORT_COLOR, alpha=0.3, linewidth=0)
    ax_dd.plot(x, drawdown_pct, color=_SHORT_COLOR, linewidth=0.8, marker=marker)
    deepest = float(drawdown_pct.min())
    # Pin the top at 0 (there is no positive drawdown); a curve that never dipped gets -1..0.
    ax_dd.set_ylim(deepest * 1.05 if deepest < 0 else -1.0, 0.0)
    for ax in (ax_eq, ax_dd):
        ax.grid(alpha=0.3)
        _plain_y(ax)
    _utc_date_axis(ax_dd)
    _widen_instant(ax_dd, [p.ts_ms for p in equity], interval_ms)
    return fig


def _price_figure(
    prices: Mapping[str, Sequence[PricePoint]],
    steps: Sequence[PositionStep],
    interval_ms: int,
    title: str,
) -> Figure:
    symbols = sorted(set(prices) | {step.fill.symbol for step in steps})
    panels = max(1, len(symbols))
    fig = Figure(figsize=(_WIDTH_IN, 1.0 + _PANEL_HEIGHT_IN * panels), layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle(title)
    if not symbols:
        _note(axes[0], "no prices and no fills", blank=True)
        axes[0].set_xlabel("time (UTC)")
        return fig
    for ax, symbol in zip(axes, symbols, strict=False):
        symbol_steps = [step for step in steps if step.fill.symbol == symbol]
        _price_panel(ax, symbol, prices.get(symbol, ()), symbol_steps)
    _utc_date_axis(axes[-1])
    all_ms = [p.ts_ms for points in prices.values() for p in points]
    _widen_instant(axes[-1], all_ms + [step.fill.ts_ms for step in steps], interval_ms)
    return fig


def _price_panel(
    ax: Axes, symbol: str, points: Sequence[PricePoint], steps: Sequence[PositionStep]
) -> None:
    ax.set_title(f"{symbol}: close, position and fills", loc="left", fontsize="medium")
    ax.set_ylabel(f"{symbol} (USDT)")
    ax.grid(alpha=0.3)
    _plain_y(ax)
    if points:
        ts_ms = np.array([p.ts_ms for p in points], dtype=np.int64)
        x = _dates(ts_ms)
        marker = "o" if len(points) == 1 else None
        ax.plot(x, [p.close for p in points], color="black", linewidth=0.9, marker=marker)
        _shade_positions(ax, ts_ms, steps)
    else:
        _note(ax, "no prices")
    _mark_fills(ax, steps)
    _legend_above(ax)


def _shade_positions(ax: Axes, ts_ms: NDArray[np.int64], steps: Sequence[PositionStep]) -> None:
    if not steps:
        return
    step_ms = np.array([s.fill.ts_ms for s in steps], dtype=np.int64)
    qty_after = np.array([s.qty_after for s in steps], dtype=np.float64)
    # Position held at each price time: the one after the last fill at or before it.
    index = np.searchsorted(step_ms, ts_ms, side="right") - 1
    held = np.where(index >= 0, qty_after[np.maximum(index, 0)], 0.0)
    x = _dates(ts_ms)
    band = ax.get_xaxis_transform()  # y in axes fraction: shade the full panel height
    for held_mask, color, label in (
        (held > 0, _LONG_COLOR, "long"),
        (held < 0, _SHORT_COLOR, "short"),
    ):
        # Extend each run by one point so the band reaches the bar where the position changed
        # (fill_between stops at the last True sample, leaving a one-bar gap).
        mask = held_mask.copy()
        mask[1:] |= held_mask[:-1]
        if mask.any():
            ax.fill_between(
                x,
                0,
                1,
                where=mask,
                step="post",
                transform=band,
                color=color,
                alpha=_SHADE_ALPHA,
                linewidth=0,
                label=f"{label} position",
            )


def _mark_fills(ax: Axes, steps: Sequence[PositionStep]) -> None:
    # Shape says the side (^ buy, v sell), colour says what the fill did to the position.
    groups: dict[tuple[FillRole, str], tuple[list[int], list[float]]] = {}
    for step in steps:
        ts_ms, price = groups.setdefault((step.role, step.fill.side), ([], []))
        ts_ms.append(step.fill.ts_ms)
        price.append(step.fill.price)
    size = 40 if len(steps) <= _MANY_FILLS else 12  # dense runs: keep the price visible
    for (role, side), (ts_ms, price) in sorted(groups.items()):
        ax.scatter(
            _dates(ts_ms),
            price,
            marker=_SIDE_MARKERS[side],
            color=_ROLE_COLORS[role],
            s=size,
            zorder=3,
            edgecolors="white",
            linewidths=0.5,
            label=f"{role} {side} ({len(ts_ms)})",
        )

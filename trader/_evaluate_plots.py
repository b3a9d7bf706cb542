"""The evaluation report's plots: equity curves, Sharpe by series, reliability, ACT by regime.

Owns how the four PNGs of `trader evaluate` look. Figures are plain `Figure`s rendered by
`trader.report.png_bytes` (an explicit Agg canvas, no pyplot state), returned as PNG bytes. It
must not compute metrics or write files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import dates as mdates
from matplotlib.figure import Figure

from trader._evaluate_metrics import VOL_REGIMES, Calibration
from trader._evaluate_replay import JobResult
from trader.report import png_bytes

_COLORS = {"hrm": "tab:blue", "flat": "tab:orange", "ema_cross": "tab:green", "buy_hold": "gray"}
_DPI = 100


def _png(fig: Figure) -> bytes:
    return png_bytes(fig, dpi=_DPI)


def equity_png(results: Sequence[JobResult]) -> bytes:
    series = sorted({r.series for r in results})
    columns = 2
    rows = max(math.ceil(len(series) / columns), 1)
    fig = Figure(figsize=(12, 2.6 * rows), dpi=_DPI, layout="constrained")
    for i, name in enumerate(series):
        ax = fig.add_subplot(rows, columns, i + 1)
        for r in results:
            if r.series == name and r.equity:
                ts = np.array([t for t, _ in r.equity], dtype="datetime64[ms]")
                values = np.array([v for _, v in r.equity])
                ax.plot(
                    ts, values / values[0], label=r.strategy, color=_COLORS.get(r.strategy), lw=1
                )
        # matplotlib.dates ships without annotations on these constructors, hence the ignores.
        locator = mdates.AutoDateLocator(maxticks=6)  # type: ignore[no-untyped-call]
        formatter = mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(formatter)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def sharpe_png(rows: Sequence[dict[str, Any]], strategies: Sequence[str]) -> bytes:
    series = list(dict.fromkeys(r["series"] for r in rows))
    fig = Figure(figsize=(12, 4), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(strategies)
    value = {(r["series"], r["strategy"]): r["sharpe"] or 0.0 for r in rows}
    for k, strategy in enumerate(strategies):
        xs = np.arange(len(series)) + k * width
        ax.bar(
            xs,
            [value.get((s, strategy), 0.0) for s in series],
            width,
            label=strategy,
            color=_COLORS[strategy],
        )
    ax.set_xticks(np.arange(len(series)) + 0.4 - width / 2, series, fontsize=8)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_ylabel("held-out Sharpe after fees")
    ax.legend(fontsize=8)
    return _png(fig)


def reliability_png(calibration: dict[str, tuple[dict[str, Any], Calibration]]) -> bytes:
    fig = Figure(figsize=(6, 5), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls="--", label="perfect")
    for key in ("hrm", "flat"):
        if key in calibration:
            metrics, bins = calibration[key]
            ax.plot(
                bins.predicted,
                bins.observed,
                marker="o",
                color=_COLORS[key],
                label=f"{key} (ECE {_ece(metrics)})",
            )
    ax.set_xlabel("predicted P(next bar up)")
    ax.set_ylabel("observed frequency up")
    ax.legend(fontsize=8)
    return _png(fig)


def act_png(act: Sequence[dict[str, Any]]) -> bytes:
    fig = Figure(figsize=(6, 4), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    names = [name for name, _, _ in VOL_REGIMES]
    for variant in sorted({a["strategy"] for a in act}):
        picked = [a for a in act if a["strategy"] == variant]
        means = []
        for name in names:
            bars = sum(a[name]["bars"] for a in picked)
            total = sum(a[name]["bars"] * a[name]["mean_act_steps"] for a in picked)
            means.append(total / bars if bars else 0.0)
        ax.plot(names, means, marker="o", label=variant)
    ax.set_xlabel("volatility regime (vol_percentile_256 tercile)")
    ax.set_ylabel("mean ACT segments per bar")
    ax.legend(fontsize=8)
    return _png(fig)


def _ece(metrics: dict[str, Any]) -> str:
    value = metrics.get("ece")
    return "n/a" if value is None else f"{value:.3f}"

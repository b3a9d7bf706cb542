"""The evaluation report on disk: `report.json` (CONTRACT.md), `report.md` and four plots.

Owns the layout of the evaluation report: `report.json` holds `rows` exactly as the contract
says (`series`, `strategy`, `sharpe`, `sortino`, `max_drawdown`, `total_return`, `trades`, plus
more keys) for `hrm`, `flat`, `ema_cross` and `buy_hold`, and beside them the ablations, the
prediction metrics, calibration, ACT statistics, checkpoints, splits and settings; `report.md`
renders the same numbers; the plots (`_evaluate_plots`) are equity curves, Sharpe by series, a
reliability diagram and ACT segments by volatility regime. It must not compute metrics or run
anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from strategies.training.data import HELDOUT_FRACTION
from trader._evaluate_metrics import Calibration
from trader._evaluate_plots import act_png, equity_png, reliability_png, sharpe_png
from trader._evaluate_replay import JobResult

REPORT_SCHEMA_VERSION = 1
MAIN_STRATEGIES = ("hrm", "flat", "ema_cross", "buy_hold")
#: Keys of a row besides the contract's, copied from `trader.metrics.Metrics`.
_EXTRA_KEYS = (
    "win_rate",
    "profit_factor",
    "fees_usdt",
    "exposure",
    "turnover",
    "bars",
    "start_ms",
    "end_ms",
)
_FOLD_KEYS = ("fold", "sharpe", "total_return", "max_drawdown", "trades", "start_ms", "end_ms")


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    """Everything the report shows."""

    results: list[JobResult]
    prediction: list[dict[str, Any]]
    calibration: dict[str, tuple[dict[str, Any], Calibration]]
    act: list[dict[str, Any]]
    unseen: tuple[str, ...]
    checkpoints: dict[str, dict[str, Any]]
    splits: dict[str, dict[str, Any]]
    command: str
    settings: dict[str, Any]
    folds: int
    max_bars: int | None
    notes: str = ""

    def row(self, result: JobResult) -> dict[str, Any]:
        """One contract row: the series, the strategy and its held-out metrics."""
        m = result.metrics
        row: dict[str, Any] = {
            "series": result.series,
            "strategy": result.strategy,
            "sharpe": m["sharpe"],
            "sortino": m["sortino"],
            "max_drawdown": m["max_drawdown"],
            "total_return": m["total_return"],
            "trades": m["trades"],
            "group": "unseen" if result.series in self.unseen else "trained",
        }
        row.update({key: m[key] for key in _EXTRA_KEYS})
        row["folds"] = [{k: fold[k] for k in _FOLD_KEYS} for fold in result.folds]
        row["decisions"] = result.decisions
        return row


def write_evaluation_report(out_dir: Path, report: EvaluationReport) -> None:
    """Write report.json, report.md and the plots into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    main = [r for r in report.results if r.strategy in MAIN_STRATEGIES]
    rows = [report.row(r) for r in main]
    ablations = [report.row(r) for r in report.results if r.strategy not in MAIN_STRATEGIES]
    document = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "command": report.command,
        "protocol": {
            "heldout_fraction": HELDOUT_FRACTION,
            "validation": "last 15% of the first 70%, tuning only",
            "folds": report.folds,
            "max_bars": report.max_bars,
            "unseen_series": list(report.unseen),
        },
        "rows": rows,
        "ablations": ablations,
        "summary": summary(rows),
        "prediction": report.prediction,
        "calibration": {
            key: {"metrics": metrics, "bins": _bins(bins)}
            for key, (metrics, bins) in report.calibration.items()
        },
        "act": report.act,
        "checkpoints": report.checkpoints,
        "splits": report.splits,
        "settings": report.settings,
    }
    text = json.dumps(_clean(document), indent=1, sort_keys=False, allow_nan=False)
    (out_dir / "report.json").write_text(text + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(markdown(report, rows, ablations), encoding="utf-8")
    (out_dir / "equity.png").write_bytes(equity_png(main))
    (out_dir / "sharpe.png").write_bytes(sharpe_png(rows, MAIN_STRATEGIES))
    (out_dir / "reliability.png").write_bytes(reliability_png(report.calibration))
    (out_dir / "act_steps.png").write_bytes(act_png(report.act))


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean Sharpe per strategy and group, and on how many series the HRM beat each rival."""
    out: dict[str, Any] = {"mean_sharpe": {}, "hrm_beats": {}}
    for group in ("trained", "unseen", "all"):
        picked = [r for r in rows if group == "all" or r["group"] == group]
        out["mean_sharpe"][group] = {
            s: _mean([r["sharpe"] for r in picked if r["strategy"] == s]) for s in MAIN_STRATEGIES
        }
    sharpe = {(r["series"], r["strategy"]): r["sharpe"] for r in rows}
    series = sorted({r["series"] for r in rows})
    for rival in ("flat", "buy_hold", "ema_cross"):
        wins = sum(_beats(sharpe.get((s, "hrm")), sharpe.get((s, rival))) for s in series)
        out["hrm_beats"][rival] = f"{wins}/{len(series)}"
    return out


def _beats(a: float | None, b: float | None) -> bool:
    return (a if a is not None else 0.0) > (b if b is not None else 0.0)


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v if v is not None else 0.0 for v in values]
    return round(float(np.mean(kept)), 4) if kept else None


def markdown(
    report: EvaluationReport, rows: Sequence[dict[str, Any]], ablations: Sequence[dict[str, Any]]
) -> str:
    """report.md: the command, the protocol and every table."""
    lines = [
        "# Walk-forward evaluation: HRM vs flat transformer vs rules",
        "",
        f"Produced by: `{report.command}`" if report.command else "",
        "",
        _protocol(report),
        "",
        "## Sharpe after fees (held-out)",
        "",
        _pivot(rows, "sharpe"),
        "",
        "## Total return, max drawdown, trades",
        "",
        "| series | strategy | total return | max drawdown | trades | long / short entries "
        "| exposure | fees USDT |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {r['series']} | {r['strategy']} | {_pct(r['total_return'])} | "
            f"{_pct(r['max_drawdown'])} | {r['trades']} | {r['decisions'].get('BUY_LONG', 0)} / "
            f"{r['decisions'].get('SELL_SHORT', 0)} | {_pct(r['exposure'])} | "
            f"{_num(r['fees_usdt'], 2)} |"
            for r in rows
        ),
        "",
        "Passive price change over the held-out bars (the `buy_hold` row is the engine's: one "
        "full-size long on the first ready bar, volatility-sized and capped by the risk layer, "
        "held without a stop-loss or take-profit to the end unless a drawdown halt closes it):",
        "",
        " | ".join(f"{name} {_pct(info['market_return'])}" for name, info in report.splits.items()),
        "",
        "## Summary",
        "",
        "Mean Sharpe per group, and on how many series the HRM's Sharpe beat each rival's. A "
        "Sharpe of n/a (a flat equity curve: the strategy never held a position) counts as 0.",
        "",
        "```json",
        json.dumps(_clean(summary(rows)), indent=1),
        "```",
        "",
        "## Walk-forward windows (Sharpe per fold)",
        "",
        _folds_table(rows),
        "",
        "## Ablations (same weights, changed at inference)",
        "",
        _pivot(ablations, "sharpe") if ablations else "(none run)",
        "",
        "## Prediction metrics (next bar, from the replays' own model outputs)",
        "",
        "| series | model | n | MAE bp | zero-forecast MAE bp | direction acc | AUC | ECE | IC |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {p['series']} | {p['strategy']} | {p.get('predictions', 0)} | "
            f"{_num(p.get('mae_bp'), 2)} | {_num(p.get('zero_forecast_mae_bp'), 2)} | "
            f"{_num(p.get('direction_accuracy'), 4)} | {_num(p.get('auc'), 4)} | "
            f"{_num(p.get('ece'), 4)} | {_num(p.get('ic'), 4)} |"
            for p in report.prediction
        ),
        "",
        "Pooled over series (reliability.png):",
        "",
        "| model / group | n | direction acc | AUC | ECE |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {key} | {m.get('predictions', 0)} | {_num(m.get('direction_accuracy'), 4)} | "
            f"{_num(m.get('auc'), 4)} | {_num(m.get('ece'), 4)} |"
            for key, (m, _) in sorted(report.calibration.items())
        ),
        "",
        "## ACT: mean segments per bar by volatility regime (vol_percentile_256 terciles)",
        "",
        "| series | variant | low | mid | high | all |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {a['series']} | {a['strategy']} | "
            + " | ".join(
                f"{a[name]['mean_act_steps']:.3f}" for name in ("low", "mid", "high", "all")
            )
            + " |"
            for a in report.act
        ),
        "",
        "## Checkpoints",
        "",
        *(_checkpoint_lines(report.checkpoints)),
        "",
        "Plots: equity.png, sharpe.png, reliability.png, act_steps.png.",
        "",
    ]
    if report.notes:
        lines += ["## Notes", "", report.notes.strip(), ""]
    return "\n".join(lines)


def _protocol(report: EvaluationReport) -> str:
    broker = report.settings["broker"]
    cap = (
        f"Capped at the first {report.max_bars} held-out bars per series. "
        if report.max_bars
        else ""
    )
    return (
        "Held out: the last 30% of every series (never trained or tuned on); "
        f"{report.folds} consecutive walk-forward windows of it are reported per row. {cap}"
        "Trading metrics come from `trader replay`'s engine (risk layer, paper broker, taker fee "
        f"{broker['taker_fee']}, slippage {broker['slippage_bps']} bp), annualised over a "
        f"365-day year. Series never trained on: {', '.join(report.unseen) or 'none'}."
    )


def _pivot(rows: Sequence[dict[str, Any]], key: str) -> str:
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    series = list(dict.fromkeys(r["series"] for r in rows))
    value = {(r["series"], r["strategy"]): r[key] for r in rows}
    group = {r["series"]: r["group"] for r in rows}
    out = [
        "| series | group | " + " | ".join(strategies) + " |",
        "| --- | --- |" + " ---: |" * len(strategies),
    ]
    for s in series:
        cells = " | ".join(_num(value.get((s, k)), 2) for k in strategies)
        out.append(f"| {s} | {group[s]} | {cells} |")
    return "\n".join(out)


def _folds_table(rows: Sequence[dict[str, Any]]) -> str:
    out = [
        "| series | strategy | "
        + " | ".join(f"fold {i + 1}" for i in range(_max_folds(rows)))
        + " |"
    ]
    out.append("| --- | --- |" + " ---: |" * _max_folds(rows))
    for r in rows:
        out.append(
            f"| {r['series']} | {r['strategy']} | "
            + " | ".join(_num(f["sharpe"], 2) for f in r["folds"])
            + " |"
        )
    return "\n".join(out)


def _max_folds(rows: Sequence[dict[str, Any]]) -> int:
    return max((len(r["folds"]) for r in rows), default=0)


def _checkpoint_lines(checkpoints: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for kind, meta in checkpoints.items():
        window = meta.get("training_window") or {}
        decides = "policy head (RL)" if meta.get("policy_trained") else "forecast rule"
        lines.append(
            f"- {kind}: `{meta['path']}` ({meta['model_version']}, {meta['size_bytes']:,} bytes), "
            f"trained on {', '.join(window.get('symbols', []))} up to "
            f"{_iso(window.get('end_ms'))}; decides by {decides}; rule {meta.get('policy')}; "
            f"training {meta.get('training')}"
        )
    return lines


def _iso(ms: int | None) -> str:
    if ms is None:
        return "?"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _num(value: float | int | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2%}"


def _bins(bins: Calibration) -> dict[str, list[Any]]:
    return {"predicted": bins.predicted, "observed": bins.observed, "counts": bins.counts}


def _clean(value: Any) -> Any:
    """Strict JSON: non-finite floats become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value

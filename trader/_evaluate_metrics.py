"""Prediction metrics and ACT statistics of a model's outputs over held-out bars.

Owns scoring what a model said on each bar (`OutputRecord`s from the very replay that traded)
against what happened next: MAE of the next-bar log return, direction accuracy, ROC AUC of the
up probability, expected calibration error with the reliability bins behind it, the
information coefficient; and ACT statistics: mean segments per bar by volatility regime (terciles
of the `vol_percentile_256` feature). It must not run models or replays, or draw anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from strategies.hrm.strategy import OutputRecord
from trader.domain import Bar

#: Bins of the reliability diagram and of the expected calibration error.
CALIBRATION_BINS = 10
#: `vol_percentile_256` is a mid-rank mapped to [-1, 1]; terciles split it into three regimes.
VOL_REGIMES = (
    ("low", -1.01, -1.0 / 3.0),
    ("mid", -1.0 / 3.0, 1.0 / 3.0),
    ("high", 1.0 / 3.0, 1.01),
)


@dataclass(frozen=True, slots=True)
class Calibration:
    """Reliability bins: mean predicted up probability, observed up frequency, count."""

    predicted: list[float]
    observed: list[float]
    counts: list[int]


@dataclass(frozen=True, slots=True)
class Aligned:
    """Model outputs next to what happened on the next bar (log returns)."""

    predicted: np.ndarray  # (n,) predicted next-bar log return
    probability: np.ndarray  # (n,) predicted P(up)
    actual: np.ndarray  # (n,) realised next-bar log return

    @staticmethod
    def join(parts: Sequence[Aligned]) -> Aligned:
        """Several alignments pooled."""
        return Aligned(
            np.concatenate([p.predicted for p in parts]),
            np.concatenate([p.probability for p in parts]),
            np.concatenate([p.actual for p in parts]),
        )


def align(records: Sequence[OutputRecord], bars: Sequence[Bar]) -> Aligned:
    """The records whose next bar exists, with that bar's log return."""
    index = {bar.start_ms: i for i, bar in enumerate(bars)}
    predicted, probability, actual = [], [], []
    for record in records:
        i = index.get(record.bar_start_ms)
        if i is None or i + 1 >= len(bars):
            continue
        predicted.append(record.expected_return)
        probability.append(record.up_probability)
        actual.append(math.log(bars[i + 1].close / bars[i].close))
    return Aligned(np.array(predicted), np.array(probability), np.array(actual))


def prediction_metrics(aligned: Aligned) -> tuple[dict[str, float | int | None], Calibration]:
    """Score predictions against the next bar; MAE in basis points of log return."""
    predicted, probability, actual = aligned.predicted, aligned.probability, aligned.actual
    if actual.shape[0] == 0:
        return {"predictions": 0}, Calibration([], [], [])
    up = actual > 0.0
    moved = actual != 0.0
    metrics: dict[str, float | int | None] = {
        "predictions": int(actual.shape[0]),
        "mae_bp": round(float(np.abs(predicted - actual).mean()) * 1e4, 4),
        "zero_forecast_mae_bp": round(float(np.abs(actual).mean()) * 1e4, 4),
        "direction_accuracy": _round(float(((probability > 0.5) == up)[moved].mean()))
        if moved.any()
        else None,
        "auc": _round(auc(probability[moved], up[moved])),
        "ic": _round(_correlation(predicted, actual)),
    }
    calibration = reliability(probability, up)
    metrics["ece"] = _round(expected_calibration_error(calibration))
    return metrics, calibration


def auc(score: np.ndarray, label: np.ndarray) -> float | None:
    """ROC AUC by the rank-sum (Mann-Whitney) statistic, ties given their mean rank."""
    positives = int(label.sum())
    negatives = int(label.shape[0] - positives)
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(score.shape[0], dtype=np.float64)
    sorted_scores = score[order]
    i = 0
    while i < score.shape[0]:
        j = i
        while j + 1 < score.shape[0] and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[label].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def reliability(probability: np.ndarray, up: np.ndarray) -> Calibration:
    """Equal-width bins of the predicted up probability (empty bins left out)."""
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, CALIBRATION_BINS - 1)
    predicted, observed, counts = [], [], []
    for b in range(CALIBRATION_BINS):
        mask = which == b
        if mask.any():
            predicted.append(float(probability[mask].mean()))
            observed.append(float(up[mask].mean()))
            counts.append(int(mask.sum()))
    return Calibration(predicted, observed, counts)


def expected_calibration_error(calibration: Calibration) -> float | None:
    """Count-weighted mean |predicted - observed| over the reliability bins."""
    total = sum(calibration.counts)
    if total == 0:
        return None
    gaps = [
        n * abs(p - o)
        for p, o, n in zip(
            calibration.predicted, calibration.observed, calibration.counts, strict=True
        )
    ]
    return float(sum(gaps) / total)


def act_statistics(
    records: Sequence[OutputRecord], vol_percentile: Mapping[int, float]
) -> dict[str, dict[str, float | int]]:
    """Mean ACT segments and bar count per volatility regime (bars keyed by start ms)."""
    out: dict[str, dict[str, float | int]] = {}
    for name, lo, hi in VOL_REGIMES:
        steps = [
            r.act_steps
            for r in records
            if r.bar_start_ms in vol_percentile and lo <= vol_percentile[r.bar_start_ms] < hi
        ]
        out[name] = {
            "bars": len(steps),
            "mean_act_steps": round(float(np.mean(steps)), 4) if steps else 0.0,
        }
    every = [r.act_steps for r in records]
    out["all"] = {
        "bars": len(every),
        "mean_act_steps": round(float(np.mean(every)), 4) if every else 0.0,
    }
    return out


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.shape[0] < 3 or float(a.std()) == 0.0 or float(b.std()) == 0.0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 4)

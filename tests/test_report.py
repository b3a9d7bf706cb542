"""Tests for trader.report: the files a report writes, for a normal and for degenerate runs."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from matplotlib import image as mpimg

from trader.metrics import (
    EquityPoint,
    FillPoint,
    Metrics,
    PricePoint,
    compute_metrics,
)
from trader.report import REPORT_SCHEMA_VERSION, ReportPaths, write_report

INTERVAL_MS = 300_000
T0_MS = 1_751_026_200_000  # 2025-06-27 12:10 UTC
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INITIAL_USDT = 10_000.0


def _prices(bars: int, base: float, wiggle: float) -> list[PricePoint]:
    return [
        PricePoint(ts_ms=T0_MS + i * INTERVAL_MS, close=base * (1 + wiggle * math.sin(i / 7)))
        for i in range(bars)
    ]


def _run(bars: int) -> tuple[list[EquityPoint], list[FillPoint], dict[str, list[PricePoint]]]:
    """Two symbols: BTC long, flip to short, exit; ETH short (one BTC buy if too short)."""
    prices = {"BTCUSDT": _prices(bars, 100_000.0, 0.01), "ETHUSDT": _prices(bars, 2_500.0, 0.02)}
    btc = prices["BTCUSDT"]
    fills = (
        [
            FillPoint(btc[5].ts_ms, "BTCUSDT", "buy", 0.01, btc[5].close, 0.55, "market"),
            FillPoint(btc[20].ts_ms, "BTCUSDT", "sell", 0.02, btc[20].close, 1.1, "market"),
            FillPoint(btc[30].ts_ms, "ETHUSDT", "sell", 0.5, 2_500.0, 0.7, "market"),
            FillPoint(btc[40].ts_ms, "BTCUSDT", "buy", 0.01, btc[40].close, 0.55, "stop_loss"),
        ]
        if bars > 40
        else [FillPoint(btc[0].ts_ms, "BTCUSDT", "buy", 0.01, btc[0].close, 0.55, "market")]
    )
    equity = [
        EquityPoint(
            ts_ms=p.ts_ms,
            equity=INITIAL_USDT + 50 * math.sin(i / 9) - i,
            cash=INITIAL_USDT,
            unrealized_pnl=0.0,
            drawdown=0.0,
            gross_exposure_usdt=1_000.0 if 5 <= i < 40 else 0.0,
        )
        for i, p in enumerate(btc)
    ]
    return equity, fills, prices


def _metrics(equity: Sequence[EquityPoint], fills: Sequence[FillPoint]) -> Metrics:
    return compute_metrics(
        equity=equity, fills=fills, initial_equity=INITIAL_USDT, interval_ms=INTERVAL_MS
    )


def _write(
    out_dir: Path,
    equity: Sequence[EquityPoint],
    fills: Sequence[FillPoint],
    prices: Mapping[str, Sequence[PricePoint]],
) -> ReportPaths:
    return write_report(
        out_dir,
        metrics=_metrics(equity, fills),
        equity=equity,
        fills=fills,
        prices=prices,
        title="replay test BTCUSDT,ETHUSDT 5m",
        extra={"run_id": "run-1", "rejected": {"gap": 1}},
    )


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = mpimg.imread(path)
    height, width, channels = pixels.shape
    assert (height > 200, width > 200, channels) == (True, True, 4)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ReportPaths:
    """One report from the synthetic run, shared by the assertions below."""
    equity, fills, prices = _run(60)
    return _write(tmp_path_factory.mktemp("report") / "nested" / "dir", equity, fills, prices)


def test_report_writes_valid_pngs_when_run_has_fills(report: ReportPaths) -> None:
    """Both plots are non-empty, valid PNG images."""
    _assert_png(report.equity_drawdown_png)
    _assert_png(report.price_positions_png)


def test_metrics_json_holds_metrics_and_extra_when_written(report: ReportPaths) -> None:
    """metrics.json carries the schema version, title, the metrics dict and the caller's extra."""
    equity, fills, _ = _run(60)
    payload = json.loads(report.metrics_json.read_text())
    assert payload["schema_version"] == REPORT_SCHEMA_VERSION
    assert payload["title"] == "replay test BTCUSDT,ETHUSDT 5m"
    assert payload["metrics"] == _metrics(equity, fills).as_dict()
    assert payload["metrics"]["trades"] == 2
    assert payload["extra"] == {"run_id": "run-1", "rejected": {"gap": 1}}


def test_report_leaves_no_temporary_files_when_finished(report: ReportPaths) -> None:
    """Only the three report files remain in the directory."""
    names = sorted(p.name for p in report.metrics_json.parent.iterdir())
    assert names == ["equity_drawdown.png", "metrics.json", "price_positions.png"]


@pytest.mark.parametrize("case", ["no-fills", "one-bar", "symbol-without-prices", "empty"], ids=str)
def test_report_is_written_when_run_is_degenerate(tmp_path: Path, case: str) -> None:
    """Empty fills, a single bar, a symbol with no prices or nothing at all still render."""
    equity, fills, prices = _run(60)
    if case == "no-fills":
        fills = []
    elif case == "one-bar":
        equity, fills, prices = _run(1)
    elif case == "symbol-without-prices":
        prices["ETHUSDT"] = []
    else:
        equity, fills, prices = [], [], {}
    paths = _write(tmp_path, equity, fills, prices)
    _assert_png(paths.equity_drawdown_png)
    _assert_png(paths.price_positions_png)
    metrics = json.loads(paths.metrics_json.read_text())["metrics"]
    assert metrics["bars"] == len(equity)


def test_report_rejects_extra_when_it_holds_nan(tmp_path: Path) -> None:
    """NaN is not JSON, so an extra value of NaN fails loudly instead of writing bad JSON."""
    with pytest.raises(ValueError, match="JSON"):
        write_report(
            tmp_path,
            metrics=_metrics([], []),
            equity=[],
            fills=[],
            prices={},
            title="bad",
            extra={"score": math.nan},
        )
    assert not (tmp_path / "metrics.json").exists()

"""The raw-feature kernel against independent reference implementations, and its input checks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from tests.support.candles import load_candles, random_walk_bars
from trader.domain import Bar
from trader.features.kernel import KERNEL_WARMUP_BARS, FeatureKernel
from trader.features.schema import FEATURE_INDEX, MARKET_FEATURES

FIXTURE = Path(__file__).parents[1] / "fixtures" / "BTCUSDT_5m.csv.gz"


@dataclasses.dataclass(frozen=True)
class Series:
    """The fixture as numpy columns plus the kernel's raw rows."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    start_ms: np.ndarray
    rows: np.ndarray  # (N, F)

    def column(self, name: str) -> np.ndarray:
        """The kernel's values of one feature. # (N,)"""
        return self.rows[:, FEATURE_INDEX[name]]


@pytest.fixture(scope="module")
def btc() -> Series:
    """The BTCUSDT fixture run through a fresh kernel."""
    bars = load_candles(FIXTURE, "BTCUSDT", "5")
    kernel = FeatureKernel(interval="5", symbol="BTCUSDT")
    rows = np.array([kernel.update(bar) for bar in bars])
    return Series(
        open=np.array([b.open for b in bars]),
        high=np.array([b.high for b in bars]),
        low=np.array([b.low for b in bars]),
        close=np.array([b.close for b in bars]),
        volume=np.array([b.volume for b in bars]),
        start_ms=np.array([b.start_ms for b in bars]),
        rows=rows,
    )


# -- independent references: plain loops over numpy arrays, textbook formulas ---------------


def _ema(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    alpha = 2.0 / (n + 1)
    out[n - 1] = x[:n].mean()
    for i in range(n, len(x)):
        out[i] = alpha * x[i] + (1.0 - alpha) * out[i - 1]
    return out


def _wilder(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder's average of x[1:], seeded with the mean of its first n values."""
    out = np.full(len(x), np.nan)
    out[n] = x[1 : n + 1].mean()
    for i in range(n + 1, len(x)):
        out[i] = (out[i - 1] * (n - 1) + x[i]) / n
    return out


def _rolling(x: np.ndarray, n: int, fn: Callable[[np.ndarray], float]) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for i in range(n - 1, len(x)):
        out[i] = fn(x[i - n + 1 : i + 1])
    return out


def _log_return(s: Series, k: int) -> np.ndarray:
    out = np.full(len(s.close), np.nan)
    out[k:] = np.log(s.close[k:] / s.close[:-k])
    return out


def _rvol(s: Series, n: int) -> np.ndarray:
    r = np.concatenate(([np.nan], np.diff(np.log(s.close))))
    return _rolling(r, n, lambda w: math.sqrt(float(np.mean(w**2))))


def _rsi(s: Series) -> np.ndarray:
    d = np.concatenate(([np.nan], np.diff(s.close)))
    gain = _wilder(np.where(d > 0, d, 0.0), 14)
    loss = _wilder(np.where(d < 0, -d, 0.0), 14)
    rsi: np.ndarray = 100.0 - 100.0 / (1.0 + gain / loss)
    return (rsi - 50.0) / 50.0


def _atr(s: Series, n: int) -> np.ndarray:
    tr = np.full(len(s.close), np.nan)
    for i in range(1, len(s.close)):
        prev = s.close[i - 1]
        tr[i] = max(s.high[i] - s.low[i], abs(s.high[i] - prev), abs(s.low[i] - prev))
    atr: np.ndarray = _wilder(tr, n) / s.close
    return atr


def _macd(s: Series) -> tuple[np.ndarray, np.ndarray]:
    line = _ema(s.close, 12) - _ema(s.close, 26)
    signal = np.full(len(line), np.nan)
    signal[25:] = _ema(line[25:], 9)
    return line, signal


def _bb_width(s: Series) -> np.ndarray:
    return _rolling(s.close, 20, lambda w: 4.0 * float(np.std(w)) / float(np.mean(w)))


def _volume_z(s: Series) -> np.ndarray:
    return _rolling(s.volume, 20, lambda w: (w[-1] - np.mean(w)) / np.std(w))


def _trend(s: Series) -> np.ndarray:
    c = s.close
    out = np.full(len(c), np.nan)
    for i in range(32, len(c)):
        path = np.abs(np.diff(c[i - 32 : i + 1])).sum()
        out[i] = 2.0 * abs(c[i] - c[i - 32]) / path - 1.0
    return out


def _calendar(s: Series, name: str) -> np.ndarray:
    out = []
    for ms in s.start_ms:
        t = datetime.fromtimestamp(int(ms) // 1000, tz=UTC)
        day = (t.hour * 3600 + t.minute * 60 + t.second) / 86_400
        week = (t.weekday() + day) / 7
        phase = 2 * math.pi * (day if name.startswith("tod") else week)
        out.append(math.sin(phase) if name.endswith("sin") else math.cos(phase))
    return np.array(out)


REFERENCES: dict[str, Callable[[Series], np.ndarray]] = {
    "ret_1": lambda s: _log_return(s, 1),
    "ret_2": lambda s: _log_return(s, 2),
    "ret_4": lambda s: _log_return(s, 4),
    "ret_8": lambda s: _log_return(s, 8),
    "ret_16": lambda s: _log_return(s, 16),
    "mom_5": lambda s: np.exp(_log_return(s, 5)) - 1.0,
    "rvol_16": lambda s: _rvol(s, 16),
    "rvol_64": lambda s: _rvol(s, 64),
    "trend_strength_32": _trend,
    "dev_ema_8": lambda s: s.close / _ema(s.close, 8) - 1.0,
    "dev_ema_21": lambda s: s.close / _ema(s.close, 21) - 1.0,
    "dev_ema_50": lambda s: s.close / _ema(s.close, 50) - 1.0,
    "dev_ema_200": lambda s: s.close / _ema(s.close, 200) - 1.0,
    "dev_sma_50": lambda s: s.close / _rolling(s.close, 50, np.mean) - 1.0,
    "dev_sma_200": lambda s: s.close / _rolling(s.close, 200, np.mean) - 1.0,
    "macd": lambda s: _macd(s)[0] / s.close,
    "macd_signal": lambda s: _macd(s)[1] / s.close,
    "macd_hist": lambda s: (_macd(s)[0] - _macd(s)[1]) / s.close,
    "bb_width_20": _bb_width,
    "rsi_14": _rsi,
    "atr_14": lambda s: _atr(s, 14),
    "atr_20": lambda s: _atr(s, 20),
    "hl_range": lambda s: (s.high - s.low) / s.close,
    "volume_z_20": _volume_z,
    "log_volume": lambda s: np.log1p(s.volume),
    "tod_sin": lambda s: _calendar(s, "tod_sin"),
    "tod_cos": lambda s: _calendar(s, "tod_cos"),
    "dow_sin": lambda s: _calendar(s, "dow_sin"),
    "dow_cos": lambda s: _calendar(s, "dow_cos"),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_feature_matches_reference_when_computed_over_fixture(btc: Series, name: str) -> None:
    """Each feature equals a straightforward reference implementation on real BTCUSDT bars."""
    ours = btc.column(name)
    expected = REFERENCES[name](btc)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    defined = ~np.isnan(expected)
    np.testing.assert_allclose(ours[defined], expected[defined], rtol=1e-9, atol=1e-13)


def test_rank_features_match_reference_when_ranking_kernel_values(btc: Series) -> None:
    """vol_percentile_256 and bb_squeeze rank the kernel's own rvol_16 / bb width correctly."""
    rvol, width = btc.column("rvol_16"), btc.column("bb_width_20")
    pct, squeeze = btc.column("vol_percentile_256"), btc.column("bb_squeeze")
    for i in range(len(rvol)):
        if i < 16 + 255:
            assert math.isnan(pct[i])
        else:
            w = rvol[i - 255 : i + 1]
            below, upto = (w < rvol[i]).sum(), (w <= rvol[i]).sum()
            assert pct[i] == (below + upto - 1) / 255 - 1.0
        if i < 19 + 127:
            assert math.isnan(squeeze[i])
        else:
            assert squeeze[i] == float((width[i - 127 : i + 1] <= width[i]).sum() <= 25.6)


def test_ema_matches_reference_when_read_through_ema_accessor() -> None:
    """`ema(period)` returns the SMA-seeded EMA of close, NaN before `period` bars."""
    bars = random_walk_bars(300, seed=3)
    kernel = FeatureKernel(interval="5")
    close = np.array([b.close for b in bars])
    for period in (8, 21, 50, 200):
        expected = _ema(close, period)
        kernel = FeatureKernel(interval="5")
        for i, bar in enumerate(bars):
            kernel.update(bar)
            if i < period - 1:
                assert math.isnan(kernel.ema(period))
            else:
                assert kernel.ema(period) == pytest.approx(expected[i], rel=1e-12)


def test_ema_raises_when_period_not_tracked() -> None:
    """Asking for an EMA period the kernel does not track is an error, not a NaN."""
    with pytest.raises(ValueError, match="not tracked"):
        FeatureKernel(interval="5").ema(13)


def test_row_is_complete_when_warmup_bars_seen(btc: Series) -> None:
    """Every raw feature is finite from bar KERNEL_WARMUP_BARS on, and some is NaN before."""
    complete = np.isfinite(btc.rows).all(axis=1)
    assert btc.rows.shape[1] == len(MARKET_FEATURES)
    assert not complete[: KERNEL_WARMUP_BARS - 1].any()
    assert complete[KERNEL_WARMUP_BARS - 1 :].all()


def test_values_finite_when_price_and_volume_constant() -> None:
    """A flat market (zero returns, zero variance, zero volume) yields finite, neutral values."""
    kernel = FeatureKernel(interval="1")
    for i in range(KERNEL_WARMUP_BARS + 300):
        bar = Bar("FLAT", "1", i * 60_000, 106953.9, 106953.9, 106953.9, 106953.9, 0.0, 0.0)
        row = kernel.update(bar)
    values = dict(zip(MARKET_FEATURES, row, strict=True))
    assert all(math.isfinite(v) for v in row)
    assert values["rsi_14"] == 0.0
    assert values["volume_z_20"] == 0.0
    assert values["bb_width_20"] == 0.0
    assert values["vol_percentile_256"] == 0.0
    assert values["trend_strength_32"] == -1.0


def test_running_sums_resync_when_a_spike_leaves_the_window() -> None:
    """After a 1000x price spike leaves every window, the sums match a fresh computation."""
    bars = random_walk_bars(1200, seed=5)
    spiked = [
        dataclasses.replace(
            b, open=b.open * 1e3, high=b.high * 1e3, low=b.low * 1e3, close=b.close * 1e3
        )
        if 600 <= i < 610
        else b
        for i, b in enumerate(bars)
    ]
    kernel = FeatureKernel(interval="5")
    rows = [kernel.update(bar) for bar in spiked]
    s = Series(
        open=np.array([b.open for b in spiked]),
        high=np.array([b.high for b in spiked]),
        low=np.array([b.low for b in spiked]),
        close=np.array([b.close for b in spiked]),
        volume=np.array([b.volume for b in spiked]),
        start_ms=np.array([b.start_ms for b in spiked]),
        rows=np.array(rows),
    )
    # The spike leaves the longest window (200) at bar 810; resyncs run every 64 bars after it.
    # Without them the sliding sums keep errors of ~1e-5 relative (bb width) for good.
    for name in ("rvol_16", "rvol_64", "dev_sma_200", "bb_width_20", "trend_strength_32"):
        expected = REFERENCES[name](s)[-150:]
        np.testing.assert_allclose(s.column(name)[-150:], expected, rtol=1e-10, atol=1e-14)


def _with_price(bar: Bar, price: float) -> Bar:
    return dataclasses.replace(bar, open=price, high=price, low=price, close=price)


@pytest.mark.parametrize("spike", [1e150, 1e20])
def test_rows_finite_when_an_absurd_price_spike_leaves_the_windows(spike: float) -> None:
    """A spike that cancels the running close sums gives finite rows, not a ZeroDivisionError."""
    bars = [_with_price(b, 100.0) for b in random_walk_bars(700, seed=3)]
    bars[300] = _with_price(bars[300], spike)
    kernel = FeatureKernel(interval="5")

    rows = [kernel.update(bar) for bar in bars]

    assert all(math.isfinite(v) for row in rows[KERNEL_WARMUP_BARS:] for v in row)
    values = dict(zip(MARKET_FEATURES, rows[320], strict=True))
    # The 20-close sum cancelled to 0 when the spike left it: no width, not a division by 0.
    assert values["bb_width_20"] == 0.0


def test_rows_identical_when_the_same_long_stream_is_replayed() -> None:
    """Two kernels fed the same 100k bars agree bit for bit and stay near the references."""
    bars = random_walk_bars(100_000, seed=11, step=0.004)
    first, second = FeatureKernel(interval="5"), FeatureKernel(interval="5")
    for bar in bars:
        row = first.update(bar)
        assert second.update(bar) == row
    close = np.array([b.close for b in bars[-256:]])
    values = dict(zip(MARKET_FEATURES, row, strict=True))
    r = np.diff(np.log(close))
    assert values["rvol_64"] == pytest.approx(math.sqrt(np.mean(r[-64:] ** 2)), rel=1e-12)
    assert values["dev_sma_200"] == pytest.approx(close[-1] / close[-200:].mean() - 1, rel=1e-9)


def _shift(bar: Bar, **changes: object) -> Bar:
    return dataclasses.replace(bar, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"start_ms": 0}, "does not start after"),
        ({"symbol": "ETHUSDT"}, "fed to the 'TESTUSDT' stream"),
        ({"interval": "15"}, "fed to the '5' stream"),
        ({"close": math.nan}, "invalid prices"),
        ({"low": -1.0}, "invalid prices"),
        ({"volume": -1.0}, "invalid volume"),
    ],
)
def test_update_raises_and_keeps_state_when_bar_is_rejected(
    changes: dict[str, object], message: str
) -> None:
    """A bar out of order, of another stream, or with invalid values raises and changes nothing."""
    bars = random_walk_bars(40, seed=2)
    kernel, control = FeatureKernel(interval="5"), FeatureKernel(interval="5")
    for bar in bars[:30]:
        kernel.update(bar)
        control.update(bar)
    bad = _shift(bars[30], **changes)
    if changes.get("start_ms") == 0:
        bad = _shift(bars[30], start_ms=bars[29].start_ms)
    with pytest.raises(ValueError, match=message):
        kernel.update(bad)
    assert kernel.bars_seen == 30
    assert kernel.last_start_ms == bars[29].start_ms
    assert kernel.update(bars[30]) == control.update(bars[30])


def test_first_bar_binds_symbol_when_none_given() -> None:
    """A kernel created without a symbol takes the first bar's and then refuses others."""
    bars = random_walk_bars(2, seed=1)
    kernel = FeatureKernel(interval="5")
    kernel.update(bars[0])
    assert kernel.symbol == "TESTUSDT"
    with pytest.raises(ValueError, match="fed to the 'TESTUSDT' stream"):
        kernel.update(_shift(bars[1], symbol="XRPUSDT"))

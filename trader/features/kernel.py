"""The per-bar raw-feature kernel: the one definition of every market feature's arithmetic.

Owns the incremental state (rings, running sums, recursive averages) of one (symbol, interval)
stream, the check that its bars arrive in order, and the turning of each confirmed bar into one
raw row in `MARKET_FEATURES` order. Live streaming, replay and whole-history dataset building all
call it, so a feature has exactly one definition. It must not scale, window or build numpy
arrays per bar (numpy calls on vectors this small cost more than the maths), and it must not
read anything but the bars it is fed.

Numerics: every update is O(1) amortised, pure-Python float math, and deterministic (the same
bars give bit-identical rows). Running window sums are recomputed exactly from their rings every
`RESYNC_BARS` bars so rounding cannot drift over long streams. A feature is NaN until its
lookback is filled; from `KERNEL_WARMUP_BARS` bars on, every feature is finite for any valid
bars (positive prices, non-negative volume) because every division is guarded: a running sum
that rounding cancelled to 0 or below (a price spike ~2**53 times its neighbours leaving the
window) gives the feature's no-signal value (0) instead of a division by it, the same in batch
and streaming because both run this code.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort

from trader.domain import Bar, interval_ms

NAN = math.nan
#: Ring length for closes, squared returns, absolute changes and volumes: a power of two above
#: the longest lookback (SMA-200 needs c_{t-200}), so an index is `i & _MASK`.
_RING = 256
_MASK = _RING - 1
#: Window sums are recomputed exactly from the rings once every this many bars.
RESYNC_BARS = 64
#: The close EMAs tracked; 12 and 26 feed MACD, the others are exposed through `ema()`.
EMA_PERIODS: tuple[int, ...] = (8, 12, 21, 26, 50, 200)
_EMA_SLOT = {period: k for k, period in enumerate(EMA_PERIODS)}
_EMA_ALPHA: tuple[float, ...] = tuple(2.0 / (period + 1) for period in EMA_PERIODS)
_A8, _A12, _A21, _A26, _A50, _A200 = _EMA_ALPHA
_LONGEST_EMA = max(EMA_PERIODS)
_MACD_SIGNAL = 9
_SIGNAL_ALPHA = 2.0 / (_MACD_SIGNAL + 1)
_RSI_N = 14
_VOL_PCT_N = 256
_SQUEEZE_N = 128
_SQUEEZE_QUANTILE = 0.2
_TREND_N = 32
_BB_N = 20
_VOLZ_N = 20
_STD_FLOOR = 1e-12  # below this a window's sd is treated as 0 (a flat window), not divided by
_DAY_MS = 86_400_000
_WEEK_MS = 7 * _DAY_MS
_MONDAY_OFFSET_MS = 3 * _DAY_MS  # 1970-01-01 was a Thursday: shift so phase 0 is Monday 00:00
_TWO_PI = 2.0 * math.pi
#: Bars until every raw feature is defined: rvol_16 is first defined on bar 17 (index 16) and
#: vol_percentile_256 then needs 256 of its values.
KERNEL_WARMUP_BARS = 16 + _VOL_PCT_N


class _RollingRank:
    """The last `n` values kept sorted (bisect-insort), for a rank in O(log n + n/memmove)."""

    __slots__ = ("_n", "_pos", "_ring", "_sorted")

    def __init__(self, n: int) -> None:
        self._n = n
        self._ring = [0.0] * n
        self._sorted: list[float] = []
        self._pos = 0

    def push(self, x: float) -> tuple[int, int] | None:
        """Add `x`, dropping the oldest; return (#values < x, #values <= x) once n are held."""
        s = self._sorted
        pos = self._pos
        if len(s) == self._n:
            del s[bisect_left(s, self._ring[pos])]
        self._ring[pos] = x
        self._pos = pos + 1 if pos + 1 < self._n else 0
        insort(s, x)
        if len(s) < self._n:
            return None
        return bisect_left(s, x), bisect_right(s, x)


def _ring_fsum(ring: list[float], i: int, n: int) -> float:
    """Exactly rounded sum of the n ring entries ending at stream index i."""
    start = (i - n + 1) & _MASK
    end = i & _MASK
    if start <= end:
        return math.fsum(ring[start : end + 1])
    return math.fsum(ring[start:] + ring[: end + 1])


def _ring_m2(ring: list[float], i: int, n: int, total: float) -> float:
    """Sum of squared deviations from the mean of the n ring entries ending at i (two-pass)."""
    mean = total / n
    return math.fsum((ring[(i - k) & _MASK] - mean) ** 2 for k in range(n))


def _calendar(start_ms: int) -> tuple[float, float, float, float]:
    """Time-of-day and day-of-week phases of a bar start (UTC) as sine/cosine pairs."""
    day = _TWO_PI * (start_ms % _DAY_MS) / _DAY_MS
    week = _TWO_PI * ((start_ms + _MONDAY_OFFSET_MS) % _WEEK_MS) / _WEEK_MS
    return math.sin(day), math.cos(day), math.sin(week), math.cos(week)


class FeatureKernel:
    """Incremental raw market features of one (symbol, interval) stream of confirmed bars.

    Args:
        interval: the Bybit interval code every bar must carry.
        symbol: the symbol every bar must carry; None binds it to the first bar's.

    Raises:
        ValueError: the interval code is unknown.
    """

    __slots__ = (
        "_absd",
        "_ad_sum",
        "_bb_m2",
        "_closes",
        "_count",
        "_ema",
        "_gain",
        "_interval",
        "_last_start_ms",
        "_loss",
        "_macd_sig",
        "_sma",
        "_sq",
        "_sq16",
        "_sq64",
        "_squeeze_rank",
        "_symbol",
        "_tr14",
        "_tr20",
        "_vol_m2",
        "_vol_rank",
        "_vol_sum",
        "_volumes",
    )

    def __init__(self, *, interval: str, symbol: str | None = None) -> None:
        interval_ms(interval)  # raises ValueError for an unknown code
        self._interval = interval
        self._symbol = symbol
        self._last_start_ms: int | None = None
        self._count = 0
        self._closes = [0.0] * _RING
        # Entry 0 of these rings stays 0.0: bar 0 has no return, so it adds nothing to a sum.
        self._sq = [0.0] * _RING
        self._absd = [0.0] * _RING
        self._volumes = [0.0] * _RING
        self._sq16 = 0.0
        self._sq64 = 0.0
        self._ad_sum = 0.0
        self._vol_rank = _RollingRank(_VOL_PCT_N)
        self._ema = [NAN] * len(EMA_PERIODS)
        self._sma = [0.0, 0.0, 0.0]  # running sums of the last 20, 50, 200 closes
        self._bb_m2 = 0.0
        self._macd_sig = 0.0  # sum of the first 9 MACD values, then the signal EMA
        self._squeeze_rank = _RollingRank(_SQUEEZE_N)
        self._gain = 0.0  # Wilder averages; sums of the first n inputs while seeding
        self._loss = 0.0
        self._tr14 = 0.0
        self._tr20 = 0.0
        self._vol_sum = 0.0
        self._vol_m2 = 0.0

    @property
    def bars_seen(self) -> int:
        """Bars accepted so far."""
        return self._count

    @property
    def last_start_ms(self) -> int | None:
        """Start of the newest accepted bar, None before the first."""
        return self._last_start_ms

    @property
    def symbol(self) -> str | None:
        """The symbol this stream is bound to (None until the first bar if not given)."""
        return self._symbol

    def ema(self, period: int) -> float:
        """The newest EMA of close for a tracked period; NaN before `period` bars.

        Raises:
            ValueError: the period is not one of `EMA_PERIODS`.
        """
        slot = _EMA_SLOT.get(period)
        if slot is None:
            raise ValueError(f"EMA period {period} is not tracked; tracked: {EMA_PERIODS}")
        return self._ema[slot]

    def update(self, bar: Bar) -> tuple[float, ...]:
        """Take the next confirmed bar and return its raw row in `MARKET_FEATURES` order.

        Raises:
            ValueError: the bar is of another symbol or interval, does not start after the
                previous bar, or has non-finite or non-positive prices or negative volume.
                The kernel's state is unchanged when it raises.
        """
        self._check(bar)
        i = self._count
        c = bar.close
        prev = self._closes[(i - 1) & _MASK]  # stale when i == 0; every use is guarded
        self._closes[i & _MASK] = c
        row = (
            *self._returns(i, c, prev),
            *self._averages(i, c),
            *self._oscillators(i, c, prev, bar.high, bar.low),
            *self._activity(i, c, bar.high, bar.low, bar.volume),
            *_calendar(bar.start_ms),
        )
        if i % RESYNC_BARS == RESYNC_BARS - 1:
            self._resync(i)
        self._count = i + 1
        self._last_start_ms = bar.start_ms
        return row

    def _check(self, bar: Bar) -> None:
        if self._symbol is not None and bar.symbol != self._symbol:
            raise ValueError(f"bar of {bar.symbol!r} fed to the {self._symbol!r} stream")
        if bar.interval != self._interval:
            raise ValueError(f"{bar.interval!r} bar fed to the {self._interval!r} stream")
        last = self._last_start_ms
        if last is not None and bar.start_ms <= last:
            raise ValueError(
                f"{bar.symbol} bar at {bar.start_ms} does not start after the last ({last})"
            )
        # NaN fails every comparison, so this also rejects NaN; a bad value would poison the
        # recursive averages for good, hence the check despite the parsers' validation.
        if not (0.0 < bar.low <= bar.high < math.inf and 0.0 < bar.close < math.inf):
            raise ValueError(f"{bar.symbol} bar at {bar.start_ms} has invalid prices")
        if not 0.0 <= bar.volume < math.inf:
            raise ValueError(f"{bar.symbol} bar at {bar.start_ms} has invalid volume")
        self._symbol = bar.symbol

    def _returns(self, i: int, c: float, prev: float) -> tuple[float, ...]:
        """ret_1..ret_16, mom_5, rvol_16, rvol_64, trend_strength_32, vol_percentile_256."""
        closes = self._closes
        if i == 0:
            return (NAN,) * 10
        r1 = math.log(c / prev)
        sq = r1 * r1
        ad = abs(c - prev)
        j = i & _MASK
        self._sq[j] = sq
        self._absd[j] = ad
        s16 = self._sq16 + sq
        s64 = self._sq64 + sq
        sad = self._ad_sum + ad
        if i >= 16:
            s16 -= self._sq[(i - 16) & _MASK]
        if i >= 64:
            s64 -= self._sq[(i - 64) & _MASK]
        if i >= _TREND_N:
            sad -= self._absd[(i - _TREND_N) & _MASK]
        self._sq16 = s16
        self._sq64 = s64
        self._ad_sum = sad
        ret2 = math.log(c / closes[(i - 2) & _MASK]) if i >= 2 else NAN
        ret4 = math.log(c / closes[(i - 4) & _MASK]) if i >= 4 else NAN
        ret8 = math.log(c / closes[(i - 8) & _MASK]) if i >= 8 else NAN
        mom5 = c / closes[(i - 5) & _MASK] - 1.0 if i >= 5 else NAN
        if i < 16:
            return (r1, ret2, ret4, ret8, NAN, mom5, NAN, NAN, NAN, NAN)
        ret16 = math.log(c / closes[(i - 16) & _MASK])
        # A sliding sum of squares can round a hair below 0 on a flat window: floor it.
        rv16 = math.sqrt(s16 / 16.0) if s16 > 0.0 else 0.0
        rv64 = (math.sqrt(s64 / 64.0) if s64 > 0.0 else 0.0) if i >= 64 else NAN
        trend = NAN
        if i >= _TREND_N:
            # sad can only be 0 on a flat window, where the move is 0 too: no trend.
            eff = min(abs(c - closes[(i - _TREND_N) & _MASK]) / sad, 1.0) if sad > 0.0 else 0.0
            trend = 2.0 * eff - 1.0
        ranks = self._vol_rank.push(rv16)
        # Mid-rank percentile: ties (a flat market) land in the middle, not at an extreme.
        vol_pct = NAN if ranks is None else (ranks[0] + ranks[1] - 1) / (_VOL_PCT_N - 1) - 1.0
        return (r1, ret2, ret4, ret8, ret16, mom5, rv16, rv64, trend, vol_pct)

    def _averages(self, i: int, c: float) -> tuple[float, ...]:
        """EMA and SMA deviations, MACD line/signal/histogram, Bollinger width and squeeze."""
        closes = self._closes
        emas = self._ema
        if i > _LONGEST_EMA:
            # Steady state, unrolled (this runs on all but the first 200 bars); the same
            # `e += alpha * (c - e)` as the warm-up loop below.
            emas[0] += _A8 * (c - emas[0])
            emas[1] += _A12 * (c - emas[1])
            emas[2] += _A21 * (c - emas[2])
            emas[3] += _A26 * (c - emas[3])
            emas[4] += _A50 * (c - emas[4])
            emas[5] += _A200 * (c - emas[5])
        else:
            for k, period in enumerate(EMA_PERIODS):
                if i >= period:
                    emas[k] += _EMA_ALPHA[k] * (c - emas[k])
                elif i == period - 1:  # seed with the SMA of the first `period` closes
                    emas[k] = math.fsum(closes[:period]) / period  # i < _RING: no wrap yet
        sums = self._sma
        sums[0] += c - closes[(i - 20) & _MASK] if i >= 20 else c
        sums[1] += c - closes[(i - 50) & _MASK] if i >= 50 else c
        sums[2] += c - closes[(i - 200) & _MASK] if i >= 200 else c
        e8, e21, e50, e200 = emas[0], emas[2], emas[4], emas[5]
        # A sum of positive closes is only <= 0 when rounding cancelled it (see `_bollinger`):
        # then the deviation is reported as none rather than divided by it.
        sma50, sma200 = sums[1] / 50.0, sums[2] / 200.0
        return (
            c / e8 - 1.0 if i >= 7 else NAN,
            c / e21 - 1.0 if i >= 20 else NAN,
            c / e50 - 1.0 if i >= 49 else NAN,
            c / e200 - 1.0 if i >= 199 else NAN,
            NAN if i < 49 else c / sma50 - 1.0 if sma50 > 0.0 else 0.0,
            NAN if i < 199 else c / sma200 - 1.0 if sma200 > 0.0 else 0.0,
            *self._macd(i, c),
            *self._bollinger(i, c),
        )

    def _macd(self, i: int, c: float) -> tuple[float, float, float]:
        if i < 25:
            return NAN, NAN, NAN
        line = self._ema[1] - self._ema[3]
        first = 25 + _MACD_SIGNAL - 1  # the signal is seeded by the SMA of 9 MACD values
        if i < first:
            self._macd_sig += line
            return line / c, NAN, NAN
        if i == first:
            sig = (self._macd_sig + line) / _MACD_SIGNAL
        else:
            sig = self._macd_sig + _SIGNAL_ALPHA * (line - self._macd_sig)
        self._macd_sig = sig
        return line / c, sig / c, (line - sig) / c

    def _bollinger(self, i: int, c: float) -> tuple[float, float]:
        if i < _BB_N - 1:
            return NAN, NAN
        total = self._sma[0]
        mean = total / _BB_N
        if i == _BB_N - 1:
            self._bb_m2 = _ring_m2(self._closes, i, _BB_N, total)
        else:
            # Sliding Welford update: exact for a flat window, no sum-of-squares cancellation.
            old = self._closes[(i - _BB_N) & _MASK]
            old_mean = (total - c + old) / _BB_N
            self._bb_m2 += (c - old) * (c - mean + old - old_mean)
        m2 = self._bb_m2
        sd = math.sqrt(m2 / _BB_N) if m2 > 0.0 else 0.0
        # A sum of positive closes is only <= 0 when a spike ~2**53 times the other closes
        # left the window and took them with it in rounding (until the next resync): report
        # the flat-window width rather than divide by it.
        width = 4.0 * sd / mean if mean > 0.0 else 0.0
        ranks = self._squeeze_rank.push(width)
        squeeze = NAN if ranks is None else float(ranks[1] <= _SQUEEZE_QUANTILE * _SQUEEZE_N)
        return width, squeeze

    def _oscillators(
        self, i: int, c: float, prev: float, high: float, low: float
    ) -> tuple[float, float, float]:
        """rsi_14, atr_14, atr_20 (Wilder averages seeded with the mean of their first n)."""
        if i == 0:
            return NAN, NAN, NAN
        d = c - prev
        gain = d if d > 0.0 else 0.0
        loss = -d if d < 0.0 else 0.0
        tr = high - low
        up = abs(high - prev)
        down = abs(low - prev)
        if up > tr:
            tr = up
        if down > tr:
            tr = down
        if i > 20:
            # Steady state, inlined: the same arithmetic as `_wilder` past its seed.
            self._gain = (self._gain * 13.0 + gain) / 14.0
            self._loss = (self._loss * 13.0 + loss) / 14.0
            self._tr14 = (self._tr14 * 13.0 + tr) / 14.0
            self._tr20 = (self._tr20 * 19.0 + tr) / 20.0
        else:
            self._gain = _wilder(self._gain, gain, _RSI_N, i)
            self._loss = _wilder(self._loss, loss, _RSI_N, i)
            self._tr14 = _wilder(self._tr14, tr, 14, i)
            self._tr20 = _wilder(self._tr20, tr, 20, i)
        rsi = NAN
        if i >= _RSI_N:
            g, lo = self._gain, self._loss
            # (RSI - 50) / 50 == (g - l) / (g + l); a price that never moved is neutral.
            rsi = (g - lo) / (g + lo) if g + lo > 0.0 else 0.0
        atr14 = self._tr14 / c if i >= 14 else NAN
        atr20 = self._tr20 / c if i >= 20 else NAN
        return rsi, atr14, atr20

    def _activity(
        self, i: int, c: float, high: float, low: float, volume: float
    ) -> tuple[float, float, float]:
        """hl_range, volume_z_20, log_volume."""
        vols = self._volumes
        j = i & _MASK
        vols[j] = volume
        n = _VOLZ_N
        total = self._vol_sum + volume
        z = NAN
        if i >= n:
            old = vols[(i - n) & _MASK]
            total -= old
            old_mean = (total - volume + old) / n
            self._vol_m2 += (volume - old) * (volume - total / n + old - old_mean)
        elif i == n - 1:
            self._vol_m2 = _ring_m2(vols, i, n, total)
        self._vol_sum = total
        if i >= n - 1:
            m2 = self._vol_m2
            sd = math.sqrt(m2 / n) if m2 > 0.0 else 0.0
            z = (volume - total / n) / sd if sd > _STD_FLOOR else 0.0
        return (high - low) / c, z, math.log1p(volume)

    def _resync(self, i: int) -> None:
        """Recompute every running window sum exactly from its ring (drift control)."""
        closes = self._closes
        self._sq16 = _ring_fsum(self._sq, i, 16)
        self._sq64 = _ring_fsum(self._sq, i, 64)
        self._ad_sum = _ring_fsum(self._absd, i, _TREND_N)
        self._sma = [_ring_fsum(closes, i, n) for n in (20, 50, 200)]
        self._bb_m2 = _ring_m2(closes, i, _BB_N, self._sma[0])
        self._vol_sum = _ring_fsum(self._volumes, i, _VOLZ_N)
        self._vol_m2 = _ring_m2(self._volumes, i, _VOLZ_N, self._vol_sum)


def _wilder(state: float, x: float, n: int, i: int) -> float:
    """One step of a Wilder average over inputs from bar 1 on: sum while seeding, then smooth."""
    if i < n:
        return state + x
    if i == n:
        return (state + x) / n
    return (state * (n - 1) + x) / n

"""Performance metrics of a run and their terminal summary.

Owns the plain input records a run is judged on (`EquityPoint`, `FillPoint`, `PricePoint`),
round-trip reconstruction from fills (`reconstruct_trades`), the `Metrics` summary
(`compute_metrics`) and its human rendering (`render_summary`). Replay, `trader report` and
`trader evaluate` all build these records (from DB rows or in memory) and call the same functions,
so every path reports identical numbers.

It must not touch a database, the engine, the broker or any file: everything here is a pure
function over plain data. Plots and `metrics.json` live in `trader.report`.

Conventions:
    * Equity has one point per bar close; `initial_equity` is prepended as the value before the
      first bar, so the first bar's return and drawdown count.
    * Returns are per-bar simple returns. Annualisation uses
      `periods_per_year = 365 * 24 * 3600 * 1000 / interval_ms` because crypto trades 24/7
      (no 252-day calendar).
    * Undefined figures are None, never NaN or inf (`as_dict()` is strict-JSON safe).
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Milliseconds in a 365-day year: crypto has no weekends or holidays.
MS_PER_YEAR = 365 * 24 * 3600 * 1000

#: A standard deviation of per-bar returns below this is float noise on a constant series,
#: treated as zero variance (Sharpe/Sortino undefined) rather than a huge ratio.
_ZERO_VARIANCE = 1e-12

#: exp() of anything above this overflows a float; annualising a short, lucky run gets there.
_MAX_EXP = math.log(sys.float_info.max)

#: Decimal places per field in `Metrics.as_dict()`; all other floats get `_DEFAULT_DECIMALS`.
_DECIMALS = {"sharpe": 4, "sortino": 4, "calmar": 4, "periods_per_year": 4}
_DEFAULT_DECIMALS = 6

_SIDES = ("buy", "sell")


def _require_finite(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"{owner}.{name} must be finite, got {value!r}")


@dataclass(frozen=True, slots=True)
class EquityPoint:
    """Account state at one bar close (one `equity` row); all amounts in USDT.

    `drawdown` is whatever the engine recorded; metrics recompute drawdown from `equity`.
    """

    ts_ms: int
    equity: float
    cash: float
    unrealized_pnl: float
    drawdown: float
    gross_exposure_usdt: float = 0.0

    def __post_init__(self) -> None:
        _require_finite(
            "EquityPoint",
            equity=self.equity,
            cash=self.cash,
            unrealized_pnl=self.unrealized_pnl,
            drawdown=self.drawdown,
            gross_exposure_usdt=self.gross_exposure_usdt,
        )


@dataclass(frozen=True, slots=True)
class FillPoint:
    """One execution: `side` is "buy" or "sell", `qty` positive, `price` and `fee` in USDT."""

    ts_ms: int
    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    reason: str

    def __post_init__(self) -> None:
        _require_finite("FillPoint", qty=self.qty, price=self.price, fee=self.fee)
        if self.side not in _SIDES:
            raise ValueError(f"FillPoint.side must be one of {_SIDES}, got {self.side!r}")
        if self.qty <= 0 or self.price <= 0:
            raise ValueError(f"FillPoint qty and price must be positive: {self!r}")


@dataclass(frozen=True, slots=True)
class PricePoint:
    """One symbol's close price at `ts_ms` (for plots)."""

    ts_ms: int
    close: float

    def __post_init__(self) -> None:
        _require_finite("PricePoint", close=self.close)


class Direction(StrEnum):
    """Which way a round trip was positioned."""

    LONG = "long"
    SHORT = "short"


class FillRole(StrEnum):
    """What a fill did to its symbol's net position."""

    ENTRY = "entry"  # opened from flat or added in the same direction
    EXIT = "exit"  # reduced or closed to flat
    FLIP = "flip"  # closed and opened the other way in one fill


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """A closed trade: one symbol's net position from flat back to flat (or through zero).

    `pnl_usdt` is net of `fees_usdt`; a flipping fill's fee is split pro rata by quantity.
    """

    symbol: str
    direction: Direction
    entry_ms: int
    exit_ms: int
    pnl_usdt: float
    fees_usdt: float


@dataclass(frozen=True, slots=True)
class PositionStep:
    """A fill with its role and the symbol's signed net quantity right after it."""

    fill: FillPoint
    role: FillRole
    qty_after: float


@dataclass(frozen=True, slots=True)
class TradeLedger:
    """Fills replayed through a netting position per symbol.

    Attributes:
        round_trips: closed round trips in the order they closed.
        steps: one per fill, in input order.
        open_positions: (symbol, signed qty) still open after the last fill, sorted by symbol.
    """

    round_trips: tuple[RoundTrip, ...]
    steps: tuple[PositionStep, ...]
    open_positions: tuple[tuple[str, float], ...]


@dataclass(slots=True)
class _OpenTrip:
    direction: Direction
    entry_ms: int
    cash_flow: Decimal = Decimal(0)  # sells add, buys subtract: the trip's PnL once flat
    fees: Decimal = Decimal(0)

    def add(self, signed_qty: Decimal, price: Decimal, fee: Decimal) -> None:
        self.cash_flow -= signed_qty * price
        self.fees += fee


def _dec(value: float) -> Decimal:
    # repr() is the shortest decimal that round-trips, i.e. the value the exchange sent; netting
    # in Decimal makes 0.1 + 0.2 - 0.3 exactly flat, where float leaves a 5e-17 ghost position.
    # float() first: numpy scalars repr as "np.float64(0.1)".
    return Decimal(repr(float(value)))


def reconstruct_trades(fills: Sequence[FillPoint]) -> TradeLedger:
    """Net fills per symbol into round trips.

    Args:
        fills: executions in the order they happened (as stored); any symbols, mixed.

    Returns:
        The closed round trips, each fill's role and resulting position, and what is left open.

    Raises:
        ValueError: fills are not in non-decreasing `ts_ms` order.
    """
    positions: dict[str, Decimal] = {}
    open_trips: dict[str, _OpenTrip] = {}
    closed: list[RoundTrip] = []
    steps: list[PositionStep] = []
    last_ms: int | None = None
    for fill in fills:
        if last_ms is not None and fill.ts_ms < last_ms:
            raise ValueError(f"fills out of order at ts_ms={fill.ts_ms} (after {last_ms})")
        last_ms = fill.ts_ms
        qty, price, fee = _dec(fill.qty), _dec(fill.price), _dec(fill.fee)
        sign = Decimal(1) if fill.side == "buy" else Decimal(-1)
        before = positions.get(fill.symbol, Decimal(0))
        closing = min(qty, abs(before)) if before * sign < 0 else Decimal(0)
        opening = qty - closing
        closing_fee = fee * closing / qty
        if closing:
            trip = open_trips[fill.symbol]
            trip.add(sign * closing, price, closing_fee)
            if closing == abs(before):
                del open_trips[fill.symbol]
                closed.append(_close(trip, fill))
        if opening:
            direction = Direction.LONG if sign > 0 else Direction.SHORT
            trip = open_trips.setdefault(fill.symbol, _OpenTrip(direction, fill.ts_ms))
            trip.add(sign * opening, price, fee - closing_fee)
        after = before + sign * qty
        positions[fill.symbol] = after
        role = FillRole.ENTRY if not closing else FillRole.FLIP if opening else FillRole.EXIT
        steps.append(PositionStep(fill=fill, role=role, qty_after=float(after)))
    still_open = tuple((s, float(q)) for s, q in sorted(positions.items()) if q)
    return TradeLedger(round_trips=tuple(closed), steps=tuple(steps), open_positions=still_open)


def _close(trip: _OpenTrip, fill: FillPoint) -> RoundTrip:
    return RoundTrip(
        symbol=fill.symbol,
        direction=trip.direction,
        entry_ms=trip.entry_ms,
        exit_ms=fill.ts_ms,
        pnl_usdt=float(trip.cash_flow - trip.fees),
        fees_usdt=float(trip.fees),
    )


def drawdown_series(values: Sequence[float] | NDArray[np.float64]) -> NDArray[np.float64]:
    """Return each value's fractional drop below its running peak (0 at a new high).

    Args:
        values: equity values in time order; must be positive for the fraction to mean anything.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return array
    peaks = np.maximum.accumulate(array)
    return np.asarray(1.0 - array / peaks, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Metrics:
    """Summary of one run. Ratios are fractions (0.05 = 5%); money is USDT; None = undefined.

    `win_rate` and `profit_factor` cover closed round trips only (PnL net of fees);
    `profit_factor` is None when there is no losing trade (it would be infinite or 0/0).
    `turnover` is `turnover_usdt` as a multiple of mean equity; `exposure` is the fraction of
    bars with non-zero gross exposure. Drawdown durations count bars strictly below a prior
    peak (the start, `initial_equity`, counts as a peak).
    """

    initial_equity: float
    final_equity: float
    total_return: float
    pnl_usdt: float
    annualised_return: float | None
    sharpe: float | None
    sortino: float | None
    calmar: float | None
    max_drawdown: float
    max_drawdown_duration_bars: int
    max_drawdown_duration_ms: int
    trades: int
    open_positions: int
    win_rate: float | None
    profit_factor: float | None
    fills: int
    turnover_usdt: float
    turnover: float | None
    exposure: float | None
    fees_usdt: float
    bars: int
    start_ms: int | None
    end_ms: int | None
    interval_ms: int
    periods_per_year: float

    def as_dict(self) -> dict[str, float | int | None]:
        """Return the fields as a strict-JSON-safe dict, floats rounded per field."""
        out: dict[str, float | int | None] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float):
                digits = _DECIMALS.get(field.name, _DEFAULT_DECIMALS)
                value = round(value, digits) if math.isfinite(value) else None
            out[field.name] = value
        return out


def compute_metrics(
    *,
    equity: Sequence[EquityPoint],
    fills: Sequence[FillPoint],
    initial_equity: float,
    interval_ms: int,
) -> Metrics:
    """Compute a run's performance metrics from its equity curve and fills.

    Args:
        equity: one point per bar close, in time order; the first is after the first bar.
        fills: executions in the order they happened.
        initial_equity: account equity before the first bar (USDT, positive).
        interval_ms: bar length, used to annualise (365-day years).

    Returns:
        The metrics; figures that are undefined for the input (e.g. Sharpe of a flat curve)
        are None.

    Raises:
        ValueError: non-positive `initial_equity` or `interval_ms`, or fills out of order.
    """
    if not (math.isfinite(initial_equity) and initial_equity > 0):
        raise ValueError(f"initial_equity must be positive, got {initial_equity!r}")
    if interval_ms <= 0:
        raise ValueError(f"interval_ms must be positive, got {interval_ms!r}")
    periods_per_year = MS_PER_YEAR / interval_ms
    values = np.array([initial_equity, *(p.equity for p in equity)], dtype=np.float64)
    final_equity = float(values[-1])
    returns = _returns(values)
    sharpe, sortino = _sharpe_sortino(returns, periods_per_year)
    annualised = _annualised_return(final_equity / initial_equity, len(equity), periods_per_year)
    # Peaks start at initial_equity > 0, so the fraction is defined even if equity goes negative.
    max_drawdown = float(drawdown_series(values).max())
    first_ms = equity[0].ts_ms - interval_ms if equity else 0
    dd_bars, dd_ms = _longest_underwater(values, [first_ms, *(p.ts_ms for p in equity)])
    ledger = reconstruct_trades(fills)
    pnls = [trip.pnl_usdt for trip in ledger.round_trips]
    turnover_usdt = math.fsum(abs(f.qty * f.price) for f in fills)
    mean_equity = float(values[1:].mean()) if equity else 0.0
    return Metrics(
        initial_equity=initial_equity,
        final_equity=final_equity,
        total_return=final_equity / initial_equity - 1.0,
        pnl_usdt=final_equity - initial_equity,
        annualised_return=annualised,
        sharpe=sharpe,
        sortino=sortino,
        calmar=annualised / max_drawdown if annualised is not None and max_drawdown > 0 else None,
        max_drawdown=max_drawdown,
        max_drawdown_duration_bars=dd_bars,
        max_drawdown_duration_ms=dd_ms,
        trades=len(pnls),
        open_positions=len(ledger.open_positions),
        win_rate=sum(p > 0 for p in pnls) / len(pnls) if pnls else None,
        profit_factor=_profit_factor(pnls),
        fills=len(fills),
        turnover_usdt=turnover_usdt,
        turnover=turnover_usdt / mean_equity if mean_equity > 0 else None,
        exposure=(sum(p.gross_exposure_usdt != 0 for p in equity) / len(equity))
        if equity
        else None,
        fees_usdt=float(sum((_dec(f.fee) for f in fills), Decimal(0))),
        bars=len(equity),
        start_ms=equity[0].ts_ms if equity else None,
        end_ms=equity[-1].ts_ms if equity else None,
        interval_ms=interval_ms,
        periods_per_year=periods_per_year,
    )


def _returns(values: NDArray[np.float64]) -> NDArray[np.float64] | None:
    # A return off a non-positive base is meaningless (the account is gone); report None.
    if np.any(values[:-1] <= 0):
        return None
    return np.asarray(values[1:] / values[:-1] - 1.0, dtype=np.float64)


def _sharpe_sortino(
    returns: NDArray[np.float64] | None, periods_per_year: float
) -> tuple[float | None, float | None]:
    # Two returns are the minimum for a sample standard deviation (ddof=1).
    if returns is None or returns.size < 2:
        return None, None
    scale = math.sqrt(periods_per_year)
    mean = float(returns.mean())
    std = float(returns.std(ddof=1))
    sharpe = mean / std * scale if std > _ZERO_VARIANCE else None
    # Downside deviation against a 0 target over all bars (Sortino & Price), not just losers.
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    sortino = mean / downside * scale if downside > _ZERO_VARIANCE else None
    return sharpe, sortino


def _annualised_return(growth: float, bars: int, periods_per_year: float) -> float | None:
    """Compound annual growth rate; None with no bars or when it overflows a float."""
    if bars == 0:
        return None
    if growth <= 0:
        return -1.0
    exponent = math.log(growth) * periods_per_year / bars
    return math.expm1(exponent) if exponent < _MAX_EXP else None


def _longest_underwater(values: NDArray[np.float64], ts_ms: Sequence[int]) -> tuple[int, int]:
    """Longest run of points strictly below a prior peak, in points and in ms since the peak."""
    peak, peak_ms = float(values[0]), ts_ms[0]
    run = best_bars = best_ms = 0
    for value, now_ms in zip(values[1:].tolist(), ts_ms[1:], strict=True):
        if value >= peak:
            peak, peak_ms, run = value, now_ms, 0
            continue
        run += 1
        best_bars = max(best_bars, run)
        best_ms = max(best_ms, now_ms - peak_ms)
    return best_bars, best_ms


def _profit_factor(pnls: Sequence[float]) -> float | None:
    gross_loss = -math.fsum(p for p in pnls if p < 0)
    if gross_loss <= 0:
        return None
    return math.fsum(p for p in pnls if p > 0) / gross_loss


#: The summary's value for a run whose rejected inputs were never stored (a live run).
NOT_RECORDED = "not recorded"


def render_summary(
    *,
    metrics: Metrics,
    bars: int,
    rejected: Mapping[str, int] | None,
    decisions: Mapping[str, int],
    title: str,
    color: bool = False,
) -> str:
    """Render a compact, human summary of a run for the terminal or a log.

    Args:
        metrics: the run's metrics.
        bars: bars the engine processed (all symbols), which may exceed `metrics.bars`.
        rejected: rejected input bars or frames, by reason; None when never recorded.
        decisions: strategy decisions, by action.
        title: first line of the summary.
        color: emit ANSI styles; pass False for non-TTY output to get plain text.

    Returns:
        The summary text, ending in a newline.
    """
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=110,
        force_terminal=color,
        color_system="standard" if color else None,
        no_color=not color,
        highlight=False,
        emoji=False,
        markup=False,
        force_jupyter=False,
        force_interactive=False,
    )
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in _summary_rows(metrics, bars, rejected, decisions):
        table.add_row(label, value)
    console.print(Text(title, style="bold underline"))
    console.print(table)
    # Rich pads every line to the table width; trailing blanks are noise in logs and diffs.
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


def _summary_rows(
    m: Metrics, bars: int, rejected: Mapping[str, int] | None, decisions: Mapping[str, int]
) -> list[tuple[str, str | Text]]:
    pnl_style = "green" if m.pnl_usdt > 0 else "red" if m.pnl_usdt < 0 else ""
    pnl = Text(f"{m.pnl_usdt:+,.2f} USDT ({m.total_return:+.2%})", style=pnl_style)
    pnl.append(f"  final equity {m.final_equity:,.2f}")
    trades = f"{m.trades} closed, {m.open_positions} open"
    trades += f"; win rate {_opt(m.win_rate, '.1%')}, profit factor {_opt(m.profit_factor, '.2f')}"
    return [
        ("bars processed", f"{bars:,} ({m.bars:,} equity points{_period(m)})"),
        ("rejected inputs", NOT_RECORDED if rejected is None else _counts(rejected)),
        ("decisions", _counts(decisions)),
        ("trades", trades),
        (
            "fills",
            f"{m.fills:,}; turnover {m.turnover_usdt:,.2f} USDT "
            f"({_opt(m.turnover, '.2f')}x mean equity)",
        ),
        ("PnL", pnl),
        ("fees", f"{m.fees_usdt:,.4f} USDT"),
        (
            "Sharpe",
            f"{_opt(m.sharpe, '.2f')} (Sortino {_opt(m.sortino, '.2f')}, "
            f"Calmar {_opt(m.calmar, '.2f')}; annualised, 365-day year)",
        ),
        (
            "max drawdown",
            f"{m.max_drawdown:.2%}; longest {m.max_drawdown_duration_bars:,} bars "
            f"({_duration(m.max_drawdown_duration_ms)})",
        ),
        ("exposure", f"{_opt(m.exposure, '.1%')} of bars"),
    ]


def _opt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _counts(counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "0"
    parts = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return f"{total:,} (" + ", ".join(f"{k} {v:,}" for k, v in parts if v) + ")"


def _period(m: Metrics) -> str:
    if m.start_ms is None or m.end_ms is None:
        return ""
    fmt = "%Y-%m-%d %H:%M"
    start = datetime.fromtimestamp(m.start_ms / 1000, tz=UTC).strftime(fmt)
    end = datetime.fromtimestamp(m.end_ms / 1000, tz=UTC).strftime(fmt)
    return f", {start} to {end} UTC"  # ASCII: logs may not be UTF-8


def _duration(ms: int) -> str:
    minutes = ms // 60_000
    days, rem = divmod(minutes, 24 * 60)
    hours, mins = divmod(rem, 60)
    return f"{days}d {hours:02d}h {mins:02d}m" if days else f"{hours}h {mins:02d}m"

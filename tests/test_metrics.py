"""Tests for trader.metrics: hand-built series with known answers, and degenerate inputs."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence

import pytest

from trader.metrics import (
    Direction,
    EquityPoint,
    FillPoint,
    FillRole,
    Metrics,
    compute_metrics,
    reconstruct_trades,
    render_summary,
)

MINUTE_MS = 60_000
DAY_MS = 86_400_000
T0_MS = 1_751_026_200_000  # 2025-06-27 12:10 UTC


def _equity(
    values: Sequence[float], *, exposure: Sequence[float] | None = None
) -> list[EquityPoint]:
    gross = exposure if exposure is not None else [0.0] * len(values)
    return [
        EquityPoint(
            ts_ms=T0_MS + i * MINUTE_MS,
            equity=value,
            cash=value,
            unrealized_pnl=0.0,
            drawdown=0.0,
            gross_exposure_usdt=g,
        )
        for i, (value, g) in enumerate(zip(values, gross, strict=True))
    ]


def _fill(
    ts_ms: int, side: str, qty: float, price: float, fee: float = 0.0, symbol: str = "BTCUSDT"
) -> FillPoint:
    return FillPoint(
        ts_ms=ts_ms, symbol=symbol, side=side, qty=qty, price=price, fee=fee, reason="market"
    )


def _metrics(
    values: Sequence[float],
    *,
    initial: float = 100.0,
    fills: Sequence[FillPoint] = (),
    interval_ms: int = MINUTE_MS,
    exposure: Sequence[float] | None = None,
) -> Metrics:
    return compute_metrics(
        equity=_equity(values, exposure=exposure),
        fills=fills,
        initial_equity=initial,
        interval_ms=interval_ms,
    )


def test_total_return_and_pnl_when_equity_ends_above_initial() -> None:
    """Total return and PnL compare the last equity point with the initial equity."""
    m = _metrics([1010.0, 1050.0, 1100.0], initial=1000.0)
    assert m.total_return == pytest.approx(0.1)
    assert m.pnl_usdt == pytest.approx(100.0)
    assert m.final_equity == 1100.0
    assert (m.bars, m.start_ms, m.end_ms) == (3, T0_MS, T0_MS + 2 * MINUTE_MS)


def test_max_drawdown_and_duration_when_equity_dips_and_recovers() -> None:
    """The deepest drop from a running peak and the longest underwater stretch are measured."""
    m = _metrics([110.0, 99.0, 88.0, 99.0, 121.0, 120.0])
    assert m.max_drawdown == pytest.approx(0.2)
    assert m.max_drawdown_duration_bars == 3
    assert m.max_drawdown_duration_ms == 3 * MINUTE_MS


def test_drawdown_counts_from_initial_equity_when_first_bar_loses() -> None:
    """The initial equity is the first peak, so losing from the first bar is a drawdown."""
    m = _metrics([90.0, 95.0])
    assert m.max_drawdown == pytest.approx(0.1)
    assert m.max_drawdown_duration_bars == 2
    assert m.max_drawdown_duration_ms == 2 * MINUTE_MS


def test_drawdown_is_zero_when_equity_never_falls() -> None:
    """A monotonically rising curve has no drawdown and no underwater time."""
    m = _metrics([101.0, 102.0, 102.0, 104.0])
    assert m.max_drawdown == 0.0
    assert m.max_drawdown_duration_bars == 0
    assert m.calmar is None


def test_sharpe_matches_hand_formula_when_returns_vary() -> None:
    """Sharpe is mean over sample stdev of per-bar returns, scaled by sqrt(periods per year)."""
    values = [101.0, 100.0, 103.0, 102.0]
    returns = [b / a - 1 for a, b in zip([100.0, *values], values, strict=False)]
    expected = statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(365 * 1440)
    m = _metrics(values)
    assert m.sharpe == pytest.approx(expected)
    assert m.sharpe is not None
    assert m.sharpe > 0


def test_sharpe_is_negative_when_equity_mostly_falls() -> None:
    """A losing curve gets a negative Sharpe and Sortino."""
    m = _metrics([99.0, 97.0, 97.5, 95.0])
    assert m.sharpe is not None
    assert m.sharpe < 0
    assert m.sortino is not None
    assert m.sortino < 0


def test_sharpe_and_sortino_are_none_when_equity_is_flat() -> None:
    """Zero variance leaves Sharpe and Sortino undefined rather than infinite."""
    m = _metrics([100.0, 100.0, 100.0])
    assert (m.sharpe, m.sortino, m.calmar) == (None, None, None)
    assert m.total_return == 0.0


def test_sharpe_is_none_when_returns_are_constant_but_nonzero() -> None:
    """Float noise on a constant growth rate is treated as zero variance, not a huge ratio."""
    values = [100.0 * 1.01**i for i in range(1, 6)]
    assert _metrics(values).sharpe is None


def test_sortino_is_none_when_no_bar_loses() -> None:
    """Without a losing bar the downside deviation is zero, so Sortino is undefined."""
    m = _metrics([101.0, 103.0, 103.5])
    assert m.sharpe is not None
    assert m.sortino is None


def test_ratios_are_none_when_there_are_no_bars() -> None:
    """An empty run has no returns: ratios, exposure and the period are None."""
    m = _metrics([])
    assert (m.sharpe, m.sortino, m.calmar, m.annualised_return) == (None, None, None, None)
    assert (m.exposure, m.turnover, m.start_ms, m.end_ms) == (None, None, None, None)
    assert (m.bars, m.total_return, m.final_equity) == (0, 0.0, 100.0)


def test_periods_per_year_counts_a_365_day_year_when_interval_is_5m() -> None:
    """Crypto trades 24/7, so 5-minute bars give 105,120 periods a year."""
    assert _metrics([100.0], interval_ms=5 * MINUTE_MS).periods_per_year == 105_120.0


def test_calmar_is_annualised_return_over_max_drawdown_when_both_defined() -> None:
    """Calmar divides the compound annual return by the max drawdown."""
    m = _metrics([90.0, 110.0], interval_ms=DAY_MS)
    annual = 1.1 ** (365 / 2) - 1
    assert m.annualised_return == pytest.approx(annual)
    assert m.calmar == pytest.approx(annual / 0.1)


def test_annualised_return_is_none_when_it_overflows() -> None:
    """Annualising a short, lucky run past float range gives None, not inf."""
    m = _metrics([150.0, 200.0], interval_ms=MINUTE_MS)
    assert m.annualised_return is None
    assert m.calmar is None


def test_round_trip_pnl_is_net_of_fees_when_long_opens_and_closes() -> None:
    """A long from flat to flat is one trade whose PnL subtracts both fills' fees."""
    ledger = reconstruct_trades(
        [_fill(1, "buy", 1.0, 100.0, 0.1), _fill(2, "sell", 1.0, 110.0, 0.11)]
    )
    (trip,) = ledger.round_trips
    assert trip.direction is Direction.LONG
    assert (trip.entry_ms, trip.exit_ms) == (1, 2)
    assert trip.pnl_usdt == pytest.approx(9.79)
    assert trip.fees_usdt == pytest.approx(0.21)
    assert ledger.open_positions == ()


def test_partial_closes_form_one_round_trip_when_position_returns_to_flat() -> None:
    """Several reducing fills belong to the same trade until the position is flat."""
    fills = [_fill(1, "buy", 2.0, 100.0), _fill(2, "sell", 0.5, 105.0), _fill(3, "sell", 1.5, 95.0)]
    ledger = reconstruct_trades(fills)
    (trip,) = ledger.round_trips
    assert trip.pnl_usdt == pytest.approx(0.5 * 5 - 1.5 * 5)
    assert [s.role for s in ledger.steps] == [FillRole.ENTRY, FillRole.EXIT, FillRole.EXIT]
    assert [s.qty_after for s in ledger.steps] == [2.0, 1.5, 0.0]


def test_flip_closes_one_trip_and_opens_another_when_fill_exceeds_position() -> None:
    """A fill through zero closes the old trade and opens the opposite one, fee split by qty."""
    fills = [
        _fill(1, "buy", 1.0, 100.0, 1.0),
        _fill(2, "sell", 3.0, 110.0, 3.0),
        _fill(3, "buy", 2.0, 100.0, 2.0),
    ]
    ledger = reconstruct_trades(fills)
    long_trip, short_trip = ledger.round_trips
    assert long_trip.direction is Direction.LONG
    assert long_trip.pnl_usdt == pytest.approx(10.0 - 2.0)
    assert long_trip.fees_usdt == pytest.approx(2.0)
    assert (short_trip.direction, short_trip.entry_ms, short_trip.exit_ms) == (
        Direction.SHORT,
        2,
        3,
    )
    assert short_trip.pnl_usdt == pytest.approx(20.0 - 2.0 - 2.0)
    assert [s.role for s in ledger.steps] == [FillRole.ENTRY, FillRole.FLIP, FillRole.EXIT]


def test_adding_to_a_position_is_an_entry_when_side_matches() -> None:
    """A fill in the direction of the open position adds to the same trade."""
    fills = [_fill(1, "sell", 1.0, 100.0), _fill(2, "sell", 1.0, 90.0), _fill(3, "buy", 2.0, 80.0)]
    ledger = reconstruct_trades(fills)
    (trip,) = ledger.round_trips
    assert trip.direction is Direction.SHORT
    assert trip.pnl_usdt == pytest.approx(20.0 + 10.0)
    assert [s.role for s in ledger.steps] == [FillRole.ENTRY, FillRole.ENTRY, FillRole.EXIT]


def test_position_is_flat_when_float_quantities_cancel_in_decimal() -> None:
    """0.1 + 0.2 - 0.3 nets to exactly flat, leaving no ghost position open."""
    fills = [_fill(1, "buy", 0.1, 100.0), _fill(2, "buy", 0.2, 100.0), _fill(3, "sell", 0.3, 101.0)]
    ledger = reconstruct_trades(fills)
    assert len(ledger.round_trips) == 1
    assert ledger.open_positions == ()
    assert ledger.steps[-1].qty_after == 0.0


def test_symbols_are_netted_separately_when_fills_interleave() -> None:
    """A sell of one symbol does not close another symbol's long."""
    fills = [
        _fill(1, "buy", 1.0, 100.0, symbol="BTCUSDT"),
        _fill(2, "sell", 1.0, 10.0, symbol="ETHUSDT"),
        _fill(3, "sell", 1.0, 105.0, symbol="BTCUSDT"),
    ]
    ledger = reconstruct_trades(fills)
    (trip,) = ledger.round_trips
    assert trip.symbol == "BTCUSDT"
    assert trip.pnl_usdt == pytest.approx(5.0)
    assert ledger.open_positions == (("ETHUSDT", -1.0),)


def test_open_position_is_not_a_trade_when_run_ends_in_position() -> None:
    """Only closed round trips count as trades; win rate stays undefined without one."""
    m = _metrics([100.0], fills=[_fill(T0_MS, "buy", 1.0, 100.0)])
    assert (m.trades, m.open_positions, m.fills) == (0, 1, 1)
    assert (m.win_rate, m.profit_factor) == (None, None)


def test_fills_are_rejected_when_out_of_time_order() -> None:
    """Round trips depend on order, so fills going back in time raise."""
    with pytest.raises(ValueError, match="out of order"):
        reconstruct_trades([_fill(2, "buy", 1.0, 100.0), _fill(1, "sell", 1.0, 100.0)])


def _trades(pnls: Sequence[float]) -> list[FillPoint]:
    """One long round trip per PnL, bought at 100 and sold at 100 + pnl, no fees."""
    fills: list[FillPoint] = []
    for i, pnl in enumerate(pnls):
        fills += [_fill(2 * i, "buy", 1.0, 100.0), _fill(2 * i + 1, "sell", 1.0, 100.0 + pnl)]
    return fills


def test_win_rate_and_profit_factor_when_trades_win_and_lose() -> None:
    """Win rate is winners over closed trades; profit factor is gross profit over gross loss."""
    m = _metrics([100.0], fills=_trades([10.0, -5.0, 20.0, -5.0]))
    assert m.trades == 4
    assert m.win_rate == pytest.approx(0.5)
    assert m.profit_factor == pytest.approx(3.0)


def test_profit_factor_is_none_when_no_trade_loses() -> None:
    """With no losing trade the profit factor would be infinite, so it is None."""
    m = _metrics([100.0], fills=_trades([10.0, 5.0]))
    assert m.win_rate == 1.0
    assert m.profit_factor is None


def test_exposure_is_fraction_of_bars_invested_when_partly_invested() -> None:
    """Exposure counts bars with non-zero gross exposure, long or short."""
    m = _metrics([100.0] * 4, exposure=[0.0, 50.0, 0.0, 20.0])
    assert m.exposure == pytest.approx(0.5)


def test_fees_and_turnover_sum_over_fills_when_fills_exist() -> None:
    """Fees add up exactly; turnover is traded notional, also as a multiple of mean equity."""
    fills = [_fill(1, "buy", 2.0, 100.0, 0.1), _fill(2, "sell", 2.0, 100.0, 0.2)]
    m = _metrics([100.0, 100.0], fills=fills)
    assert m.fees_usdt == pytest.approx(0.3)
    assert m.turnover_usdt == pytest.approx(400.0)
    assert m.turnover == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("values", "fills"),
    [
        ([], []),
        ([100.0], []),
        ([100.0, 100.0, 100.0], []),
        ([100.0, 100.0], _trades([0.0])),
    ],
    ids=["no-bars", "single-point", "flat-equity", "break-even-trade"],
)
def test_as_dict_is_strict_json_when_inputs_are_degenerate(
    values: list[float], fills: list[FillPoint]
) -> None:
    """Degenerate runs serialise without NaN or inf (undefined figures are null)."""
    as_dict = _metrics(values, fills=fills).as_dict()
    decoded = json.loads(json.dumps(as_dict, allow_nan=False))
    assert decoded == as_dict
    assert all(math.isfinite(v) for v in as_dict.values() if isinstance(v, float))


def test_as_dict_rounds_floats_when_values_have_long_tails() -> None:
    """Ratios keep six decimals and Sharpe four, which is plenty for a report."""
    as_dict = _metrics([100.0 / 3, 101.0, 99.0, 103.0], initial=100.0).as_dict()
    assert as_dict["final_equity"] == 103.0
    assert as_dict["max_drawdown"] == round(1 - (100 / 3) / 100, 6)
    sharpe = as_dict["sharpe"]
    assert isinstance(sharpe, float)
    assert sharpe == round(sharpe, 4)


def test_inputs_are_rejected_when_values_are_invalid() -> None:
    """Bad sides, non-positive quantities, NaN equity and bad initial equity raise ValueError."""
    with pytest.raises(ValueError, match="side"):
        _fill(1, "long", 1.0, 100.0)
    with pytest.raises(ValueError, match="positive"):
        _fill(1, "buy", 0.0, 100.0)
    with pytest.raises(ValueError, match="finite"):
        EquityPoint(ts_ms=1, equity=math.nan, cash=0.0, unrealized_pnl=0.0, drawdown=0.0)
    with pytest.raises(ValueError, match="initial_equity"):
        compute_metrics(equity=[], fills=[], initial_equity=0.0, interval_ms=MINUTE_MS)
    with pytest.raises(ValueError, match="interval_ms"):
        compute_metrics(equity=[], fills=[], initial_equity=1.0, interval_ms=0)


def _summary(m: Metrics, *, color: bool = False) -> str:
    return render_summary(
        metrics=m,
        bars=2_000,
        rejected={"gap": 2, "nan_price": 1},
        decisions={"HOLD": 1_990, "BUY_LONG": 10},
        title="replay sma BTCUSDT 1m",
        color=color,
    )


def test_summary_contains_key_figures_when_rendered_plain() -> None:
    """The plain summary names bars, rejections, decisions, trades, PnL, fees, Sharpe and DD."""
    m = _metrics([101.0, 99.0, 103.0], fills=_trades([10.0, -5.0]))
    text = _summary(m)
    for expected in (
        "replay sma BTCUSDT 1m",
        "2,000",
        "gap 2",
        "nan_price 1",
        "HOLD 1,990",
        "BUY_LONG 10",
        "2 closed",
        "win rate 50.0%",
        "+3.00 USDT (+3.00%)",
        "0.0000 USDT",
        f"{m.sharpe:.2f}",
        "1.98%",
    ):
        assert expected in text, expected


def test_summary_has_no_escape_codes_when_color_is_off() -> None:
    """Non-TTY output is plain ASCII with no ANSI codes and no trailing blanks."""
    text = _summary(_metrics([101.0, 99.0]))
    assert "\x1b" not in text
    assert text.isascii()
    assert all(line == line.rstrip() for line in text.splitlines())


def test_summary_has_escape_codes_when_color_is_on() -> None:
    """A TTY summary is styled with ANSI codes."""
    assert "\x1b[" in _summary(_metrics([101.0, 99.0]), color=True)


def test_summary_says_n_a_when_ratios_are_undefined() -> None:
    """Undefined figures read n/a instead of None or nan."""
    text = _summary(_metrics([]))
    assert "n/a" in text
    assert "nan" not in text.lower().replace("nan_price", "")
    assert "None" not in text

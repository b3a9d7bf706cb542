"""Portfolio: netting, realised and unrealised PnL, fees, equity, drawdown and state."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from trader.domain import Fill, Side
from trader.portfolio import Portfolio

D = Decimal


def fill(side: Side, qty: str, price: str, *, fee: str = "0", symbol: str = "BTCUSDT") -> Fill:
    """A fill with round numbers."""
    return Fill(f"id-{side}-{qty}-{price}", symbol, side, D(qty), D(price), D(fee), 0)


def portfolio_after(*fills: Fill) -> Portfolio:
    """A 10,000 USDT portfolio that has applied `fills` in order."""
    portfolio = Portfolio(D(10_000))
    for item in fills:
        portfolio.apply_fill(item)
    return portfolio


@pytest.mark.parametrize(
    ("fills", "qty", "avg", "realized"),
    [
        ([fill(Side.BUY, "1", "100"), fill(Side.BUY, "3", "104")], "4", "103", "0"),
        ([fill(Side.SELL, "2", "50"), fill(Side.SELL, "2", "60")], "-4", "55", "0"),
        ([fill(Side.BUY, "1", "100"), fill(Side.BUY, "2", "101")], "3", "100.6666666667", "0"),
        ([fill(Side.BUY, "2", "100"), fill(Side.SELL, "1", "110")], "1", "100", "10"),
        ([fill(Side.SELL, "2", "100"), fill(Side.BUY, "1", "90")], "-1", "100", "10"),
        ([fill(Side.SELL, "2", "100"), fill(Side.BUY, "2", "105")], "0", "0", "-10"),
        ([fill(Side.BUY, "1", "100"), fill(Side.SELL, "3", "110")], "-2", "110", "10"),
        ([fill(Side.SELL, "1", "100"), fill(Side.BUY, "2", "120")], "1", "120", "-20"),
    ],
    ids=[
        "long-add-averages",
        "short-add-averages",
        "average-quantised",
        "long-reduce-realises",
        "short-reduce-realises",
        "short-close-to-flat",
        "long-flips-short",
        "short-flips-long",
    ],
)
def test_fills_net_into_position_when_applied(
    fills: list[Fill], qty: str, avg: str, realized: str
) -> None:
    """Adding averages the entry, reducing realises PnL, crossing zero reopens at the fill price."""
    position = portfolio_after(*fills).position("BTCUSDT")
    assert (position.qty, position.avg_price, position.realized_pnl) == (
        D(qty),
        D(avg),
        D(realized),
    )


def test_opening_moves_no_cash_when_position_opens() -> None:
    """Only the fee leaves the wallet when a position opens; equity marks the rest."""
    portfolio = portfolio_after(fill(Side.BUY, "2", "100", fee="0.11"))
    assert portfolio.cash == D("9999.89")
    portfolio.mark("BTCUSDT", 103.0)
    assert portfolio.unrealized_pnl == D(6)
    assert portfolio.equity == D("10005.89")
    assert portfolio.gross_exposure_usdt == D(206)


def test_fees_accumulate_when_symbols_trade() -> None:
    """Fees add up per symbol and over the account."""
    portfolio = portfolio_after(
        fill(Side.BUY, "1", "100", fee="0.5"),
        fill(Side.SELL, "1", "101", fee="0.25"),
        fill(Side.SELL, "10", "2", fee="0.01", symbol="XRPUSDT"),
    )
    assert portfolio.position("BTCUSDT").fees == D("0.75")
    assert portfolio.position("XRPUSDT").fees == D("0.01")
    assert portfolio.fees == D("0.76")
    assert portfolio.cash == D(10_000) + D(1) - D("0.76")


def test_symbol_pnl_nets_fees_when_position_is_open() -> None:
    """A symbol's PnL is its realised plus unrealised PnL minus its fees."""
    portfolio = portfolio_after(
        fill(Side.BUY, "2", "100", fee="0.2"), fill(Side.SELL, "1", "110", fee="0.1")
    )
    portfolio.mark("BTCUSDT", 105.0)
    assert portfolio.symbol_pnl("BTCUSDT") == D(10) + D(5) - D("0.3")
    assert portfolio.symbol_pnl("ETHUSDT") == 0


@pytest.mark.parametrize(
    ("marks", "equity", "peak", "drawdown"),
    [
        ([100.0], "10000", "10000", "0"),
        ([150.0], "10050", "10050", "0"),
        ([150.0, 50.0], "9950", "10050", "0.00995024875621890547263681592"),
        ([150.0, 50.0, 160.0], "10060", "10060", "0"),
    ],
)
def test_peak_and_drawdown_follow_marks_when_price_moves(
    marks: list[float], equity: str, peak: str, drawdown: str
) -> None:
    """Every mark revalues equity; the peak only rises and drawdown is the fraction below it."""
    portfolio = portfolio_after(fill(Side.BUY, "1", "100"))
    for price in marks:
        portfolio.mark("BTCUSDT", price)
    assert (portfolio.equity, portfolio.peak_equity, portfolio.drawdown) == (
        D(equity),
        D(peak),
        D(drawdown),
    )


def test_exposure_sums_symbols_when_long_and_short() -> None:
    """Gross exposure adds |qty| * mark over symbols, shorts included."""
    portfolio = portfolio_after(
        fill(Side.BUY, "0.5", "100"), fill(Side.SELL, "100", "2", symbol="XRPUSDT")
    )
    portfolio.mark("BTCUSDT", 110.0)
    portfolio.mark("XRPUSDT", 2.5)
    assert portfolio.gross_exposure_usdt == D(55) + D(250)
    assert portfolio.unrealized_pnl == D(5) - D(50)
    assert portfolio.symbols() == ["BTCUSDT", "XRPUSDT"]


def test_bars_in_position_counts_marks_when_not_flat() -> None:
    """Marks count while a position is held and restart after a close or a flip."""
    portfolio = Portfolio(D(10_000))
    portfolio.mark("BTCUSDT", 100.0)
    assert portfolio.bars_in_position("BTCUSDT") == 0
    portfolio.apply_fill(fill(Side.BUY, "1", "100"))
    portfolio.mark("BTCUSDT", 100.0)
    portfolio.mark("BTCUSDT", 101.0)
    assert portfolio.bars_in_position("BTCUSDT") == 2
    portfolio.apply_fill(fill(Side.SELL, "2", "101"))
    assert portfolio.bars_in_position("BTCUSDT") == 0
    portfolio.mark("BTCUSDT", 101.0)
    assert portfolio.bars_in_position("BTCUSDT") == 1
    portfolio.apply_fill(fill(Side.BUY, "1", "101"))
    portfolio.mark("BTCUSDT", 101.0)
    assert portfolio.bars_in_position("BTCUSDT") == 0


def test_unrealized_uses_last_mark_when_fill_follows_a_mark() -> None:
    """A fill after a mark is valued at that mark until the next one."""
    portfolio = Portfolio(D(10_000))
    portfolio.mark("BTCUSDT", 100.0)
    portfolio.apply_fill(fill(Side.BUY, "1", "101"))
    assert portfolio.unrealized_pnl == D(-1)
    assert portfolio.mark_price("BTCUSDT") == D(100)


def test_flat_symbol_has_defaults_when_never_traded() -> None:
    """Unknown symbols read as flat with no PnL."""
    portfolio = Portfolio(D(10_000))
    assert portfolio.position("ETHUSDT").qty == 0
    assert portfolio.bars_in_position("ETHUSDT") == 0
    assert portfolio.mark_price("ETHUSDT") is None
    assert portfolio.symbols() == []


def test_state_round_trip_is_exact_when_restored_from_json() -> None:
    """A portfolio restored from JSON state has identical state and behaves identically."""
    original = portfolio_after(
        fill(Side.BUY, "1", "100", fee="0.055"),
        fill(Side.BUY, "2", "101", fee="0.1111"),
        fill(Side.SELL, "10", "2", symbol="XRPUSDT"),
    )
    original.mark("BTCUSDT", 150.0)
    original.mark("BTCUSDT", 99.3)
    restored = Portfolio(D(1))
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    assert restored.state_dict() == original.state_dict()
    for item in (original, restored):
        item.apply_fill(fill(Side.SELL, "1.5", "99.1", fee="0.08"))
        item.mark("BTCUSDT", 98.7)
    assert restored.state_dict() == original.state_dict()
    assert (restored.equity, restored.drawdown) == (original.equity, original.drawdown)


@pytest.mark.parametrize("price", [float("nan"), float("inf"), 0.0, -1.0])
def test_mark_rejects_price_when_not_positive_finite(price: float) -> None:
    """NaN, infinite and non-positive marks are refused."""
    with pytest.raises(ValueError, match="mark price"):
        Portfolio(D(10_000)).mark("BTCUSDT", price)


def test_constructor_rejects_equity_when_not_positive() -> None:
    """The initial equity must be positive."""
    with pytest.raises(ValueError, match="initial_equity"):
        Portfolio(D(0))


def test_peak_waits_for_every_symbol_when_marks_defer_it() -> None:
    """Marks with update_peak=False leave the peak alone until update_peak() sees the whole
    account: BTC +10 then ETH -20 in one moment is a loss, not a new high."""
    portfolio = portfolio_after(
        fill(Side.BUY, "1", "100"), fill(Side.BUY, "1", "100", symbol="ETHUSDT")
    )
    portfolio.mark("BTCUSDT", 110.0, update_peak=False)
    assert portfolio.peak_equity == D(10_000)
    portfolio.mark("ETHUSDT", 80.0, update_peak=False)
    portfolio.update_peak()
    totals = portfolio.totals()
    assert (totals.equity, totals.peak_equity) == (D(9_990), D(10_000))
    assert totals.drawdown == D(10) / D(10_000)

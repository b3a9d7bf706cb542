"""Instrument rounding rules, the built-in table and the fallback for unknown symbols."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from trader.domain import Side
from trader.instruments import BUILTIN_INSTRUMENTS, Instrument, InstrumentBook, fallback_instrument

BTC = BUILTIN_INSTRUMENTS["BTCUSDT"]


@pytest.mark.parametrize(
    ("qty", "expected"),
    [
        ("0.0019", "0.001"),
        ("0.001", "0.001"),
        ("1.23456", "1.234"),
        ("0.0009", "0"),
        ("0", "0"),
        ("-1", "0"),
    ],
)
def test_qty_rounds_down_to_step_when_between_steps(qty: str, expected: str) -> None:
    """Quantities round down to the step and anything under min_qty becomes zero."""
    assert BTC.round_qty_down(Decimal(qty)) == Decimal(expected)


def test_qty_below_min_becomes_zero_when_min_exceeds_step() -> None:
    """A quantity on the step but under a larger min_qty rounds to zero."""
    inst = Instrument("X", Decimal("0.01"), Decimal("0.1"), Decimal("1"), Decimal("5"))
    assert inst.round_qty_down(Decimal("0.9")) == 0
    assert inst.round_qty_down(Decimal("1.25")) == Decimal("1.2")


@pytest.mark.parametrize(
    ("price", "side", "expected"),
    [
        ("81802.97948", Side.BUY, "81803.0"),
        ("81802.97948", Side.SELL, "81802.9"),
        ("81803.0", Side.BUY, "81803.0"),
        ("81803.0", Side.SELL, "81803.0"),
    ],
)
def test_price_rounds_against_taker_when_off_tick(price: str, side: Side, expected: str) -> None:
    """A buy rounds up to the tick and a sell rounds down; on-tick prices are unchanged."""
    assert BTC.round_price(Decimal(price), side) == Decimal(expected)


def test_builtin_btc_matches_documented_payload_when_looked_up() -> None:
    """BTCUSDT carries Bybit's documented instruments-info values."""
    assert (BTC.tick_size, BTC.qty_step, BTC.min_qty, BTC.min_notional_usdt) == (
        Decimal("0.10"),
        Decimal("0.001"),
        Decimal("0.001"),
        Decimal("5"),
    )
    expected = {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT", "ADAUSDT", "DOGEUSDT"}
    assert expected | {"DOTUSDT"} == set(BUILTIN_INSTRUMENTS)


def test_meets_minimums_checks_notional_when_qty_is_large_enough() -> None:
    """An order must clear both the minimum quantity and the minimum notional."""
    assert BTC.meets_minimums(Decimal("0.001"), Decimal("81794.8"))
    assert not BTC.meets_minimums(Decimal("0.001"), Decimal("4000"))
    assert not BTC.meets_minimums(Decimal("0.0005"), Decimal("81794.8"))


@pytest.mark.parametrize("field", ["tick_size", "qty_step", "min_qty"])
def test_instrument_rejects_field_when_not_positive(field: str) -> None:
    """Non-positive increments are refused with the field named."""
    values = {
        "tick_size": Decimal("0.1"),
        "qty_step": Decimal("0.001"),
        "min_qty": Decimal("0.001"),
        "min_notional_usdt": Decimal(5),
    }
    values[field] = Decimal(0)
    with pytest.raises(ValueError, match=field):
        Instrument("X", **values)


def test_override_wins_when_symbol_is_builtin() -> None:
    """Overrides (fetched instruments-info) replace the built-in table entry."""
    fetched = Instrument("BTCUSDT", Decimal("0.5"), Decimal("0.001"), Decimal("0.001"), Decimal(5))
    assert InstrumentBook({"BTCUSDT": fetched}).get("BTCUSDT") is fetched


@pytest.mark.parametrize(
    ("price", "tick", "step"),
    [
        ("81794.8", "0.1", "0.00001"),
        ("0.19712", "0.000001", "10"),
        ("5", "0.00001", "1"),
        ("1773.32", "0.01", "0.001"),
    ],
)
def test_fallback_derives_powers_of_ten_when_symbol_unknown(
    price: str, tick: str, step: str
) -> None:
    """The fallback tick sits five digits below the price and one step is worth <= 5 USDT."""
    inst = fallback_instrument("NEWUSDT", Decimal(price))
    assert (inst.tick_size, inst.qty_step, inst.min_qty) == (
        Decimal(tick),
        Decimal(step),
        Decimal(step),
    )
    assert inst.qty_step * Decimal(price) <= 5 < inst.qty_step * 10 * Decimal(price)


def test_fallback_is_kept_when_later_prices_differ() -> None:
    """The first reference price fixes a fallback; later lookups return the same rules."""
    book = InstrumentBook()
    first = book.get("NEWUSDT", 81794.8)
    assert book.get("NEWUSDT", 0.5) is first
    assert book.get("NEWUSDT") is first


def test_lookup_raises_when_unknown_without_reference_price() -> None:
    """An unknown symbol without a price to derive from is a KeyError."""
    with pytest.raises(KeyError, match="NEWUSDT"):
        InstrumentBook().get("NEWUSDT")


def test_fallback_survives_restart_when_state_is_restored() -> None:
    """A restored book keeps fallbacks derived before the restart, whatever price comes next."""
    book = InstrumentBook()
    derived = book.get("NEWUSDT", 0.19712)
    restored = InstrumentBook()
    restored.load_state_dict(json.loads(json.dumps(book.state_dict())))
    assert restored.get("NEWUSDT", 123.0) == derived

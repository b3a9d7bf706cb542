"""Trading rules of USDT-margined linear perpetuals: price tick, quantity step and minimums.

Owns the `Instrument` value object, the rounding rules every order and fill follows, a built-in
table of the symbols the project ships data for, and a deterministic fallback for any other
symbol. It must not fetch anything: the live feed's instruments-info call builds overrides and
hands them to `InstrumentBook`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from trader.domain import Side

#: Notional (USDT) the fallback aims its smallest order at; Bybit's minNotionalValue for the
#: majors is 5 USDT.
FALLBACK_MIN_NOTIONAL_USDT = Decimal(5)
#: The fallback tick is this many powers of ten below the reference price's leading digit, so
#: rounding moves a price by at most ~1e-5 of itself (well under any realistic slippage).
FALLBACK_TICK_DIGITS = 5


@dataclass(frozen=True, slots=True)
class Instrument:
    """One linear perpetual's lot and price rules, as Bybit's instruments-info reports them.

    Attributes:
        symbol: exchange symbol, e.g. ``BTCUSDT``.
        tick_size: price increment (``priceFilter.tickSize``).
        qty_step: quantity increment (``lotSizeFilter.qtyStep``).
        min_qty: smallest order quantity (``lotSizeFilter.minOrderQty``).
        min_notional_usdt: smallest order value in USDT (``lotSizeFilter.minNotionalValue``).
    """

    symbol: str
    tick_size: Decimal
    qty_step: Decimal
    min_qty: Decimal
    min_notional_usdt: Decimal

    def __post_init__(self) -> None:
        for name in ("tick_size", "qty_step", "min_qty"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
                raise ValueError(f"{self.symbol}: {name} must be a positive Decimal, got {value!r}")
        notional = self.min_notional_usdt
        if not isinstance(notional, Decimal) or not notional.is_finite() or notional < 0:
            raise ValueError(f"{self.symbol}: min_notional_usdt must be >= 0, got {notional!r}")

    def round_qty_down(self, qty: Decimal) -> Decimal:
        """Round a quantity down to the step; anything below `min_qty` becomes 0.

        Rounding down (never up) keeps a sized order inside the limit risk computed it from.
        """
        if qty <= 0:
            return Decimal(0)
        stepped = (qty / self.qty_step).to_integral_value(rounding=ROUND_FLOOR) * self.qty_step
        return stepped if stepped >= self.min_qty else Decimal(0)

    def round_price(self, price: Decimal, side: Side) -> Decimal:
        """Round a price to the tick against the taker: a buy rounds up, a sell rounds down."""
        rounding = ROUND_CEILING if side is Side.BUY else ROUND_FLOOR
        return (price / self.tick_size).to_integral_value(rounding=rounding) * self.tick_size

    def meets_minimums(self, qty: Decimal, price: Decimal) -> bool:
        """True when an order of `qty` at `price` satisfies both min_qty and min notional."""
        return qty >= self.min_qty and qty * price >= self.min_notional_usdt


def _instrument(symbol: str, tick: str, step: str, min_qty: str, notional: str) -> Instrument:
    return Instrument(symbol, Decimal(tick), Decimal(step), Decimal(min_qty), Decimal(notional))


# Bybit v5 `GET /v5/market/instruments-info?category=linear`. BTCUSDT is the official documented
# payload (reference/bybit-v5.md). The others are best knowledge of the exchange's values in 2025,
# cross-checked against the decimals of the shipped candles (price and volume), not fetched: the
# live feed issue fetches instruments-info and passes the result as `InstrumentBook` overrides.
BUILTIN_INSTRUMENTS: Mapping[str, Instrument] = {
    instrument.symbol: instrument
    for instrument in (
        _instrument("BTCUSDT", "0.10", "0.001", "0.001", "5"),
        _instrument("ETHUSDT", "0.01", "0.01", "0.01", "5"),
        _instrument("SOLUSDT", "0.010", "0.1", "0.1", "5"),
        _instrument("XRPUSDT", "0.0001", "1", "1", "5"),
        _instrument("BNBUSDT", "0.10", "0.01", "0.01", "5"),
        _instrument("ADAUSDT", "0.0001", "1", "1", "5"),
        _instrument("DOGEUSDT", "0.00001", "1", "1", "5"),
        _instrument("DOTUSDT", "0.0001", "0.1", "0.1", "5"),
    )
}


def fallback_instrument(symbol: str, reference_price: Decimal) -> Instrument:
    """Derive rules for a symbol missing from the table from one reference price.

    The rule, deterministic for a given price:

    * ``tick_size`` = 10 ** (e - 5), where e = floor(log10(price)): five digits below the leading
      digit (BTC at 81794.8 gets 0.1, DOGE at 0.19712 gets 0.000001).
    * ``qty_step`` = ``min_qty`` = the largest power of ten whose value at the reference price is
      at most 5 USDT (BTC: 0.00001, DOGE: 10).
    * ``min_notional_usdt`` = 5.

    Raises:
        ValueError: the reference price is not a positive finite number.
    """
    if not reference_price.is_finite() or reference_price <= 0:
        raise ValueError(f"{symbol}: reference price must be positive, got {reference_price}")
    # Decimal.adjusted() is the exact floor(log10(x)) of a decimal, with no float log error.
    # Decimal(10) ** n prints as 10 or 0.001, never in exponent form like 1E+1.
    tick = Decimal(10) ** (reference_price.adjusted() - FALLBACK_TICK_DIGITS)
    step = Decimal(10) ** (FALLBACK_MIN_NOTIONAL_USDT / reference_price).adjusted()
    return Instrument(symbol, tick, step, step, FALLBACK_MIN_NOTIONAL_USDT)


class InstrumentBook:
    """Looks up an instrument by symbol: overrides, then the built-in table, then a fallback.

    A fallback is derived once, from the first reference price seen, and then kept; its rules are
    part of `state_dict` so that a restarted run keeps the same rules even though the first price
    it sees after the restart differs.
    """

    def __init__(self, overrides: Mapping[str, Instrument] | None = None) -> None:
        """Create a book; `overrides` (e.g. fetched instruments-info) beat the built-in table."""
        self._known: dict[str, Instrument] = dict(BUILTIN_INSTRUMENTS)
        self._known.update(overrides or {})
        self._derived: dict[str, Instrument] = {}

    def get(self, symbol: str, reference_price: float | Decimal | None = None) -> Instrument:
        """Return the symbol's instrument, deriving a fallback from `reference_price` if needed.

        Raises:
            KeyError: the symbol is unknown and no reference price was given.
        """
        found = self._known.get(symbol) or self._derived.get(symbol)
        if found is not None:
            return found
        if reference_price is None:
            raise KeyError(f"no instrument for {symbol} and no reference price to derive one")
        price = (
            reference_price
            if isinstance(reference_price, Decimal)
            else Decimal(repr(reference_price))
        )
        derived = fallback_instrument(symbol, price)
        self._derived[symbol] = derived
        return derived

    def state_dict(self) -> dict[str, Any]:
        """JSON-able derived fallbacks (the tables are config, not state)."""
        return {
            symbol: {
                "tick_size": str(inst.tick_size),
                "qty_step": str(inst.qty_step),
                "min_qty": str(inst.min_qty),
                "min_notional_usdt": str(inst.min_notional_usdt),
            }
            for symbol, inst in self._derived.items()
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore derived fallbacks saved by `state_dict`."""
        self._derived = {
            symbol: Instrument(
                symbol,
                Decimal(row["tick_size"]),
                Decimal(row["qty_step"]),
                Decimal(row["min_qty"]),
                Decimal(row["min_notional_usdt"]),
            )
            for symbol, row in state.items()
        }

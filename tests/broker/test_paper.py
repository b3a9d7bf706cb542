"""PaperBroker: next-open fills, costs, clamping, protective exits, reduce-only and state."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from trader.broker.base import ExecutionClient
from trader.broker.paper import PaperBroker
from trader.domain import Bar, Fill, FillReason, Order, Side
from trader.instruments import Instrument, InstrumentBook
from trader.order_ids import client_order_id

RUN = "run-1"
STEP_MS = 300_000
T0_MS = 1_750_000_200_000
TEST = "TESTUSDT"
# A simple instrument so that level tests read in round numbers.
TEST_INSTRUMENT = Instrument(TEST, Decimal("0.01"), Decimal("0.001"), Decimal("0.001"), Decimal(5))


def make_bar(i: int, o: float, h: float, low: float, c: float, symbol: str = TEST) -> Bar:
    """The i-th 5-minute bar after T0."""
    return Bar(symbol, "5", T0_MS + i * STEP_MS, o, h, low, c, 1.0, 1.0)


def make_order(
    side: Side,
    qty: str,
    *,
    decided_on: int = 0,
    leg: str = "open",
    reduce_only: bool = False,
    stop_loss: float | None = None,
    take_profit: float | None = None,
    symbol: str = TEST,
) -> Order:
    """An order decided on bar `decided_on` (created at that bar's close)."""
    bar_start_ms = T0_MS + decided_on * STEP_MS
    return Order(
        client_order_id=client_order_id(RUN, symbol, bar_start_ms, leg),
        run_id=RUN,
        decision_id=f"d{decided_on}",
        symbol=symbol,
        side=side,
        qty=Decimal(qty),
        reduce_only=reduce_only,
        leg=leg,
        created_ms=bar_start_ms + STEP_MS,
        stop_loss=stop_loss,
        take_profit=take_profit,
    )


def make_broker(*, fee: str = "0", slippage_bps: str = "0") -> PaperBroker:
    """A broker with the simple test instrument and the given costs."""
    return PaperBroker(
        run_id=RUN,
        taker_fee=Decimal(fee),
        slippage_bps=Decimal(slippage_bps),
        instruments=InstrumentBook({TEST: TEST_INSTRUMENT}),
    )


async def open_position(
    broker: PaperBroker,
    side: Side,
    *,
    stop_loss: float | None = None,
    take_profit: float | None = None,
) -> Fill:
    """Decide on bar 0 and fill 1.000 at bar 1's open of 100 (a quiet bar touching no level)."""
    await broker.submit(make_order(side, "1", stop_loss=stop_loss, take_profit=take_profit))
    assert await broker.on_bar(make_bar(0, 100, 100, 100, 100)) == []
    fills = await broker.on_bar(make_bar(1, 100, 100.5, 99.5, 100))
    assert len(fills) == 1
    return fills[0]


def test_paper_broker_satisfies_protocol_when_typed_as_execution_client() -> None:
    """PaperBroker is an ExecutionClient (checked by mypy through this assignment)."""
    client: ExecutionClient = make_broker()
    assert client.pending_orders() == []


async def test_order_fills_at_next_open_with_slippage_and_fee_when_bar_closes() -> None:
    """A buy fills at the next bar's open plus slippage, rounded up to the tick, with taker fee."""
    broker = PaperBroker(
        run_id=RUN,
        taker_fee=Decimal("0.00055"),
        slippage_bps=Decimal(1),
        instruments=InstrumentBook(),
    )
    order = make_order(Side.BUY, "0.010", symbol="BTCUSDT")
    await broker.submit(order)
    assert await broker.on_bar(make_bar(0, 81700, 81800, 81600, 81794.8, "BTCUSDT")) == []
    assert broker.pending_orders() == [order]
    fills = await broker.on_bar(make_bar(1, 81794.8, 81900, 81700, 81850, "BTCUSDT"))
    # 81794.8 * 1.0001 = 81802.97948 -> 81803.0 on the 0.1 tick, rounded against the buyer.
    expected_fee = Decimal("0.010") * Decimal("81803.0") * Decimal("0.00055")
    assert fills == [
        Fill(
            order.client_order_id,
            "BTCUSDT",
            Side.BUY,
            Decimal("0.010"),
            Decimal("81803.0"),
            expected_fee,
            T0_MS + STEP_MS,
            FillReason.MARKET,
            0,
        )
    ]
    assert broker.pending_orders() == []
    assert broker.net_qty("BTCUSDT") == Decimal("0.010")


async def test_sell_receives_less_when_slippage_applies() -> None:
    """A sell fills below the open, rounded down to the tick."""
    broker = PaperBroker(
        run_id=RUN, taker_fee=Decimal(0), slippage_bps=Decimal(1), instruments=InstrumentBook()
    )
    await broker.submit(make_order(Side.SELL, "0.010", symbol="BTCUSDT"))
    fills = await broker.on_bar(make_bar(1, 81794.8, 81900, 81700, 81850, "BTCUSDT"))
    # 81794.8 * 0.9999 = 81786.62052 -> 81786.6.
    assert [fill.price for fill in fills] == [Decimal("81786.6")]


async def test_order_waits_when_bar_is_its_decision_bar() -> None:
    """The decision bar itself never fills the order it produced."""
    broker = make_broker()
    await broker.submit(make_order(Side.BUY, "1", decided_on=3))
    assert await broker.on_bar(make_bar(3, 100, 101, 99, 100)) == []
    assert len(broker.pending_orders()) == 1


async def test_order_fills_at_first_later_bar_when_bars_are_missing() -> None:
    """After a gap, the order fills at the open of the first bar that does arrive."""
    broker = make_broker()
    await broker.submit(make_order(Side.BUY, "1", decided_on=0))
    fills = await broker.on_bar(make_bar(5, 104, 105, 103, 104))
    assert [(fill.price, fill.ts_ms) for fill in fills] == [(Decimal(104), T0_MS + 5 * STEP_MS)]


async def test_order_waits_when_bar_belongs_to_another_symbol() -> None:
    """A bar of another symbol leaves the order pending."""
    broker = make_broker()
    await broker.submit(make_order(Side.BUY, "1"))
    assert await broker.on_bar(make_bar(1, 100, 101, 99, 100, symbol="BTCUSDT")) == []
    assert len(broker.pending_orders()) == 1


@pytest.mark.parametrize(
    ("side", "bar_prices", "expected"),
    [
        (Side.BUY, (100, 100, 99, 99.5), "100"),
        (Side.SELL, (100, 101, 100, 100.5), "100"),
        (Side.BUY, (100, 100.03, 99, 99.5), "100.03"),
    ],
    ids=["buy-open-at-high", "sell-open-at-low", "buy-slips-past-high"],
)
async def test_fill_is_clamped_into_bar_when_slippage_leaves_it(
    side: Side, bar_prices: tuple[float, float, float, float], expected: str
) -> None:
    """Slippage never pushes a fill beyond the high or low of the bar it happens in."""
    broker = make_broker(slippage_bps="10")
    await broker.submit(make_order(side, "1"))
    fills = await broker.on_bar(make_bar(1, *bar_prices))
    assert [fill.price for fill in fills] == [Decimal(expected)]


# (position side, bar o/h/l/c, expected exit price, reason) with stop and take-profit set so
# that a long has stop 99 / tp 102 and a short has stop 101 / tp 98.
PROTECTIVE_CASES = [
    (Side.BUY, (100, 100.5, 98.5, 99), "99", FillReason.STOP_LOSS),
    (Side.BUY, (100, 103, 98, 101), "99", FillReason.STOP_LOSS),
    (Side.BUY, (97, 98, 96, 97.5), "97", FillReason.STOP_LOSS),
    (Side.BUY, (100, 102.5, 99.5, 102), "102", FillReason.TAKE_PROFIT),
    (Side.BUY, (103, 104, 102.5, 103.5), "103", FillReason.TAKE_PROFIT),
    (Side.SELL, (100, 101.5, 99.5, 101), "101", FillReason.STOP_LOSS),
    (Side.SELL, (100, 102, 97, 99), "101", FillReason.STOP_LOSS),
    (Side.SELL, (103, 104, 102, 103), "103", FillReason.STOP_LOSS),
    (Side.SELL, (100, 100.5, 97.5, 98), "98", FillReason.TAKE_PROFIT),
    (Side.SELL, (96, 97, 95, 96), "96", FillReason.TAKE_PROFIT),
]
PROTECTIVE_IDS = [
    "long-stop-intrabar",
    "long-both-hit-stop-first",
    "long-gap-through-stop",
    "long-tp-intrabar",
    "long-gap-through-tp",
    "short-stop-intrabar",
    "short-both-hit-stop-first",
    "short-gap-through-stop",
    "short-tp-intrabar",
    "short-gap-through-tp",
]


@pytest.mark.parametrize(
    ("side", "bar_prices", "expected", "reason"), PROTECTIVE_CASES, ids=PROTECTIVE_IDS
)
async def test_protective_exit_follows_level_and_gap_rules_when_level_is_hit(
    side: Side, bar_prices: tuple[float, float, float, float], expected: str, reason: FillReason
) -> None:
    """Exits fill at the level, or at the open after a gap; the stop wins when both are hit."""
    broker = make_broker()
    stop, take = (99.0, 102.0) if side is Side.BUY else (101.0, 98.0)
    await open_position(broker, side, stop_loss=stop, take_profit=take)
    bar = make_bar(2, *bar_prices)
    fills = await broker.on_bar(bar)
    leg = "sl" if reason is FillReason.STOP_LOSS else "tp"
    assert len(fills) == 1
    exit_fill = fills[0]
    assert (exit_fill.price, exit_fill.reason, exit_fill.qty) == (
        Decimal(expected),
        reason,
        Decimal(1),
    )
    assert exit_fill.side is (Side.SELL if side is Side.BUY else Side.BUY)
    assert exit_fill.order_id == client_order_id(RUN, TEST, bar.start_ms, leg)
    assert exit_fill.ts_ms == bar.end_ms
    assert broker.net_qty(TEST) == 0
    assert broker.protective_levels(TEST) == (None, None)


async def test_no_exit_when_bar_stays_between_levels() -> None:
    """A bar that touches neither level leaves the position and its levels alone."""
    broker = make_broker()
    await open_position(broker, Side.BUY, stop_loss=99.0, take_profit=102.0)
    assert await broker.on_bar(make_bar(2, 100, 101.9, 99.1, 101)) == []
    assert broker.protective_levels(TEST) == (99.0, 102.0)


async def test_stop_is_checked_on_entry_bar_when_it_trades_through() -> None:
    """The bar whose open filled the entry can also stop it out."""
    broker = make_broker()
    await broker.submit(make_order(Side.BUY, "1", stop_loss=99.0))
    fills = await broker.on_bar(make_bar(1, 100, 100.5, 98, 98.5))
    assert [(fill.reason, fill.price) for fill in fills] == [
        (FillReason.MARKET, Decimal(100)),
        (FillReason.STOP_LOSS, Decimal(99)),
    ]


async def test_stop_exit_pays_slippage_and_fee_clamped_when_level_hit() -> None:
    """A stop exit slips past its level, rounds against the taker, pays the fee, stays in bar."""
    broker = make_broker(fee="0.001", slippage_bps="10")
    await broker.submit(make_order(Side.BUY, "2", stop_loss=99.0))
    await broker.on_bar(make_bar(1, 100, 100.5, 99.5, 100))
    deep = await broker.on_bar(make_bar(2, 100, 100.2, 98, 98.5))
    # 99 * 0.999 = 98.901 -> 98.90 (rounded down for the seller).
    assert [(fill.price, fill.fee) for fill in deep] == [
        (Decimal("98.90"), Decimal(2) * Decimal("98.90") * Decimal("0.001"))
    ]
    await broker.submit(make_order(Side.BUY, "2", decided_on=2, stop_loss=99.0))
    await broker.on_bar(make_bar(3, 100, 100.5, 99.5, 100))
    shallow = await broker.on_bar(make_bar(4, 100, 100.2, 98.95, 99))
    assert [fill.price for fill in shallow] == [Decimal("98.95")]


async def test_levels_are_replaced_when_position_is_increased() -> None:
    """The order that adds to a position sets the protective levels, None included."""
    broker = make_broker()
    await open_position(broker, Side.BUY, stop_loss=99.0, take_profit=102.0)
    await broker.submit(make_order(Side.BUY, "1", decided_on=1, take_profit=105.0))
    await broker.on_bar(make_bar(2, 100, 100.5, 99.5, 100))
    assert broker.protective_levels(TEST) == (None, 105.0)


async def test_levels_are_kept_when_position_is_partly_reduced() -> None:
    """Reducing a position without closing it keeps its levels."""
    broker = make_broker()
    await open_position(broker, Side.BUY, stop_loss=99.0, take_profit=102.0)
    await broker.submit(make_order(Side.SELL, "0.4", decided_on=1, leg="reduce", reduce_only=True))
    await broker.on_bar(make_bar(2, 100, 100.5, 99.5, 100))
    assert broker.net_qty(TEST) == Decimal("0.6")
    assert broker.protective_levels(TEST) == (99.0, 102.0)


async def test_reduce_only_is_capped_when_it_exceeds_position() -> None:
    """A reduce-only order larger than the position fills only the position and clears levels."""
    broker = make_broker()
    await open_position(broker, Side.SELL, stop_loss=101.0)
    await broker.submit(make_order(Side.BUY, "2.5", decided_on=1, leg="close", reduce_only=True))
    fills = await broker.on_bar(make_bar(2, 100, 100.5, 99.5, 100))
    assert [fill.qty for fill in fills] == [Decimal(1)]
    assert broker.net_qty(TEST) == 0
    assert broker.protective_levels(TEST) == (None, None)


@pytest.mark.parametrize("position_side", [None, Side.BUY])
async def test_reduce_only_is_cancelled_when_nothing_to_reduce(position_side: Side | None) -> None:
    """A reduce-only sell is cancelled without a fill when flat or when it would add to a short."""
    broker = make_broker()
    if position_side is not None:
        await open_position(broker, Side.SELL)
    order = make_order(Side.SELL, "1", decided_on=1, leg="close", reduce_only=True)
    await broker.submit(order)
    assert await broker.on_bar(make_bar(2, 100, 100.5, 99.5, 100)) == []
    assert broker.last_cancelled() == [order]
    assert broker.pending_orders() == []


async def test_flip_closes_then_opens_when_close_and_open_legs_fill() -> None:
    """A close leg then an open leg on one bar flip a long into a short with the new levels."""
    broker = make_broker()
    await open_position(broker, Side.BUY, stop_loss=99.0)
    await broker.submit(make_order(Side.SELL, "1", decided_on=1, leg="close", reduce_only=True))
    await broker.submit(make_order(Side.SELL, "2", decided_on=1, stop_loss=103.0, take_profit=97.0))
    fills = await broker.on_bar(make_bar(2, 100, 100.5, 99.5, 100))
    assert [(fill.side, fill.qty) for fill in fills] == [
        (Side.SELL, Decimal(1)),
        (Side.SELL, Decimal(2)),
    ]
    assert broker.net_qty(TEST) == -2
    assert broker.protective_levels(TEST) == (103.0, 97.0)


async def test_levels_come_from_order_when_one_order_crosses_zero() -> None:
    """A single order that crosses zero opens the new side with its own levels."""
    broker = make_broker()
    await open_position(broker, Side.BUY, stop_loss=99.0)
    await broker.submit(make_order(Side.SELL, "3", decided_on=1, stop_loss=104.0))
    await broker.on_bar(make_bar(2, 100, 100.5, 99.5, 100))
    assert broker.net_qty(TEST) == -2
    assert broker.protective_levels(TEST) == (104.0, None)


async def test_flatten_leg_is_reported_when_it_fills() -> None:
    """A fill of a `flatten` leg carries the FLATTEN reason."""
    broker = make_broker()
    await open_position(broker, Side.BUY)
    await broker.submit(make_order(Side.SELL, "1", decided_on=1, leg="flatten", reduce_only=True))
    fills = await broker.on_bar(make_bar(2, 100, 100.5, 99.5, 100))
    assert [fill.reason for fill in fills] == [FillReason.FLATTEN]


async def test_retried_submit_is_ignored_when_id_was_seen() -> None:
    """Submitting the same client order id twice fills once."""
    broker = make_broker()
    order = make_order(Side.BUY, "1")
    await broker.submit(order)
    await broker.submit(order)
    fills = await broker.on_bar(make_bar(1, 100, 100.5, 99.5, 100))
    await broker.submit(order)
    fills += await broker.on_bar(make_bar(2, 100, 100.5, 99.5, 100))
    assert len(fills) == 1
    assert broker.net_qty(TEST) == 1


async def test_submit_rejects_order_when_qty_is_not_positive() -> None:
    """A zero quantity is a caller bug and raises."""
    with pytest.raises(ValueError, match="qty"):
        await make_broker().submit(make_order(Side.BUY, "0"))


async def test_cancel_all_removes_orders_when_symbol_given_or_not() -> None:
    """cancel_all drops pending orders of one symbol, or of every symbol, and returns them."""
    broker = make_broker()
    test_order = make_order(Side.BUY, "1")
    btc_order = make_order(Side.BUY, "0.001", symbol="BTCUSDT")
    await broker.submit(test_order)
    await broker.submit(btc_order)
    assert broker.cancel_all(TEST) == [test_order]
    assert broker.pending_orders() == [btc_order]
    assert broker.cancel_all() == [btc_order]
    assert await broker.on_bar(make_bar(1, 100, 100.5, 99.5, 100)) == []


async def test_fill_now_closes_at_given_price_when_flattening_at_once() -> None:
    """An emergency flatten fills at once at the given price, slipped and rounded against the
    taker, with the taker fee, capped at the position and not clamped into any bar."""
    broker = make_broker(fee="0.001", slippage_bps="10")
    await open_position(broker, Side.BUY, stop_loss=90.0, take_profit=120.0)
    order = make_order(Side.SELL, "2.5", decided_on=1, leg="flatten", reduce_only=True)
    fill = await broker.fill_now(order, price=Decimal("130.005"), ts_ms=T0_MS + 123)
    # 130.005 * 0.999 = 129.875005 -> 129.87 on the 0.01 tick, rounded against the seller.
    assert fill == Fill(
        order.client_order_id,
        TEST,
        Side.SELL,
        Decimal(1),
        Decimal("129.87"),
        Decimal("129.87") * Decimal("0.001"),
        T0_MS + 123,
        FillReason.FLATTEN,
        0,
    )
    assert broker.net_qty(TEST) == 0
    assert broker.protective_levels(TEST) == (None, None)


async def test_fill_now_fills_nothing_when_flat_adding_or_id_seen() -> None:
    """No fill when there is no position, when the order would add to it, or on a retry."""
    broker = make_broker()
    close = make_order(Side.SELL, "1", decided_on=1, leg="flatten", reduce_only=True)
    assert await broker.fill_now(close, price=Decimal(100), ts_ms=T0_MS) is None
    await open_position(broker, Side.SELL)
    adding = make_order(Side.SELL, "1", decided_on=2, leg="flatten", reduce_only=True)
    assert await broker.fill_now(adding, price=Decimal(100), ts_ms=T0_MS) is None
    closing = make_order(Side.BUY, "0.4", decided_on=3, leg="flatten", reduce_only=True)
    assert await broker.fill_now(closing, price=Decimal(100), ts_ms=T0_MS) is not None
    assert await broker.fill_now(closing, price=Decimal(100), ts_ms=T0_MS) is None
    assert broker.net_qty(TEST) == Decimal("-0.6")


@pytest.mark.parametrize(
    ("reduce_only", "qty", "price", "message"),
    [
        (False, "1", "100", "reduce-only"),
        (True, "0", "100", "positive"),
        (True, "1", "0", "positive"),
        (True, "1", "NaN", "positive"),
    ],
)
async def test_fill_now_refuses_order_when_opening_or_not_positive(
    reduce_only: bool, qty: str, price: str, message: str
) -> None:
    """Only a reduce-only order of positive quantity at a positive price fills at once."""
    broker = make_broker()
    await open_position(broker, Side.BUY)
    order = make_order(Side.SELL, qty, decided_on=1, leg="flatten", reduce_only=reduce_only)
    with pytest.raises(ValueError, match=message):
        await broker.fill_now(order, price=Decimal(price), ts_ms=T0_MS)
    assert broker.net_qty(TEST) == 1


async def test_cancel_removes_one_order_when_it_is_pending() -> None:
    """cancel drops exactly the named pending order and returns it; None when not pending."""
    broker = make_broker()
    close = make_order(Side.SELL, "1", leg="close", reduce_only=True)
    opening = make_order(Side.SELL, "2")
    await broker.submit(close)
    await broker.submit(opening)
    assert broker.cancel(opening.client_order_id) == opening
    assert broker.cancel(opening.client_order_id) is None
    assert broker.pending_orders() == [close]
    assert broker.cancel(close.client_order_id) == close
    assert broker.pending_orders() == []
    assert broker.state_dict()["pending"] == []


async def test_unknown_symbol_rounds_to_fallback_tick_when_filled() -> None:
    """A symbol missing from the table fills on the tick derived from its first price."""
    broker = PaperBroker(
        run_id=RUN, taker_fee=Decimal(0), slippage_bps=Decimal(1), instruments=InstrumentBook()
    )
    await broker.submit(make_order(Side.BUY, "10", symbol="NEWUSDT"))
    fills = await broker.on_bar(make_bar(1, 0.19712, 0.2, 0.19, 0.195, symbol="NEWUSDT"))
    # 0.19712 * 1.0001 = 0.197139712 -> 0.197140 on the derived 0.000001 tick.
    assert [fill.price for fill in fills] == [Decimal("0.197140")]


async def test_state_round_trip_reproduces_fills_when_restored() -> None:
    """A broker restored from JSON state produces exactly the fills the original produces."""
    original = make_broker(fee="0.00055", slippage_bps="2")
    await open_position(original, Side.BUY, stop_loss=98.0, take_profit=104.0)
    await original.submit(make_order(Side.BUY, "0.5", decided_on=1, stop_loss=97.5))
    await original.submit(
        make_order(Side.SELL, "0.2", decided_on=1, leg="reduce", reduce_only=True)
    )
    await original.submit(make_order(Side.BUY, "1", symbol="NEWUSDT"))
    await original.on_bar(make_bar(1, 3.21, 3.3, 3.1, 3.2, symbol="NEWUSDT"))
    restored = make_broker(fee="0.00055", slippage_bps="2")
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    assert restored.state_dict() == original.state_dict()
    bars = [
        make_bar(2, 100.3, 101, 99.9, 100.5),
        make_bar(2, 3.25, 3.4, 2.9, 3.0, symbol="NEWUSDT"),
        make_bar(3, 100.5, 100.6, 97.0, 98.0),
    ]
    for bar in bars:
        assert await restored.on_bar(bar) == await original.on_bar(bar)
    assert restored.state_dict() == original.state_dict()


def test_constructor_rejects_costs_when_negative() -> None:
    """Negative fees or slippage are configuration bugs."""
    with pytest.raises(ValueError, match="slippage_bps"):
        PaperBroker(
            run_id=RUN, taker_fee=Decimal(0), slippage_bps=Decimal(-1), instruments=InstrumentBook()
        )


def test_order_state_round_trips_exactly_and_reads_older_snapshots() -> None:
    """An order's snapshot form keeps the quantity exact (text) and survives JSON; the engine's
    snapshots of earlier versions held the orders row's keys as well, which are ignored."""
    order = Order(
        client_order_id="c1",
        run_id="r",
        decision_id="r:BTCUSDT:0",
        symbol="BTCUSDT",
        side=Side.SELL,
        qty=Decimal("0.123456789"),
        reduce_only=False,
        leg="open",
        created_ms=7,
        stop_loss=50_100.5,
        take_profit=None,
    )
    saved = json.loads(json.dumps(order.to_state()))
    assert saved["qty"] == "0.123456789"
    assert Order.from_state(saved) == order
    older = {**saved, "id": "c1", "status": "submitted", "reject_reason": None}
    assert Order.from_state(older) == order

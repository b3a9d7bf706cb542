"""Property tests: random bars and orders through PaperBroker + Portfolio keep the books exact."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trader.broker.paper import PaperBroker
from trader.domain import Bar, Fill, Order, Side
from trader.instruments import BUILTIN_INSTRUMENTS, InstrumentBook
from trader.order_ids import client_order_id
from trader.portfolio import Portfolio

RUN = "prop"
STEP_MS = 300_000
T0_MS = 1_750_000_200_000
INITIAL = Decimal(10_000)
SYMBOLS = ("BTCUSDT", "DOGEUSDT")
LEGS = ("open", "close", "reduce")


@dataclass(frozen=True)
class OrderSpec:
    """A random order, in ticks and steps of its symbol, decided on the step's bar."""

    side: Side
    steps: int
    reduce_only: bool
    stop_offset_ticks: int | None
    take_offset_ticks: int | None


@dataclass(frozen=True)
class Step:
    """One bar of one symbol (in ticks) and the orders decided on it."""

    symbol: str
    low_ticks: int
    range_ticks: int
    open_frac: float
    close_frac: float
    orders: tuple[OrderSpec, ...]


order_specs = st.builds(
    OrderSpec,
    side=st.sampled_from(Side),
    steps=st.integers(1, 40),
    reduce_only=st.booleans(),
    stop_offset_ticks=st.none() | st.integers(-400, 400),
    take_offset_ticks=st.none() | st.integers(-400, 400),
)
steps_strategy = st.lists(
    st.builds(
        Step,
        symbol=st.sampled_from(SYMBOLS),
        low_ticks=st.integers(1_000, 3_000),
        range_ticks=st.integers(0, 300),
        open_frac=st.floats(0, 1),
        close_frac=st.floats(0, 1),
        orders=st.lists(order_specs, max_size=len(LEGS)).map(tuple),
    ),
    min_size=1,
    max_size=40,
)


def tick_price(symbol: str, ticks: int) -> float:
    """A float price on the symbol's tick, as the exchange's decimal strings parse to."""
    return float(ticks * BUILTIN_INSTRUMENTS[symbol].tick_size * 100)


def build_bar(step: Step, index: int) -> Bar:
    """The step's bar: valid OHLC (low <= open, close <= high), all on the tick."""
    high_ticks = step.low_ticks + step.range_ticks
    open_ticks = step.low_ticks + round(step.open_frac * step.range_ticks)
    close_ticks = step.low_ticks + round(step.close_frac * step.range_ticks)
    price = {
        name: tick_price(step.symbol, t)
        for name, t in (
            ("o", open_ticks),
            ("h", high_ticks),
            ("l", step.low_ticks),
            ("c", close_ticks),
        )
    }
    return Bar(
        step.symbol,
        "5",
        T0_MS + index * STEP_MS,
        price["o"],
        price["h"],
        price["l"],
        price["c"],
        1.0,
        1.0,
    )


def build_orders(step: Step, bar: Bar) -> list[Order]:
    """Orders decided on `bar`, one per leg, with levels a random number of ticks from close."""
    inst = BUILTIN_INSTRUMENTS[step.symbol]
    orders = []
    for leg, spec in zip(LEGS, step.orders, strict=False):

        def level(offset: int | None) -> float | None:
            return None if offset is None else bar.close + float(offset * inst.tick_size * 10)

        orders.append(
            Order(
                client_order_id=client_order_id(RUN, step.symbol, bar.start_ms, leg),
                run_id=RUN,
                decision_id=None,
                symbol=step.symbol,
                side=spec.side,
                qty=spec.steps * inst.qty_step,
                reduce_only=spec.reduce_only,
                leg=leg,
                created_ms=bar.close_ms,
                stop_loss=level(spec.stop_offset_ticks),
                take_profit=level(spec.take_offset_ticks),
            )
        )
    return orders


def new_pair() -> tuple[PaperBroker, Portfolio]:
    """A fresh broker and portfolio with realistic costs."""
    broker = PaperBroker(
        run_id=RUN,
        taker_fee=Decimal("0.00055"),
        slippage_bps=Decimal(3),
        instruments=InstrumentBook(),
    )
    return broker, Portfolio(INITIAL)


def assert_books_consistent(broker: PaperBroker, portfolio: Portfolio, cash_flow: Decimal) -> None:
    """The accounting identities that must hold after every bar."""
    equity = portfolio.equity
    assert equity.is_finite()
    assert equity == INITIAL + portfolio.realized_pnl + portfolio.unrealized_pnl - portfolio.fees
    assert portfolio.cash == INITIAL + portfolio.realized_pnl - portfolio.fees
    assert portfolio.drawdown >= 0
    assert portfolio.peak_equity >= equity
    unrealized = Decimal(0)
    exposure = Decimal(0)
    for symbol in SYMBOLS:
        position = portfolio.position(symbol)
        assert broker.net_qty(symbol) == position.qty
        mark = portfolio.mark_price(symbol)
        if mark is not None:
            unrealized += position.qty * (mark - position.avg_price) if position.qty else 0
            exposure += abs(position.qty) * mark
    # Running totals equal a recomputation from scratch.
    assert portfolio.unrealized_pnl == unrealized
    assert portfolio.gross_exposure_usdt == exposure
    # Realised + unrealised equals the traded cash flow plus holdings at mark, up to the
    # quantisation of the stored average entry price (1e-10 per unit held or closed).
    holdings = sum(
        (portfolio.position(s).qty * (portfolio.mark_price(s) or 0) for s in SYMBOLS), Decimal(0)
    )
    assert abs(
        portfolio.realized_pnl + portfolio.unrealized_pnl - (cash_flow + holdings)
    ) < Decimal("1e-6")


async def run_steps(
    broker: PaperBroker, portfolio: Portfolio, steps: list[Step], counters: dict[str, int]
) -> tuple[list[Fill], Decimal]:
    """Drive the pair as the engine does: fills, then marks, then new orders."""
    all_fills: list[Fill] = []
    cash_flow = Decimal(0)
    for step in steps:
        bar = build_bar(step, counters[step.symbol])
        counters[step.symbol] += 1
        fills = await broker.on_bar(bar)
        for fill in fills:
            assert Decimal(repr(bar.low)) <= fill.price <= Decimal(repr(bar.high))
            assert fill.qty > 0
            assert fill.fee >= 0
            portfolio.apply_fill(fill)
            cash_flow -= fill.signed_qty * fill.price
        portfolio.mark(bar.symbol, bar.close)
        all_fills.extend(fills)
        for order in build_orders(step, bar):
            await broker.submit(order)
    return all_fills, cash_flow


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps_strategy)
async def test_books_stay_exact_when_random_bars_and_orders_flow(steps: list[Step]) -> None:
    """Equity identity, running totals, fill-in-bar and broker/portfolio qty agreement all hold."""
    broker, portfolio = new_pair()
    counters: dict[str, int] = defaultdict(int)
    cash_flow = Decimal(0)
    for step in steps:
        _, flow = await run_steps(broker, portfolio, [step], counters)
        cash_flow += flow
        assert_books_consistent(broker, portfolio, cash_flow)


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps_strategy, split=st.integers(0, 40))
async def test_restored_pair_matches_original_when_state_round_trips(
    steps: list[Step], split: int
) -> None:
    """Broker and portfolio restored from JSON mid-run continue exactly like the originals."""
    broker, portfolio = new_pair()
    counters: dict[str, int] = defaultdict(int)
    head, tail = steps[:split], steps[split:]
    await run_steps(broker, portfolio, head, counters)
    restored_broker, restored_portfolio = new_pair()
    restored_broker.load_state_dict(json.loads(json.dumps(broker.state_dict())))
    restored_portfolio.load_state_dict(json.loads(json.dumps(portfolio.state_dict())))
    original_fills, _ = await run_steps(broker, portfolio, tail, defaultdict(int, counters))
    restored_fills, _ = await run_steps(
        restored_broker, restored_portfolio, tail, defaultdict(int, counters)
    )
    assert restored_fills == original_fills
    assert restored_broker.state_dict() == broker.state_dict()
    assert restored_portfolio.state_dict() == portfolio.state_dict()

"""Property tests: random decision streams and prices never get an order past a limit.

Each example is a run over three symbols on 1-minute bars: prices follow random returns (partly
shared, so some symbols correlate; sometimes a jump or a missing bar), equity wanders (so the
soft and hard drawdown and daily-loss limits fire), an operator kills and resumes at random,
and random decisions are reviewed at random moments inside each bar. Approved intents fill at
once. After every review the test checks, independently of the layer's own arithmetic, that no
approved order breaches a limit, that reducing orders only reduce, and that once HALTED nothing
opens until a resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from decimal import Decimal

from hypothesis import event, given, settings
from hypothesis import strategies as st

from risk.context import RiskContext
from risk.correlation import RollingCorrelation
from risk.gate import OrderIntent, SymbolLimits
from risk.layer import RiskLayer
from risk.machine import RiskOutcome
from risk.rate import WINDOW_MS
from risk.state import TradingState
from tests.risk.builders import T0_MS, risk_limits
from trader.domain import Action, Bar, Decision, Side

D = Decimal
BAR_MS = 60_000
LIMITS = risk_limits(
    max_drawdown=0.25,
    soft_drawdown=0.12,
    max_daily_loss=0.2,
    max_position_notional_usdt=6_000.0,
    max_gross_exposure=1.5,
    max_leverage=2.0,
    max_orders_per_minute=4,
    min_confidence=0.1,
    stale_feed_bars=1,
    max_correlated_exposure=0.8,
    correlation_threshold=0.5,
    correlation_window_bars=20,
    correlation_min_bars=5,
    atr_period=5,
    risk_per_trade=0.05,
)
SYMBOLS: dict[str, tuple[SymbolLimits, float]] = {
    "BTCUSDT": (SymbolLimits(D("0.001"), D("0.002"), D("5")), 50_000.0),
    "DOGEUSDT": (SymbolLimits(D("1"), D("1"), D("5")), 0.2),  # min notional binds: 25 DOGE
    "ETHUSDT": (SymbolLimits(D("0.01"), D("0.01"), D("5")), 2_000.0),
}
NAMES = sorted(SYMBOLS)


@dataclass(frozen=True)
class _Step:
    """One bar of a run: price moves, a missed bar, equity, an operator command, decisions."""

    common: float  # log return shared by the symbols (in proportion to their sharing weight)
    own: tuple[float, float, float]  # each symbol's own log return
    jump: float  # BTC's close is multiplied by this (1.0 most of the time)
    skip: str | None  # a symbol whose bar the feed misses
    equity_move: float  # relative equity change at this bar's mark
    control: str | None  # "kill", "kill_keep" (no flatten) or "resume"
    decisions: list[tuple[str, Action, float, float, float | None, int]]


_returns = st.floats(-0.03, 0.03, allow_nan=False)
_fraction = st.one_of(st.just(1.0), st.floats(0.0, 1.0))
_decision = st.tuples(
    st.sampled_from(NAMES),
    st.sampled_from(list(Action)),
    _fraction,  # size
    _fraction,  # confidence
    st.one_of(st.none(), _fraction),  # strategic risk budget
    st.integers(0, BAR_MS - 1),  # when inside the bar it is reviewed
)
_step = st.builds(
    _Step,
    common=_returns,
    own=st.tuples(_returns, _returns, _returns),
    jump=st.sampled_from([1.0] * 12 + [1.5, 0.6]),
    skip=st.sampled_from([None] * 10 + NAMES),
    equity_move=st.floats(-0.03, 0.03, allow_nan=False),
    control=st.sampled_from([None] * 20 + ["kill", "kill_keep", "resume"]),
    decisions=st.lists(_decision, max_size=6),
)
_QUIET = _Step(0.0, (0.0, 0.0, 0.0), 1.0, None, 0.0, None, [])
_sharing = st.one_of(st.just(1.0), st.floats(0.0, 1.0))
_run = st.tuples(
    st.tuples(_sharing, _sharing, _sharing),  # how much of each symbol's return is shared
    st.lists(_step, min_size=1, max_size=30),
)


@dataclass
class _Sim:
    """The test's own books: prices, positions, equity, order times, and the halt it expects.

    `seen` holds the closes the layer was fed: limits are judged at the prices risk can know.
    """

    layer: RiskLayer = field(default_factory=lambda: RiskLayer(LIMITS))
    true: dict[str, float] = field(default_factory=lambda: {s: p for s, (_, p) in SYMBOLS.items()})
    seen: dict[str, float] = field(default_factory=dict)
    positions: dict[str, Decimal] = field(default_factory=dict)
    equity: Decimal = field(default_factory=lambda: D("10000"))
    order_times_ms: list[int] = field(default_factory=list)
    halted: bool = False
    returns: RollingCorrelation = field(
        default_factory=lambda: RollingCorrelation(window_bars=20, min_bars=5)
    )

    def observe(self, outcome: RiskOutcome, now_ms: int) -> None:
        """Expect HALTED after a `halted` event, and carry out a flatten at once."""
        if any(risk_event.kind == "halted" for risk_event in outcome.events):
            self.halted = True
        if outcome.flatten:
            for intent in self.layer.flatten_intents(self.positions):
                _assert_reducing(intent, self)
                _fill(intent, self, now_ms)


def _move_prices(sim: _Sim, index: int, step: _Step, sharing: tuple[float, ...]) -> None:
    start_ms = T0_MS + index * BAR_MS
    for symbol, weight, own in zip(NAMES, sharing, step.own, strict=True):
        previous = sim.true[symbol]
        close = previous * math.exp(weight * step.common + (1 - weight) * own)
        if symbol == NAMES[0]:
            close *= step.jump
        sim.true[symbol] = close
        if step.skip == symbol:
            continue  # the feed missed this bar
        high, low = max(previous, close) * 1.001, min(previous, close) * 0.999
        sim.layer.on_bar(Bar(symbol, "1", start_ms, previous, high, low, close, 1.0, close))
        last_seen = sim.seen.get(symbol)
        if last_seen is not None:
            sim.returns.add(symbol, start_ms, math.log(close / last_seen))
        sim.seen[symbol] = close


def _value(qty: Decimal, symbol: str, sim: _Sim) -> Decimal:
    return abs(qty) * D(repr(sim.seen[symbol]))


def _assert_opening_within_limits(intent: OrderIntent, sim: _Sim, now_ms: int) -> None:
    limits, _ = SYMBOLS[intent.symbol]
    price = D(repr(sim.seen[intent.symbol]))
    assert intent.qty % limits.qty_step == 0
    assert intent.qty >= limits.min_qty
    assert intent.qty * price >= limits.min_notional_usdt
    held = sim.positions.get(intent.symbol, D(0))
    signed = intent.qty if intent.side is Side.BUY else -intent.qty
    assert held * signed >= 0, "an opening leg never nets against an opposite position"
    after = {**sim.positions, intent.symbol: held + signed}
    own_value = _value(after[intent.symbol], intent.symbol, sim)
    assert own_value <= D(repr(LIMITS.max_position_notional_usdt))
    assert own_value <= D(repr(LIMITS.max_leverage)) * sim.equity
    gross = sum((_value(q, s, sim) for s, q in after.items()), D(0))
    gross_cap = D(repr(LIMITS.max_gross_exposure)) * sim.equity
    assert gross <= gross_cap
    if gross > gross_cap * D("0.95"):
        event("opened up to the gross cap")
    group = [
        s
        for s, q in after.items()
        if s != intent.symbol and q != 0 and _moves_with(sim, intent.symbol, signed, s, q)
    ]
    if group:
        group_value = own_value + sum((_value(after[s], s, sim) for s in group), D(0))
        group_cap = D(repr(LIMITS.max_correlated_exposure)) * sim.equity
        assert group_value <= group_cap
        event("opened within a correlated group")
        if group_value > group_cap * D("0.95"):
            event("opened up to the correlated cap")
    recent = [t for t in sim.order_times_ms if now_ms - WINDOW_MS < t <= now_ms]
    assert len(recent) < LIMITS.max_orders_per_minute
    assert not sim.halted, "nothing opens once HALTED until a resume"
    assert sim.layer.state is TradingState.ACTIVE


def _moves_with(sim: _Sim, symbol: str, signed: Decimal, other: str, qty: Decimal) -> bool:
    correlation = sim.returns.correlation(symbol, other)
    same_way = 1 if (qty > 0) == (signed > 0) else -1
    return correlation is not None and same_way * correlation >= LIMITS.correlation_threshold


def _assert_reducing(intent: OrderIntent, sim: _Sim) -> None:
    held = sim.positions.get(intent.symbol, D(0))
    assert held != 0
    assert intent.qty == abs(held)
    assert (intent.side is Side.SELL) == (held > 0)


def _fill(intent: OrderIntent, sim: _Sim, now_ms: int) -> None:
    signed = intent.qty if intent.side is Side.BUY else -intent.qty
    sim.positions[intent.symbol] = sim.positions.get(intent.symbol, D(0)) + signed
    sim.order_times_ms.append(now_ms)


def _review(
    sim: _Sim, close_ms: int, drawn: tuple[str, Action, float, float, float | None, int]
) -> None:
    symbol, action, size, confidence, budget, offset_ms = drawn
    now_ms = close_ms + offset_ms
    decision = Decision(symbol, close_ms - BAR_MS, action, size=size, confidence=confidence)
    context = RiskContext(
        now_ms=now_ms,
        equity=sim.equity,
        positions=dict(sim.positions),
        limits=SYMBOLS[symbol][0],
        risk_budget=budget,
    )
    verdict = sim.layer.review(decision, context=context)
    assert len(verdict.events) == len(verdict.denied)
    for denial in verdict.denied:
        event(f"denied {denial.reason}")
    for intent in verdict.approved:
        if intent.reduce_only:
            _assert_reducing(intent, sim)
        else:
            _assert_opening_within_limits(intent, sim, now_ms)
            event("opened")
        _fill(intent, sim, now_ms)


def _control(sim: _Sim, command: str | None, now_ms: int) -> None:
    if command == "resume":
        sim.layer.resume(reason="property", now_ms=now_ms)
        sim.halted = False
    elif command in ("kill", "kill_keep"):
        outcome = sim.layer.kill(reason="property", now_ms=now_ms, flatten=command == "kill")
        sim.observe(outcome, now_ms)


@settings(max_examples=150, deadline=None, database=None)
@given(_run)
def test_no_approved_order_breaches_a_limit_when_streams_are_random(
    run: tuple[tuple[float, float, float], list[_Step]],
) -> None:
    """Whatever the prices, equity and decisions, every approved order stays within every limit."""
    sharing, steps = run
    sim = _Sim()
    for index, step in enumerate(steps):
        _move_prices(sim, index, step, sharing)
        close_ms = T0_MS + (index + 1) * BAR_MS
        moved = sim.equity * D(repr(1.0 + step.equity_move))
        sim.equity = max(D(1), moved.quantize(D("0.01")))
        sim.observe(sim.layer.on_mark(equity=sim.equity, now_ms=close_ms), close_ms)
        _control(sim, step.control, close_ms)
        for drawn in sorted(step.decisions, key=lambda d: d[-1]):
            _review(sim, close_ms, drawn)
        if sim.halted:
            assert sim.layer.state is TradingState.HALTED


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(_decision, min_size=1, max_size=40), st.booleans())
def test_nothing_opens_when_halted_until_resume(
    decisions: list[tuple[str, Action, float, float, float | None, int]], by_kill: bool
) -> None:
    """After a kill or a drawdown halt no decision stream opens anything, across a restart too."""
    sim = _Sim()
    _move_prices(sim, 0, _QUIET, (0.0, 0.0, 0.0))
    close_ms = T0_MS + BAR_MS
    sim.layer.on_mark(equity=D("10000"), now_ms=close_ms)
    if by_kill:
        sim.observe(sim.layer.kill(reason="property", now_ms=close_ms, flatten=False), close_ms)
    else:
        sim.observe(sim.layer.on_mark(equity=D("7000"), now_ms=close_ms), close_ms)
    assert sim.halted
    saved = sim.layer.state_dict()
    for drawn in decisions:
        _review(sim, close_ms, drawn)
    # The restart: the saved state, then the bars re-fed as the engine's warm() does (without
    # them every opening would be denied for want of a price, whatever the state).
    sim.layer = RiskLayer(LIMITS)
    sim.layer.load_state_dict(saved)
    _move_prices(sim, 0, _QUIET, (0.0, 0.0, 0.0))
    for drawn in decisions:
        _review(sim, close_ms, drawn)
    sim.layer.resume(reason="done", now_ms=close_ms)
    assert sim.layer.state is TradingState.ACTIVE


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.lists(_returns, min_size=6, max_size=12),
    st.lists(st.lists(_decision, min_size=1, max_size=6), min_size=1, max_size=8),
)
def test_correlated_group_stays_under_cap_when_symbols_move_together(
    warmup: list[float], rounds: list[list[tuple[str, Action, float, float, float | None, int]]]
) -> None:
    """With every symbol moving alike, same-direction positions together stay under the cap."""
    sim = _Sim()
    for index, common in enumerate(warmup):
        _move_prices(sim, index, replace(_QUIET, common=common), (1.0, 1.0, 1.0))
    for offset, decisions in enumerate(rounds):
        index = len(warmup) + offset
        _move_prices(sim, index, _QUIET, (1.0, 1.0, 1.0))
        close_ms = T0_MS + (index + 1) * BAR_MS
        sim.layer.on_mark(equity=sim.equity, now_ms=close_ms)
        for drawn in sorted(decisions, key=lambda d: d[-1]):
            _review(sim, close_ms, drawn)

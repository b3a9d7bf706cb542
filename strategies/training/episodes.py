"""Offline episodes over historical bars: the model run in stream order, and a paper account.

Owns three things the policy stage of training needs:

- `stream_pass`: a model run over consecutive rows of `TrainingSeries` as the stream runs it
  (carry passed from bar to bar, the strategic module on the first bar and every K bars after),
  batched over symbols and over chunks of each span, with a flat account vector, keeping every
  bar's outputs and the readout the fused tactical head reads;
- `PaperBook`: a vectorised stand-in for the paper broker over parallel episodes: a decision at
  bar t's close fills at bar t+1's open with the broker's slippage and taker fee and is marked at
  bar t+1's close; the reward is the one `trader/rewards.py` defines (the symbol's PnL change over
  the next bar, net of fees, over equity at the decision), HICRA-shaped by decision type;
- `score_decisions`: a decide function run over a pass's bars, scored by the book (Sharpe of the
  per-bar returns).

Protective stops and the risk layer's sizing are not simulated here; evaluation runs the real
engine. It must not read files or import the trader's I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from strategies.base import AccountState
from strategies.hicra import HicraWeights, weight_for
from strategies.hrm.checkpoint import StreamModel
from strategies.hrm.heads import ACTIONS, FeatureBatch, HRMOutputs
from strategies.hrm.layers import instrument_bucket, timeframe_index
from strategies.hrm.policy import DecisionContext, SymbolOutputs
from strategies.training.data import TrainingSeries, WindowSettings, scaled_windows
from trader.domain import INTERVAL_MS, Action, Bar, Decision
from trader.features.schema import ACCOUNT_FEATURES

MS_PER_YEAR = 365 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class OutputTable:
    """The heads a decision reads, as numpy columns (one row per bar): fast to index."""

    action: np.ndarray  # (n,) int64 argmax of the action logits
    size: np.ndarray  # (n,)
    confidence: np.ndarray  # (n,)
    stop_loss_atr: np.ndarray  # (n,)
    take_profit_atr: np.ndarray  # (n,)
    up_probability: np.ndarray  # (n,)
    risk_budget: np.ndarray  # (n,)
    returns_atr: np.ndarray  # (n, 1 + H): the next-bar head, then the horizon heads

    @staticmethod
    def of(outputs: HRMOutputs) -> OutputTable:
        """The table of some outputs (the same conversions as `strategy.row_outputs`)."""

        def column(t: Tensor) -> np.ndarray:
            return np.asarray(t.detach().float().cpu().numpy(), dtype=np.float64)

        returns = torch.cat((outputs.next_return[:, None], outputs.horizon_returns), dim=1)
        return OutputTable(
            action=outputs.action_logits.argmax(dim=1).cpu().numpy().astype(np.int64),
            size=column(outputs.size),
            confidence=column(outputs.confidence),
            stop_loss_atr=column(outputs.stop_loss_atr),
            take_profit_atr=column(outputs.take_profit_atr),
            up_probability=column(torch.sigmoid(outputs.direction_logit)),
            risk_budget=column(outputs.risk_budget),
            returns_atr=column(returns),
        )


@dataclass(frozen=True, slots=True)
class PassOutputs:
    """One series' outputs over consecutive rows `rows` (as a stream run saw them)."""

    series: TrainingSeries
    rows: np.ndarray  # (n,) int64 consecutive rows of the series
    outputs: HRMOutputs  # n rows, CPU float32
    table: OutputTable  # the same, as numpy columns
    readout: Tensor  # (n, D) what the tactical head read
    strategic: np.ndarray  # (n,) bool: the strategic module ran on the bar
    act_steps: np.ndarray  # (n,) int64
    horizons: tuple[int, ...]  # the model's horizon-return heads, in bars

    def row(self, k: int, *, horizon_bars: int) -> SymbolOutputs:
        """Bar k as `strategy.row_outputs` gives it (the return of `horizon_bars`)."""
        t = self.table
        known = horizon_bars != 1 and horizon_bars in self.horizons
        column = self.horizons.index(horizon_bars) + 1 if known else 0
        atr = float(self.series.atr[self.rows[k]])
        return SymbolOutputs(
            action=ACTIONS[int(t.action[k])],
            size=float(t.size[k]),
            confidence=float(t.confidence[k]),
            stop_loss_atr=float(t.stop_loss_atr[k]),
            take_profit_atr=float(t.take_profit_atr[k]),
            expected_return=float(t.returns_atr[k, column]) * atr,
            up_probability=float(t.up_probability[k]),
            risk_budget=float(t.risk_budget[k]),
        )


@torch.inference_mode()
def stream_pass(
    model: StreamModel,
    series: Sequence[TrainingSeries],
    spans: Sequence[np.ndarray],
    *,
    windows: WindowSettings,
    strategic_every: int,
    chunks: int = 4,
) -> list[PassOutputs]:
    """Run the model over each series' span of consecutive rows, `chunks` pieces per span in
    parallel (each piece starts with a fresh carry and a strategic update). A span's first
    `len % chunks` rows are dropped so the pieces are equal."""
    pieces: list[tuple[int, np.ndarray]] = []
    for index, span in enumerate(spans):
        length = span.shape[0] // chunks
        rest = span.shape[0] - length * chunks
        pieces += [
            (index, span[rest + c * length : rest + (c + 1) * length]) for c in range(chunks)
        ]
    length = pieces[0][1].shape[0]
    which = np.array([p[0] for p in pieces])
    device = next(model.parameters()).device
    buckets = model.config.instrument_buckets
    instrument = torch.tensor([instrument_bucket(series[i].symbol, buckets) for i in which])
    timeframe = torch.tensor([timeframe_index(series[i].interval) for i in which])
    account = torch.zeros(len(pieces), len(ACCOUNT_FEATURES))  # (B, A) a flat account
    carry = model.initial_carry(len(pieces))
    steps: list[tuple[HRMOutputs, Tensor, Tensor, bool]] = []
    for k in range(length):
        rows = np.array([p[1][k] for p in pieces])
        strategic = model.needs_strategic_every_bar or k % strategic_every == 0
        batch = FeatureBatch(
            scaled_windows(series, which, rows, windows.tactical).to(device),
            account.to(device),
            instrument.to(device),
            timeframe.to(device),
            scaled_windows(series, which, rows, windows.strategic).to(device)
            if strategic
            else None,
        )
        result = model.infer(carry, batch)
        carry = result.carry
        out = HRMOutputs(*(t.detach().float().cpu() for t in result.outputs.tensors()))
        steps.append((out, result.readout.float().cpu(), result.act_steps.cpu(), strategic))
    horizons = model.config.horizons
    return [_collect(series[i], pieces, steps, i, horizons) for i in range(len(spans))]


def _collect(
    series: TrainingSeries,
    pieces: list[tuple[int, np.ndarray]],
    steps: list[tuple[HRMOutputs, Tensor, Tensor, bool]],
    index: int,
    horizons: tuple[int, ...],
) -> PassOutputs:
    """One series' rows in time order from the per-step batches."""
    columns = [j for j, (i, _) in enumerate(pieces) if i == index]
    order = [(j, k) for j in columns for k in range(len(steps))]
    heads = [step[0].tensors() for step in steps]  # per step, every head in field order
    outputs = HRMOutputs(
        *(torch.stack([heads[k][f][j] for j, k in order]) for f in range(len(heads[0])))
    )
    return PassOutputs(
        series=series,
        rows=np.concatenate([pieces[j][1] for j in columns]),
        outputs=outputs,
        table=OutputTable.of(outputs),
        readout=torch.stack([steps[k][1][j] for j, k in order]),
        strategic=np.array([steps[k][3] for _, k in order]),
        act_steps=np.array([int(steps[k][2][j]) for j, k in order], dtype=np.int64),
        horizons=horizons,
    )


@dataclass(frozen=True, slots=True)
class PaperCosts:
    """The paper broker's costs (the `[broker]` settings)."""

    taker_fee: float = 0.00055
    slippage_bps: float = 1.0
    initial_equity: float = 10_000.0


class PaperBook:
    """Accounts of parallel single-symbol episodes; see the module docstring."""

    def __init__(self, episodes: int, costs: PaperCosts) -> None:
        self.costs = costs
        self.qty = np.zeros(episodes)
        self.cash = np.full(episodes, costs.initial_equity)
        self.bars_held = np.zeros(episodes, dtype=np.int64)

    def account(self, e: int, price: float) -> AccountState:
        """Episode e's account at `price` (enough for the decision rule: the held side)."""
        notional = float(self.qty[e]) * price
        return AccountState(
            equity=float(self.cash[e]) + notional,
            position_qty=float(self.qty[e]),
            position_notional=notional,
            avg_price=price,
            unrealized_pnl=0.0,
            drawdown=0.0,
            bars_in_position=int(self.bars_held[e]),
        )

    def execute(
        self,
        decisions: Sequence[Decision],
        close_now: np.ndarray,
        next_open: np.ndarray,
        next_close: np.ndarray,
    ) -> np.ndarray:
        """Fill the decisions at the next open, mark at the next close; per-episode returns."""
        equity = self.cash + self.qty * close_now
        target = self.qty.copy()
        for e, decision in enumerate(decisions):
            if decision.action in (Action.BUY_LONG, Action.SELL_SHORT):
                side = 1.0 if decision.action is Action.BUY_LONG else -1.0
                target[e] = side * decision.size * equity[e] / close_now[e]
            elif decision.action in (Action.CLOSE_LONG, Action.CLOSE_SHORT):
                target[e] = 0.0
        trade = target - self.qty
        price = next_open * (1.0 + np.sign(trade) * self.costs.slippage_bps * 1e-4)
        self.cash -= trade * price + np.abs(trade) * price * self.costs.taker_fee
        self.bars_held = np.where(target == 0.0, 0, np.where(trade == 0.0, self.bars_held + 1, 1))
        self.qty = target
        return np.asarray((self.cash + self.qty * next_close) / equity - 1.0)


#: Chooses one Decision for one bar: (outputs row, decision context) -> Decision.
DecideFn = Callable[[SymbolOutputs, DecisionContext], Decision]


def score_decisions(
    passes: Sequence[PassOutputs],
    decide: DecideFn,
    *,
    costs: PaperCosts,
    horizon_bars: int,
) -> dict[str, float]:
    """Run `decide` over every pass's bars (one episode per series) through a `PaperBook`.

    Returns the mean over series of the annualised Sharpe of per-bar returns, the mean total
    return and the number of position changes.
    """
    sharpes, totals, trades = [], [], 0
    for p in passes:
        returns, changes = _episode(p, decide, costs, horizon_bars)
        sharpes.append(sharpe(returns, INTERVAL_MS[p.series.interval]))
        totals.append(float(np.prod(1.0 + returns) - 1.0))
        trades += changes
    return {
        "sharpe": float(np.mean(sharpes)),
        "total_return": float(np.mean(totals)),
        "position_changes": float(trades),
    }


def _episode(
    p: PassOutputs, decide: DecideFn, costs: PaperCosts, horizon_bars: int
) -> tuple[np.ndarray, int]:
    s = p.series
    book = PaperBook(1, costs)
    returns = np.zeros(p.rows.shape[0] - 1)
    changes = 0
    for k, row in enumerate(p.rows[:-1]):
        close = float(s.close[row])
        decision = decide(
            p.row(k, horizon_bars=horizon_bars),
            decision_context(s, int(row), book.account(0, close), bool(p.strategic[k])),
        )
        before = float(book.qty[0])
        step = book.execute([decision], s.close[[row]], s.open[[row + 1]], s.close[[row + 1]])
        returns[k] = float(step[0])
        changes += int(float(book.qty[0]) != before)
    return returns, changes


def decision_context(
    s: TrainingSeries, row: int, account: AccountState, strategic: bool
) -> DecisionContext:
    """The context `policy.to_decision` needs for bar `row` of a series."""
    close = float(s.close[row])
    bar = Bar(s.symbol, s.interval, int(s.start_ms[row]), close, close, close, close, 0.0, 0.0)
    return DecisionContext(
        bar=bar,
        account=account,
        atr=float(s.atr[row]) * close,
        strategic=strategic,
        act_steps=1,
        model_version="offline",
    )


def shaped(
    raw_return: np.ndarray, decisions: Sequence[Decision], weights: HicraWeights
) -> np.ndarray:
    """HICRA-shaped rewards: each raw return times its decision type's weight."""
    factors = np.array([weight_for(d.decision_type, weights) for d in decisions])
    return np.asarray(raw_return * factors)


def sharpe(returns: np.ndarray, interval_ms: int) -> float:
    """Annualised Sharpe of per-bar returns (365-day year); 0 for a flat or tiny series."""
    if returns.shape[0] < 2:
        return 0.0
    std = float(returns.std(ddof=1))
    if std < 1e-12:
        return 0.0
    return float(returns.mean()) / std * math.sqrt(MS_PER_YEAR / interval_ms)

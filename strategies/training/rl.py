"""The policy stage: calibrate the forecast rule, fine-tune the policy heads offline, choose.

Owns what happens after supervised training, on the development data only:

1. `calibrate_rule`: the forecast rule's thresholds (which return head it reads, the fee
   multiple to enter, the confidence floor) chosen on the validation rows by the Sharpe of the
   decisions through a `PaperBook`;
2. `fine_tune_policy`: PPO (clipped actor-critic with GAE) on the action logits, the size and the
   value rows of the fused tactical head, over episodes of training bars that pay the paper
   broker's fee and slippage; rewards are `trader/rewards.py`'s per-bar returns, HICRA-shaped by
   decision type. The trunk is frozen: its readout is computed once per bar by
   `episodes.stream_pass` (with a flat account vector), so only those head rows change;
3. `choose`: the policy if it beats the calibrated rule on validation, else the rule.

It must not read files, touch the engine or change any weight outside those head rows.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from strategies.hicra import HicraWeights
from strategies.hrm.checkpoint import StreamModel
from strategies.hrm.heads import ACTIONS, SIZE, VALUE
from strategies.hrm.policy import DecisionContext, PolicySettings, SymbolOutputs, to_decision
from strategies.training.episodes import (
    OutputTable,
    PaperBook,
    PaperCosts,
    PassOutputs,
    decision_context,
    score_decisions,
    shaped,
)
from trader.domain import Decision

#: Grid of the rule calibration: return head (bars), entry fee multiple, confidence floor (0
#: switches the confidence gate off: a model whose confidence head sits below 0.5 still gets a
#: rule that trades on its return forecast). Ties keep the earlier candidate.
RULE_HORIZONS = (1, 8, 32)
RULE_ENTRY_MULTIPLES = (0.5, 1.0, 2.0, 4.0, 8.0)
RULE_MIN_CONFIDENCE = (0.0, 0.5, 0.55)
#: The thresholds the policy head decides with (built once: `_simulate` decides per bar and
#: episode, and a trained head reads only `min_risk_budget` of them).
_POLICY_SETTINGS = PolicySettings()


def calibrate_rule(
    val: Sequence[PassOutputs], *, costs: PaperCosts
) -> tuple[PolicySettings, dict[str, float]]:
    """The rule thresholds with the best mean validation Sharpe, and that score."""
    best: tuple[PolicySettings, dict[str, float]] | None = None
    for horizon, entry, confidence in itertools.product(
        RULE_HORIZONS, RULE_ENTRY_MULTIPLES, RULE_MIN_CONFIDENCE
    ):
        settings = PolicySettings(
            taker_fee=costs.taker_fee,
            entry_fee_multiple=entry,
            exit_fee_multiple=min(0.5, entry),
            min_confidence=confidence,
            horizon_bars=horizon,
        )

        def rule(
            out: SymbolOutputs, ctx: DecisionContext, s: PolicySettings = settings
        ) -> Decision:
            return to_decision(out, ctx, policy_trained=False, settings=s)

        score = score_decisions(val, rule, costs=costs, horizon_bars=horizon)
        if best is None or score["sharpe"] > best[1]["sharpe"]:
            best = (settings, score)
    assert best is not None
    return best


@dataclass(frozen=True, slots=True)
class RLConfig:
    """PPO settings; small enough for a few CPU minutes.

    Attributes:
        reward_scale: shaped per-bar returns are multiplied by this (to order one) for PPO.
        size_std: standard deviation of the size policy in logit space.
    """

    iterations: int = 30
    episodes: int = 64
    episode_bars: int = 256
    epochs: int = 4
    minibatch: int = 2048
    lr: float = 3e-3
    gamma: float = 0.97
    gae_lambda: float = 0.9
    clip: float = 0.2
    entropy: float = 0.01
    value_coef: float = 0.5
    size_std: float = 0.5
    reward_scale: float = 100.0
    seed: int = 0


class PolicyHeads(nn.Module):
    """Copies of the action, size and value rows of a model's fused tactical head."""

    def __init__(self, model: StreamModel) -> None:
        super().__init__()
        head: nn.Linear = model.tactical_head
        self.base = len(ACTIONS) + len(model.config.horizons)
        rows = [*range(len(ACTIONS)), self.base + SIZE, self.base + VALUE]
        self.rows = rows
        self.linear = nn.Linear(head.in_features, len(rows))
        with torch.no_grad():
            self.linear.weight.copy_(head.weight[rows])
            self.linear.bias.copy_(head.bias[rows])

    def forward(self, readout: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Action logits (B, 5), size logit (B,), value (B,)."""
        out: Tensor = self.linear(readout)
        return out[:, : len(ACTIONS)], out[:, len(ACTIONS)], out[:, len(ACTIONS) + 1]

    def write_back(self, model: StreamModel) -> None:
        """Put the trained rows into the model's tactical head (nothing else changes)."""
        with torch.no_grad():
            model.tactical_head.weight[self.rows] = self.linear.weight
            model.tactical_head.bias[self.rows] = self.linear.bias


@dataclass(frozen=True, slots=True)
class _Batch:
    readout: Tensor  # (N, D)
    action: Tensor  # (N,) long
    size_logit: Tensor  # (N,)
    opens: Tensor  # (N,) bool: the size mattered (the decision opened a position)
    old_logp: Tensor  # (N,)
    advantage: Tensor  # (N,)
    returns: Tensor  # (N,)


def fine_tune_policy(
    model: StreamModel,
    train: Sequence[PassOutputs],
    *,
    costs: PaperCosts,
    weights: HicraWeights,
    config: RLConfig,
) -> tuple[PolicyHeads, list[dict[str, float]]]:
    """PPO on the policy rows over episodes drawn from the training passes; see the module
    docstring. Returns the trained heads (not yet written back) and per-iteration stats."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    heads = PolicyHeads(model)
    optimiser = torch.optim.Adam(heads.parameters(), lr=config.lr)
    history = []
    for iteration in range(config.iterations):
        batch, mean_return = _collect(heads, train, costs, weights, config, rng)
        size = batch.action.shape[0]
        for _ in range(config.epochs):
            order = torch.randperm(size)
            for lo in range(0, size, config.minibatch):
                idx = order[lo : lo + config.minibatch]
                loss = _ppo_loss(heads, batch, idx, config)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                nn.utils.clip_grad_norm_(heads.parameters(), 1.0)
                optimiser.step()
        history.append({"iteration": float(iteration + 1), "mean_shaped_return": mean_return})
    return heads, history


@torch.no_grad()
def _collect(
    heads: PolicyHeads,
    passes: Sequence[PassOutputs],
    costs: PaperCosts,
    weights: HicraWeights,
    config: RLConfig,
    rng: np.random.Generator,
) -> tuple[_Batch, float]:
    """Sample episodes with the current heads; advantages by GAE.

    The readouts do not depend on the actions (the trunk is frozen and reads a flat account),
    so every action of the iteration is drawn up front; only the book runs bar by bar.
    """
    length, count = config.episode_bars, config.episodes
    which = rng.integers(len(passes), size=count)
    starts = np.array([int(rng.integers(passes[i].rows.shape[0] - length - 1)) for i in which])
    readout = torch.stack(
        [passes[i].readout[s : s + length] for i, s in zip(which, starts, strict=True)], dim=1
    )  # (L, E, D)
    logits, size_mu, value = heads(readout.flatten(0, 1))
    action = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(1)  # (L * E,)
    size_logit = size_mu + config.size_std * torch.randn_like(size_mu)
    size = torch.sigmoid(size_logit).view(length, count).numpy()
    actions = action.view(length, count).numpy()
    episodes = [(passes[i], int(s)) for i, s in zip(which, starts, strict=True)]
    rewards, opens = _simulate(episodes, actions, size, costs, weights, config)
    reward = torch.from_numpy(rewards).float()  # (L, E)
    opened = torch.from_numpy(opens).flatten()
    logp = _action_logp(logits, action) + torch.where(
        opened, _size_logp(size_logit, size_mu, config), 0.0
    )
    advantage, returns = _gae(reward, value.view(length, count), config)
    flat = _Batch(readout.flatten(0, 1), action, size_logit, opened, logp, advantage, returns)
    return flat, float(reward.mean()) / config.reward_scale


def _simulate(
    episodes: list[tuple[PassOutputs, int]],
    actions: np.ndarray,
    size: np.ndarray,
    costs: PaperCosts,
    weights: HicraWeights,
    config: RLConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the sampled actions through a book: shaped rewards (L, E) and which opened (L, E)."""
    length, count = actions.shape
    book = PaperBook(count, costs)
    rewards = np.zeros((length, count))
    opens = np.zeros((length, count), dtype=bool)
    for k in range(length):
        decisions = []
        for e, (p, start) in enumerate(episodes):
            row = int(p.rows[start + k])
            out = dataclasses.replace(
                p.row(start + k, horizon_bars=1),
                action=ACTIONS[int(actions[k, e])],
                size=float(size[k, e]),
            )
            account = book.account(e, float(p.series.close[row]))
            ctx = decision_context(p.series, row, account, bool(p.strategic[start + k]))
            decisions.append(to_decision(out, ctx, policy_trained=True, settings=_POLICY_SETTINGS))
        rows = [(p.series, int(p.rows[start + k])) for p, start in episodes]
        raw = book.execute(
            decisions,
            np.array([x.close[r] for x, r in rows]),
            np.array([x.open[r + 1] for x, r in rows]),
            np.array([x.close[r + 1] for x, r in rows]),
        )
        rewards[k] = shaped(raw, decisions, weights) * config.reward_scale
        opens[k] = [d.size > 0.0 for d in decisions]
    return rewards, opens


def _gae(reward: Tensor, values: Tensor, config: RLConfig) -> tuple[Tensor, Tensor]:
    """Normalised GAE advantages and value targets, flattened. (L, E) -> (L * E,) each"""
    length, count = reward.shape
    advantage = torch.zeros_like(reward)
    running = torch.zeros(count)
    for k in reversed(range(length)):
        following = values[k + 1] if k + 1 < length else torch.zeros(count)
        delta = reward[k] + config.gamma * following - values[k]
        running = delta + config.gamma * config.gae_lambda * running
        advantage[k] = running
    returns = (advantage + values).flatten()
    advantage = advantage.flatten()
    return (advantage - advantage.mean()) / (advantage.std() + 1e-8), returns


def _size_logp(sample: Tensor, mu: Tensor, config: RLConfig) -> Tensor:
    """Log density of a size logit under N(mu, size_std). # (N,)"""
    std = config.size_std
    return -0.5 * ((sample - mu) / std).square() - math.log(std * math.sqrt(2.0 * math.pi))


def _action_logp(logits: Tensor, action: Tensor) -> Tensor:
    """Log probability of each sampled action. # (N,)"""
    return torch.log_softmax(logits, dim=-1).gather(1, action.unsqueeze(1)).squeeze(1)


def _entropy(logits: Tensor) -> Tensor:
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def _ppo_loss(heads: PolicyHeads, batch: _Batch, idx: Tensor, config: RLConfig) -> Tensor:
    logits, size_mu, value = heads(batch.readout[idx])
    opens = batch.opens[idx]
    size_logp = torch.where(opens, _size_logp(batch.size_logit[idx], size_mu, config), 0.0)
    logp = _action_logp(logits, batch.action[idx]) + size_logp
    ratio = torch.exp(logp - batch.old_logp[idx])
    advantage = batch.advantage[idx]
    clipped = torch.clamp(ratio, 1.0 - config.clip, 1.0 + config.clip)
    policy_loss = -torch.minimum(ratio * advantage, clipped * advantage).mean()
    value_loss = (value - batch.returns[idx]).square().mean()
    entropy = _entropy(logits).mean()
    loss: Tensor = policy_loss + config.value_coef * value_loss - config.entropy * entropy
    return loss


def score_policy(
    heads: PolicyHeads, val: Sequence[PassOutputs], *, costs: PaperCosts
) -> dict[str, float]:
    """Validation score of the greedy policy (argmax action, mean size) through a PaperBook."""

    def greedy(out: SymbolOutputs, ctx: DecisionContext) -> Decision:
        return to_decision(out, ctx, policy_trained=True, settings=_POLICY_SETTINGS)

    replaced = [dataclasses.replace(p, table=_with_heads(heads, p)) for p in val]
    return score_decisions(replaced, greedy, costs=costs, horizon_bars=1)


def _with_heads(heads: PolicyHeads, p: PassOutputs) -> OutputTable:
    """The pass's table with the action and size the heads would give."""
    with torch.no_grad():
        logits, size_logit, _ = heads(p.readout)
    return dataclasses.replace(
        p.table,
        action=logits.argmax(dim=1).numpy().astype(np.int64),
        size=torch.sigmoid(size_logit).double().numpy(),
    )

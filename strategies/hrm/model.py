"""The Hierarchical Reasoning Model for trading: config, carry, the two levels, ACT and heads.

Owns the HRM of DESIGN.md "The HRM in a stream" as one nanoGPT-style file. The strategic module
fH reads the strategic window (256 bars) and refines a few plan tokens z_H; it runs only on the
rows a caller marks (every K bars per symbol in the stream). The tactical module fL reads the
tactical window (64 bars) and the account token, conditioned on a goal vector from z_H, and
refines a few state tokens z_L every bar. A segment is: for marked rows, N cycles of one
strategic update, each but the last followed by T tactical steps; then, for every row, T
tactical steps with z_H held fixed, and the heads. Only the last strategic update and the last
tactical step carry gradients (the 1-step approximation); deep supervision runs M segments with
the carry detached between them; an ACT Q-head decides halt/continue after each segment.

Each level encodes its window once per call (`EncoderStack.encode`); its refinement steps then
move only the few latent tokens, which attend to that cached window memory, so extra steps cost
little. Heads and their units live in `heads.py`. It must not do I/O, read features from
buffers, or turn outputs into orders (that is `policy.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from strategies.hrm.heads import (
    ACTIONS,
    CONFIDENCE,
    Q_CONTINUE,
    Q_HALT,
    FeatureBatch,
    HRMOutputs,
    init_tactical_head_,
    tactical_outputs,
)
from strategies.hrm.layers import (
    EncoderStack,
    InputNetwork,
    KeyValue,
    lecun_init_,
    rms_norm,
    select_memory,
)

#: Bumped whenever the architecture below changes; checkpoints record it.
MODEL_CODE_VERSION = 1
Preset = Literal["tiny", "small", "base"]
Memory = list[KeyValue]


@dataclass(frozen=True, slots=True)
class HRMConfig:
    """Sizes, loop counts and ACT settings of one HRM; checked when built.

    `act_max_segments_scaled` is the inference-time budget for rows whose confidence is below
    `act_confidence_threshold` (seed 004: think longer on hard cases).
    """

    n_features: int = 31
    n_account: int = 4
    strategic_width: int = 128
    strategic_layers: int = 2
    tactical_width: int = 96
    tactical_layers: int = 1
    heads: int = 4
    expansion: float = 4.0
    strategic_tokens: int = 4
    tactical_tokens: int = 4
    cycles: int = 2
    tactical_steps: int = 2
    act_min_segments: int = 1
    act_max_segments: int = 2
    act_max_segments_scaled: int = 3
    act_confidence_threshold: float = 0.5
    act_exploration: float = 0.1
    horizons: tuple[int, ...] = (1, 8, 32)
    instrument_buckets: int = 512
    max_positions: int = 1104
    min_atr_distance: float = 0.25

    def __post_init__(self) -> None:
        for name in ("n_features", "n_account", "strategic_tokens", "tactical_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for width in (self.strategic_width, self.tactical_width):
            if width % self.heads or (width // self.heads) % 2:
                raise ValueError(f"width {width} must split into {self.heads} even heads")
        if min(self.strategic_layers, self.tactical_layers, self.cycles, self.tactical_steps) < 1:
            raise ValueError("layers, cycles and tactical_steps must be at least 1")
        if not 1 <= self.act_min_segments <= self.act_max_segments:
            raise ValueError("need 1 <= act_min_segments <= act_max_segments")
        if self.act_max_segments_scaled < self.act_max_segments:
            raise ValueError("act_max_segments_scaled must be >= act_max_segments")
        if not (0.0 <= self.act_exploration <= 1.0 and 0.0 <= self.act_confidence_threshold <= 1):
            raise ValueError("act_exploration and act_confidence_threshold must be in [0, 1]")
        if not self.horizons or min(self.horizons) < 1:
            raise ValueError(f"horizons must be positive bar counts, got {self.horizons}")
        if not self.min_atr_distance > 0.0:
            raise ValueError("min_atr_distance must be positive")

    @classmethod
    def preset(cls, name: Preset) -> HRMConfig:
        """`small` (CPU streaming), `base` (seed 003's sizes) or `tiny` (tests)."""
        if name == "small":
            return cls()
        if name == "base":
            return cls(
                strategic_width=512,
                strategic_layers=4,
                tactical_width=256,
                tactical_layers=3,
                heads=8,
                strategic_tokens=8,
                tactical_tokens=8,
                cycles=3,
                tactical_steps=5,
                act_max_segments=4,
                act_max_segments_scaled=8,
            )
        if name == "tiny":
            return cls(
                strategic_width=16,
                strategic_layers=1,
                tactical_width=16,
                tactical_layers=1,
                heads=2,
                strategic_tokens=2,
                tactical_tokens=2,
                instrument_buckets=16,
                max_positions=320,
            )
        raise ValueError(f"unknown preset {name!r}; choose small, base or tiny")

    @property
    def tactical_outputs(self) -> int:
        """Width of the fused tactical head (see `heads.tactical_outputs`)."""
        return tactical_outputs(len(self.horizons))


@dataclass(slots=True)
class HRMCarry:
    """The recurrent state carried between segments and bars. Counters live with the caller."""

    z_strategic: Tensor  # (B, P_H, D_H) plan tokens, updated every K bars
    z_tactical: Tensor  # (B, P_L, D_L) tactical state tokens, updated every bar

    def detach(self) -> HRMCarry:
        """Cut the graph between segments (deep supervision)."""
        return HRMCarry(self.z_strategic.detach(), self.z_tactical.detach())

    def select(self, rows: Tensor) -> HRMCarry:
        """The carry of some rows."""
        return HRMCarry(self.z_strategic[rows], self.z_tactical[rows])

    def merge(self, rows: Tensor, part: HRMCarry) -> HRMCarry:
        """This carry with `rows` replaced by `part` (out of place)."""
        return HRMCarry(
            _put(self.z_strategic, rows, part.z_strategic),
            _put(self.z_tactical, rows, part.z_tactical),
        )


def _put(base: Tensor, rows: Tensor, part: Tensor) -> Tensor:
    return base.index_copy(0, rows, part.to(base.dtype))


@dataclass(frozen=True, slots=True)
class Inference:
    """What one streaming call returns: the new carry, the outputs and ACT segments per row.

    `readout` is what the fused tactical head read (the pooled, normalised tactical state of
    each row's last segment): offline policy learning trains head rows on it alone.
    """

    carry: HRMCarry
    outputs: HRMOutputs
    act_steps: Tensor  # (B,) long
    readout: Tensor  # (B, D_L)


@dataclass(frozen=True, slots=True)
class Rollout:
    """Deep-supervision segments of a training call: outputs and which rows were still active."""

    outputs: list[HRMOutputs]
    active: list[Tensor]  # per segment (B,) bool: the row had not halted before this segment
    carry: HRMCarry
    act_steps: Tensor  # (B,) long, segment at which each row halted


class HRM(nn.Module):
    """Two-level recurrent reasoning over market windows; see the module docstring.

    Args:
        config: sizes and loop counts.
        seed: fixes every initial weight (and the carry's initial tokens) exactly.
    """

    kind = "hrm"
    needs_strategic_every_bar = False

    def __init__(self, config: HRMConfig, *, seed: int = 0) -> None:
        super().__init__()
        self.config = c = config
        embed = {"n_features": c.n_features, "n_account": c.n_account}
        self.input_strategic = InputNetwork(
            **embed, width=c.strategic_width, instrument_buckets=c.instrument_buckets
        )
        self.input_tactical = InputNetwork(
            **embed, width=c.tactical_width, instrument_buckets=c.instrument_buckets
        )
        self.strategic = EncoderStack(
            width=c.strategic_width,
            layers=c.strategic_layers,
            heads=c.heads,
            expansion=c.expansion,
            max_positions=c.max_positions,
        )
        self.tactical = EncoderStack(
            width=c.tactical_width,
            layers=c.tactical_layers,
            heads=c.heads,
            expansion=c.expansion,
            max_positions=c.max_positions,
        )
        self.lift = nn.Linear(c.tactical_width, c.strategic_width, bias=False)  # z_L into fH
        self.goal = nn.Linear(c.strategic_width, c.tactical_width)  # z_H -> goal for fL
        self.strategic_head = nn.Linear(c.strategic_width, 4)  # regime (3), risk budget
        self.tactical_head = nn.Linear(c.tactical_width, c.tactical_outputs)
        generator = torch.Generator().manual_seed(seed)
        lecun_init_(self, generator)
        init_tactical_head_(
            self.tactical_head, horizons=len(c.horizons), min_atr_distance=c.min_atr_distance
        )
        self.z_strategic_init: Tensor
        self.z_tactical_init: Tensor
        z_h = torch.randn(c.strategic_tokens, c.strategic_width, generator=generator)
        z_l = torch.randn(c.tactical_tokens, c.tactical_width, generator=generator)
        self.register_buffer("z_strategic_init", z_h)  # (P_H, D_H)
        self.register_buffer("z_tactical_init", z_l)  # (P_L, D_L)

    def initial_carry(self, batch_size: int) -> HRMCarry:
        """The carry of rows never seen before (the seeded initial tokens)."""
        return HRMCarry(
            self.z_strategic_init.expand(batch_size, -1, -1).clone(),  # (B, P_H, D_H)
            self.z_tactical_init.expand(batch_size, -1, -1).clone(),  # (B, P_L, D_L)
        )

    def _encode(self, batch: FeatureBatch) -> tuple[Memory, Memory | None]:
        """Window memories: the tactical one of every row, the strategic one of its rows."""
        x_t: Tensor = self.input_tactical(
            batch.tactical, batch.account, batch.instrument, batch.timeframe
        )  # (B, T_tac + 1, D_L)
        memory_t = self.tactical.encode(x_t)
        if batch.strategic is None:
            return memory_t, None
        rows = batch.rows()
        x_s: Tensor = self.input_strategic(
            batch.strategic, batch.account[rows], batch.instrument[rows], batch.timeframe[rows]
        )  # (S, T_str + 1, D_H)
        return memory_t, self.strategic.encode(x_s)

    def _goal(self, z_h: Tensor) -> Tensor:
        out: Tensor = self.goal(z_h.mean(dim=1, keepdim=True))  # (B, 1, D_L)
        return out

    def _tactical_step(self, z_l: Tensor, goal: Tensor, memory: Memory) -> Tensor:
        """fL: the state tokens, plus the goal, attend to the tactical window. # (B, P_L, D_L)"""
        return self.tactical.refine(z_l + goal, memory)

    def _strategic_step(self, z_h: Tensor, z_l: Tensor, memory: Memory) -> Tensor:
        """fH: plan tokens read the tactical state and the strategic window. # (S, P_H, D_H)"""
        latents = torch.cat((self.lift(z_l).to(z_h.dtype), z_h), dim=1)  # (S, P_L + P_H, D_H)
        return self.strategic.refine(latents, memory)[:, -self.config.strategic_tokens :]

    def _segment(
        self, carry: HRMCarry, memory_t: Memory, memory_s: Memory | None, rows: Tensor | None
    ) -> tuple[HRMCarry, Tensor]:
        """N cycles for the strategic rows, then T tactical steps; the carry and the readout."""
        c = self.config
        z_h, z_l = carry.z_strategic, carry.z_tactical
        if memory_s is not None and rows is not None:
            zh_s, zl_s, mt_s = z_h[rows], z_l[rows], select_memory(memory_t, rows)
            with torch.no_grad():  # all but the last strategic update: no gradient
                for _ in range(c.cycles - 1):
                    zh_s = self._strategic_step(zh_s, zl_s, memory_s)
                    goal_s = self._goal(zh_s)
                    for _ in range(c.tactical_steps):
                        zl_s = self._tactical_step(zl_s, goal_s, mt_s)
            zh_s = self._strategic_step(zh_s, zl_s, memory_s)  # the strategic update with grad
            z_h, z_l = _put(z_h, rows, zh_s), _put(z_l, rows, zl_s)
        goal = self._goal(z_h)  # (B, 1, D_L), z_H held fixed for the tactical steps
        with torch.no_grad():
            for _ in range(c.tactical_steps - 1):
                z_l = self._tactical_step(z_l, goal, memory_t)
        z_l = self._tactical_step(z_l, goal, memory_t)  # the one tactical step with grad
        return HRMCarry(z_h, z_l), rms_norm(z_l.mean(dim=1))  # readout (B, D_L)

    def _tactical_heads(self, readout: Tensor) -> Tensor:
        out: Tensor = self.tactical_head(readout)  # (B, n_out)
        return out

    def _decode(self, tactical: Tensor, strategic: Tensor) -> HRMOutputs:
        c = self.config
        return HRMOutputs.decode(
            tactical, strategic, horizons=len(c.horizons), min_atr_distance=c.min_atr_distance
        )

    def _strategic_heads(self, z_h: Tensor) -> Tensor:
        out: Tensor = self.strategic_head(rms_norm(z_h.mean(dim=1)))  # (B, 4)
        return out

    def segment(self, carry: HRMCarry, batch: FeatureBatch) -> tuple[HRMCarry, HRMOutputs]:
        """One deep-supervision segment with the 1-step gradient (see the module docstring)."""
        memory_t, memory_s = self._encode(batch)
        rows = batch.rows() if memory_s is not None else None
        carry, readout = self._segment(carry, memory_t, memory_s, rows)
        strategic = self._strategic_heads(carry.z_strategic)
        return carry, self._decode(self._tactical_heads(readout), strategic)

    def rollout(
        self, carry: HRMCarry, batch: FeatureBatch, *, generator: torch.Generator | None = None
    ) -> Rollout:
        """Training: up to M_max segments with ACT exploration, carry detached in between.

        The first segment runs the strategic update for the batch's strategic rows, later
        ones are tactical only (as in the stream). With probability `act_exploration` a row's
        minimum segment count is drawn from [2, M_max] (HRM's exploration). Halted rows keep
        computing (the batch stays whole) but `active` masks them out of the losses.
        """
        c = self.config
        size = batch.tactical.shape[0]
        device = batch.tactical.device
        explore = torch.rand(size, generator=generator) < c.act_exploration
        drawn = torch.randint(2, c.act_max_segments + 1, (size,), generator=generator)
        m_min = torch.where(explore, drawn, c.act_min_segments).clamp(max=c.act_max_segments)
        m_min = m_min.to(device)
        halted = torch.zeros(size, dtype=torch.bool, device=device)
        steps = torch.zeros(size, dtype=torch.long, device=device)
        outputs: list[HRMOutputs] = []
        active: list[Tensor] = []
        tactical_batch = FeatureBatch(
            batch.tactical, batch.account, batch.instrument, batch.timeframe
        )
        for m in range(1, c.act_max_segments + 1):
            carry, out = self.segment(carry, batch if m == 1 else tactical_batch)
            outputs.append(out)
            active.append(~halted)
            steps = torch.where(halted, steps, m)
            stop = (m >= m_min) & (out.q_halt > out.q_continue)
            halted = halted | stop | (m >= c.act_max_segments)
            carry = carry.detach()
            if bool(halted.all()):
                break
        return Rollout(outputs=outputs, active=active, carry=carry, act_steps=steps)

    def infer(self, carry: HRMCarry, batch: FeatureBatch) -> Inference:
        """Streaming: a segment for every row, then more tactical segments until ACT halts.

        A row halts after segment m when m >= M_min and Q(halt) > Q(continue) and it is
        confident, or when m reaches its budget: M_max, or `act_max_segments_scaled` while
        its confidence is below the threshold. Only rows still running are recomputed.
        """
        memory_t, memory_s = self._encode(batch)
        rows = batch.rows() if memory_s is not None else None
        carry, readout = self._segment(carry, memory_t, memory_s, rows)
        tactical = self._tactical_heads(readout)
        steps = torch.ones(tactical.shape[0], dtype=torch.long, device=tactical.device)
        running = self._running(tactical, steps)
        while bool(running.any()):
            idx = running.nonzero().squeeze(1)
            memory = select_memory(memory_t, idx)
            part, part_readout = self._segment(carry.select(idx), memory, None, None)
            part_tactical = self._tactical_heads(part_readout)
            carry = carry.merge(idx, part)
            tactical = _put(tactical, idx, part_tactical)
            readout = _put(readout, idx, part_readout)
            steps[idx] += 1
            running[idx] = self._running(part_tactical, steps[idx])
        strategic = self._strategic_heads(carry.z_strategic)
        return Inference(carry, self._decode(tactical, strategic), steps, readout)

    def _running(self, tactical: Tensor, steps: Tensor) -> Tensor:
        """Rows that continue after `steps` segments (inference rule). # (B,) bool"""
        c = self.config
        scalars = tactical[:, len(ACTIONS) + len(c.horizons) :].float()
        confident = torch.sigmoid(scalars[:, CONFIDENCE]) >= c.act_confidence_threshold
        budget = torch.where(confident, c.act_max_segments, c.act_max_segments_scaled)
        halt_q = (scalars[:, Q_HALT] > scalars[:, Q_CONTINUE]) & confident
        return (steps < budget) & ~((steps >= c.act_min_segments) & halt_q)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

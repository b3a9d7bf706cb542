"""The flat baseline: one plain transformer over the same features, with the HRM's heads.

Owns the ablation the HRM is judged against (seed 004: HRM versus a same-size transformer with
no recursion): every bar it reads the whole strategic window plus the account token and a
readout token through one encoder stack, and emits the same fused heads as the HRM. No
hierarchy, no carry, no ACT (one segment per bar). It must not do I/O or turn outputs into
orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from strategies.hrm.heads import (
    FeatureBatch,
    HRMOutputs,
    init_tactical_head_,
    tactical_outputs,
)
from strategies.hrm.layers import EncoderStack, InputNetwork, lecun_init_, rms_norm
from strategies.hrm.model import HRMCarry, Inference


@dataclass(frozen=True, slots=True)
class FlatConfig:
    """Sizes of the flat baseline; presets match the HRM presets' parameter counts."""

    n_features: int = 31
    n_account: int = 4
    width: int = 128
    layers: int = 3
    heads: int = 4
    expansion: float = 4.0
    horizons: tuple[int, ...] = (1, 8, 32)
    instrument_buckets: int = 512
    max_positions: int = 1104
    min_atr_distance: float = 0.25

    def __post_init__(self) -> None:
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(f"width {self.width} must split into {self.heads} even heads")
        if self.layers < 1 or not self.horizons or min(self.horizons) < 1:
            raise ValueError("need at least one layer and positive horizons")

    @classmethod
    def preset(cls, name: Literal["tiny", "small", "base"]) -> FlatConfig:
        """Sized to the HRM preset of the same name (within about 10% of its parameters)."""
        if name == "small":
            return cls()
        if name == "base":
            return cls(width=512, layers=5, heads=8)
        if name == "tiny":
            return cls(width=16, layers=2, heads=2, instrument_buckets=16, max_positions=320)
        raise ValueError(f"unknown preset {name!r}; choose small, base or tiny")


class FlatTransformer(nn.Module):
    """Plain transformer baseline; same inputs, same outputs, same streaming call as `HRM`.

    Args:
        config: sizes.
        seed: fixes every initial weight exactly.
    """

    kind = "flat"
    needs_strategic_every_bar = True

    def __init__(self, config: FlatConfig, *, seed: int = 0) -> None:
        super().__init__()
        self.config = c = config
        self.input = InputNetwork(
            n_features=c.n_features,
            n_account=c.n_account,
            width=c.width,
            instrument_buckets=c.instrument_buckets,
        )
        self.encoder = EncoderStack(
            width=c.width,
            layers=c.layers,
            heads=c.heads,
            expansion=c.expansion,
            max_positions=c.max_positions,
        )
        self.readout = nn.Parameter(torch.zeros(1, 1, c.width))
        self.strategic_head = nn.Linear(c.width, 4)
        self.tactical_head = nn.Linear(c.width, tactical_outputs(len(c.horizons)))
        generator = torch.Generator().manual_seed(seed)
        lecun_init_(self, generator)
        nn.init.normal_(self.readout, 0.0, 1.0, generator=generator)
        init_tactical_head_(
            self.tactical_head, horizons=len(c.horizons), min_atr_distance=c.min_atr_distance
        )

    def initial_carry(self, batch_size: int) -> HRMCarry:
        """An empty carry (the baseline has no recurrent state). # (B, 0, 0) each"""
        empty = torch.zeros(batch_size, 0, 0, device=self.readout.device)
        return HRMCarry(empty, empty.clone())

    def forward(self, batch: FeatureBatch) -> HRMOutputs:
        """Heads from the strategic window of every row (the batch must carry all of them)."""
        return self.heads(self.pooled(batch))

    def pooled(self, batch: FeatureBatch) -> Tensor:
        """The normalised readout token every head reads. # (B, D)"""
        if batch.strategic is None or batch.strategic.shape[0] != batch.tactical.shape[0]:
            raise ValueError("the flat baseline needs the strategic window of every row")
        x: Tensor = self.input(
            batch.strategic, batch.account, batch.instrument, batch.timeframe
        )  # (B, T_str + 1, D)
        readout = self.readout.expand(x.shape[0], -1, -1).to(x.dtype)  # (B, 1, D)
        h: Tensor = self.encoder(torch.cat((x, readout), dim=1))  # (B, T_str + 2, D)
        return rms_norm(h[:, -1])  # (B, D)

    def heads(self, pooled: Tensor) -> HRMOutputs:
        """Decode the heads from the readout. # (B, D) -> outputs"""
        tactical: Tensor = self.tactical_head(pooled)
        strategic: Tensor = self.strategic_head(pooled)
        return HRMOutputs.decode(
            tactical,
            strategic,
            horizons=len(self.config.horizons),
            min_atr_distance=self.config.min_atr_distance,
        )

    def infer(self, carry: HRMCarry, batch: FeatureBatch) -> Inference:
        """Streaming call with the HRM's signature: one pass, the carry passed through."""
        pooled = self.pooled(batch)
        steps = torch.ones(batch.tactical.shape[0], dtype=torch.long, device=batch.tactical.device)
        return Inference(carry, self.heads(pooled), steps, pooled)

"""Building blocks shared by the HRM and the flat baseline: norms, rotary attention, SwiGLU.

Owns the encoder block (post-norm RMSNorm, rotary self-attention, SwiGLU feed-forward), the
input network fI (linear + RMSNorm + GLU over feature vectors, plus instrument and timeframe
embeddings), the mapping of symbols and intervals to embedding ids, and the seeded truncated
LeCun-normal initialisation. It must not know about levels, carries or heads (that is
`model.py`) and does no I/O.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Bybit interval codes in a fixed order: the timeframe embedding row of each; anything else
#: shares the last row. Never reorder (checkpoints index into it); append only.
TIMEFRAMES: tuple[str, ...] = ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D")
RMS_EPS = 1e-5


def instrument_bucket(symbol: str, buckets: int) -> int:
    """The instrument-embedding row of a symbol: a stable hash, so unseen symbols work too."""
    digest = hashlib.blake2b(symbol.upper().encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


def timeframe_index(interval: str) -> int:
    """The timeframe-embedding row of a Bybit interval code (unknown codes share the last)."""
    return TIMEFRAMES.index(interval) if interval in TIMEFRAMES else len(TIMEFRAMES)


def rms_norm(x: Tensor) -> Tensor:
    """Parameter-free RMS normalisation over the last dimension (the blocks' post-norm)."""
    return F.rms_norm(x, (x.shape[-1],), eps=RMS_EPS)


def lecun_init_(module: nn.Module, generator: torch.Generator) -> None:
    """Truncated LeCun-normal weights (std 1/sqrt(fan_in), cut at 2 std), zero biases.

    Embeddings get std 1/sqrt(width). Drawn from `generator` so a seed fixes the model exactly
    without touching torch's global random state.
    """
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            std = 1.0 / math.sqrt(sub.in_features)
            nn.init.trunc_normal_(sub.weight, 0.0, std, -2 * std, 2 * std, generator=generator)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            std = 1.0 / math.sqrt(sub.embedding_dim)
            nn.init.trunc_normal_(sub.weight, 0.0, std, -2 * std, 2 * std, generator=generator)


#: Rotary (cos, signed sin) tables for the positions of one call. # (S, hd) each
Angles = tuple[Tensor, Tensor]
#: Keys and values of one layer's tokens, kept so later tokens can attend to them.
KeyValue = tuple[Tensor, Tensor]


class Rotary(nn.Module):
    """Rotary position tables for sequences up to `max_positions` long (not saved: derived).

    The sine table carries the sign of the rotate-half trick, so rotating is
    `x * cos + x.roll(hd / 2) * sin`: four tensor ops (their count, not their arithmetic,
    dominates small-batch CPU latency).
    """

    def __init__(self, head_dim: int, max_positions: int, base: float = 10_000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        self.cos: Tensor
        self.sin: Tensor
        cos, sin = angles.cos(), angles.sin()  # (P, hd / 2)
        self.register_buffer("cos", torch.cat((cos, cos), dim=-1), persistent=False)
        self.register_buffer("sin", torch.cat((-sin, sin), dim=-1), persistent=False)

    def angles(self, offset: int, length: int) -> Angles:
        """The tables of positions offset .. offset + length - 1. # (S, hd) each"""
        end = offset + length
        if end > self.cos.shape[0]:
            raise ValueError(f"position {end} exceeds {self.cos.shape[0]} rotary positions")
        return self.cos[offset:end], self.sin[offset:end]


def rotate(x: Tensor, angles: Angles) -> Tensor:
    """Apply rotary positions along the second-to-last dimension, in x's dtype. # (..., S, hd)"""
    cos, sin = angles
    return x * cos.to(x.dtype) + x.roll(x.shape[-1] // 2, dims=-1) * sin.to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head attention with rotary positions; tokens may also attend to a cached memory.

    Windows hold only past bars, so attention is bidirectional within them.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)

    def forward(
        self, x: Tensor, angles: Angles, memory: KeyValue | None = None
    ) -> tuple[Tensor, KeyValue]:
        """Attend over `memory` (earlier positions) and `x` itself.

        Args:
            x: the tokens. # (B, S, D)
            angles: rotary tables of x's positions. # (S, hd) each
            memory: keys and values of earlier tokens. # (B, H, M, hd) each

        Returns:
            The attention output # (B, S, D), and x's own keys and values # (B, H, S, hd).
        """
        batch, seq, width = x.shape
        q, k, v = self._project(x, angles)
        keys, values = k, v
        if memory is not None:
            keys = torch.cat((memory[0], k), dim=2)  # (B, H, M + S, hd)
            values = torch.cat((memory[1], v), dim=2)
        y = F.scaled_dot_product_attention(q, keys, values)  # (B, H, S, hd)
        out: Tensor = self.out(y.transpose(1, 2).reshape(batch, seq, width))
        return out, (k, v)

    def key_value(self, x: Tensor, angles: Angles) -> KeyValue:
        """Only the keys and values of x (a memory whose own outputs nothing reads)."""
        _, k, v = self._project(x, angles)
        return k, v

    def _project(self, x: Tensor, angles: Angles) -> tuple[Tensor, Tensor, Tensor]:
        batch, seq, width = x.shape
        qkv = self.qkv(x).view(batch, seq, 3, self.heads, width // self.heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, S, hd)
        q, k = rotate(qkv[:2], angles).unbind(0)  # (B, H, S, hd) each
        return q, k, qkv[2]


class SwiGLU(nn.Module):
    """Gated feed-forward: down(silu(gate(x)) * up(x)), hidden width ~ expansion * 2/3 * D."""

    def __init__(self, width: int, expansion: float) -> None:
        super().__init__()
        hidden = _multiple_of(int(expansion * width * 2 / 3), 8)
        self.gate_up = nn.Linear(width, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """# (B, S, D) -> (B, S, D)"""
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # (B, S, hidden) each
        out: Tensor = self.down(F.silu(gate) * up)
        return out


def _multiple_of(value: int, multiple: int) -> int:
    return max(multiple, (value + multiple - 1) // multiple * multiple)


class EncoderBlock(nn.Module):
    """Post-norm transformer encoder block: x = norm(x + attn(x)); x = norm(x + ffn(x))."""

    def __init__(self, width: int, heads: int, expansion: float) -> None:
        super().__init__()
        if width % heads or (width // heads) % 2:
            raise ValueError(f"width {width} must split into {heads} heads of even size")
        self.attn = SelfAttention(width, heads)
        self.ffn = SwiGLU(width, expansion)

    def forward(
        self, x: Tensor, angles: Angles, memory: KeyValue | None = None
    ) -> tuple[Tensor, KeyValue]:
        """# (B, S, D) -> (B, S, D), plus x's keys and values for later tokens"""
        attended, kv = self.attn(x, angles, memory)
        x = rms_norm(x + attended)
        return rms_norm(x + self.ffn(x)), kv


class EncoderStack(nn.Module):
    """`layers` encoder blocks sharing one rotary table.

    `encode` runs a window through the stack and keeps every layer's keys and values;
    `refine` runs a few latent tokens placed after the window through the same blocks, each
    layer attending to the window's cached keys and values and to the latents themselves.
    Together they equal one encoder pass over [window; latents] in which window tokens do not
    attend to the latents, so a window is encoded once per bar however many refinement steps
    follow.
    """

    def __init__(
        self, *, width: int, layers: int, heads: int, expansion: float, max_positions: int
    ) -> None:
        super().__init__()
        self.rotary = Rotary(width // heads, max_positions)
        self.blocks = nn.ModuleList(EncoderBlock(width, heads, expansion) for _ in range(layers))

    def forward(self, x: Tensor) -> Tensor:
        """A plain encoder pass. # (B, S, D) -> (B, S, D)"""
        angles = self.rotary.angles(0, x.shape[1])
        for block in self.blocks:
            x, _ = block(x, angles)
        return x

    def encode(self, x: Tensor) -> list[KeyValue]:
        """Each layer's keys and values of a window (the last layer's output is never needed)."""
        angles = self.rotary.angles(0, x.shape[1])
        memory: list[KeyValue] = []
        blocks: list[EncoderBlock] = list(self.blocks)  # type: ignore[arg-type]
        for block in blocks[:-1]:
            x, kv = block(x, angles)
            memory.append(kv)
        memory.append(blocks[-1].attn.key_value(x, angles))
        return memory

    def refine(self, z: Tensor, memory: list[KeyValue]) -> Tensor:
        """Latent tokens after the window, through every layer. # (B, P, D) -> (B, P, D)"""
        angles = self.rotary.angles(memory[0][0].shape[2], z.shape[1])
        for block, kv in zip(self.blocks, memory, strict=True):
            z, _ = block(z, angles, kv)
        return z


def select_memory(memory: list[KeyValue], rows: Tensor) -> list[KeyValue]:
    """The cached keys and values of some batch rows."""
    return [(k[rows], v[rows]) for k, v in memory]


class InputNetwork(nn.Module):
    """fI: embeds a window of feature vectors and the account vector as tokens of one width.

    Each bar's features pass linear -> RMSNorm -> GLU; the instrument embedding (a hashed
    bucket of the symbol) and the timeframe embedding are added to every bar token. The
    account vector becomes one extra token after the newest bar.
    """

    def __init__(
        self, *, n_features: int, n_account: int, width: int, instrument_buckets: int
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(n_features, width)
        self.glu = nn.Linear(width, 2 * width)
        self.account = nn.Linear(n_account, width)
        self.instrument = nn.Embedding(instrument_buckets, width)
        self.timeframe = nn.Embedding(len(TIMEFRAMES) + 1, width)

    def forward(
        self, window: Tensor, account: Tensor, instrument: Tensor, timeframe: Tensor
    ) -> Tensor:
        """Tokens of one window plus the account token.

        Args:
            window: scaled feature vectors, oldest first. # (B, T, F)
            account: scaled account vector. # (B, A)
            instrument: instrument bucket per row. # (B,) long
            timeframe: timeframe index per row. # (B,) long

        Returns:
            The bar tokens followed by the account token. # (B, T + 1, D)
        """
        h = F.glu(self.glu(rms_norm(self.proj(window))), dim=-1)  # (B, T, D)
        context = self.instrument(instrument) + self.timeframe(timeframe)  # (B, D)
        h = h + context[:, None, :]
        acct = (self.account(account) + context)[:, None, :]  # (B, 1, D)
        return torch.cat((h, acct), dim=1)

"""Video Depth Anything's temporal ("motion") module: attention across the frames of a window.

At every spatial position the T frames of a window attend to each other (DESIGN.md §8.3), so the
depth of one frame is informed by its neighbours. Module and parameter names follow the official
checkpoints (`motion_modules.N.temporal_transformer.*`) so they load strictly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_FRAMES = 32  # the position table's length: one 32-frame window


def sinusoidal_table(channels: int, length: int = MAX_FRAMES) -> torch.Tensor:
    """(1, length, channels): pe[t, 2i] = sin(t * w_i), pe[t, 2i+1] = cos(t * w_i),
    w_i = exp(-2i ln(10000) / channels)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32)
                     * (-math.log(10000.0) / channels))
    pe = torch.zeros(1, length, channels)
    pe[0, :, 0::2] = torch.sin(pos * freq)
    pe[0, :, 1::2] = torch.cos(pos * freq)
    return pe


class PositionalEncoding(nn.Module):
    """Adds the frame-index table; the table is a stored buffer (it is in the checkpoints)."""

    pe: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalAttention(nn.Module):
    """Multi-head self-attention over time: (B*T, N, C) → (B*T, N, C), 8 heads, q/k/v unbiased."""

    def __init__(self, channels: int, heads: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])
        self.pos_encoder = PositionalEncoding(channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bt, n, c = x.shape
        b = bt // frames
        # (B*T, N, C) → (B*N, T, C): sequences over time at each position
        x = x.reshape(b, frames, n, c).transpose(1, 2).reshape(b * n, frames, c)
        x = self.pos_encoder(x)
        h, d = self.heads, c // self.heads
        q, k, v = (lin(x).reshape(b * n, frames, h, d).transpose(1, 2)
                   for lin in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale d^-0.5, as the official module
        out = out.transpose(1, 2).reshape(b * n, frames, c)
        out = self.to_out[0](out)
        return out.reshape(b, n, frames, c).transpose(1, 2).reshape(bt, n, c)


class GEGLU(nn.Module):
    """Linear to 2x the hidden width, split, value * gelu(gate)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, channels: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(channels, channels * mult), nn.Dropout(0.0),
                                 nn.Linear(channels * mult, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TemporalBlock(nn.Module):
    """Two pre-norm temporal attentions, then a pre-norm GEGLU feed-forward, each residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalAttention(channels) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(channels) for _ in range(2)])
        self.ff = FeedForward(channels)
        self.ff_norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        for attn, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = attn(norm(x), frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalBlock(channels)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        residual = x
        bt, c, h, w = x.shape
        x = self.norm(x).permute(0, 2, 3, 1).reshape(bt, h * w, c)
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, frames)
        x = self.proj_out(x)
        return x.reshape(bt, h, w, c).permute(0, 3, 1, 2) + residual


class TemporalModule(nn.Module):
    """(B*T, C, h, w) → same shape; T frames of each clip attend to each other."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        return self.temporal_transformer(x, frames)

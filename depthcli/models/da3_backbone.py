"""The Depth Anything 3 DINOv2 encoder on timm blocks (DESIGN.md §10.3.2), one image per scene.

Monocular/metric configurations are DA2's encoder with a final-norm eps of 1e-5. Any-view ones
add, from block `alt_start` on: the camera token swapped in for token 0, QK-norm (eps 1e-5) and
2-D RoPE (base 100) inside attention, alternating local/global blocks, and a cat(local, global)
readout. timm owns the weights and the blocks; this module owns the attention step timm has no
hook for (RoPE) and the block schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import PATCH, DinoV2Encoder, interpolate_pos_embed

ROPE_BASE = 100.0
NORM_EPS = 1e-5  # DA3's final norm and QK-norm: nn.LayerNorm's default, not DINOv2's 1e-6

Rope = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # cos/sin rows, cos/sin cols


def _rope_axis(pos: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables (N, dim) for integer positions `pos` (N,): angles cat(θ, θ), θ = p·ω."""
    inv_freq = 1.0 / (ROPE_BASE ** (torch.arange(0, dim, 2, device=pos.device).float() / dim))
    angles = pos.float()[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def rope_tables(h0: int, w0: int, global_: bool, head_dim: int, device: torch.device) -> Rope:
    """RoPE tables for token 0 + an h0 x w0 patch grid.

    Local blocks: the patch at (r, c) sits at (r + 1, c + 1); global blocks of a one-image scene:
    every patch at (1, 1). Token 0 is at (0, 0) in both.
    """
    rows = torch.arange(h0, device=device).repeat_interleave(w0) + 1
    cols = torch.arange(w0, device=device).repeat(h0) + 1
    if global_:
        rows, cols = torch.ones_like(rows), torch.ones_like(cols)
    zero = torch.zeros(1, dtype=rows.dtype, device=device)
    rows, cols = torch.cat((zero, rows)), torch.cat((zero, cols))
    half = head_dim // 2
    return (*_rope_axis(rows, half), *_rope_axis(cols, half))


def _rotate(u: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """u·cos + rotate_half(u)·sin, with rotate_half(u) = cat(−u[d/2:], u[:d/2])."""
    a, b = u.chunk(2, dim=-1)
    return u * cos + torch.cat((-b, a), dim=-1) * sin


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """(B, heads, N, d): the first d/2 channels rotate with the row, the rest with the column."""
    cr, sr, cc, sc = rope
    top, bottom = x.chunk(2, dim=-1)
    return torch.cat((_rotate(top, cr, sr), _rotate(bottom, cc, sc)), dim=-1)


def _attention(attn: Any, x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """timm `Attention` with RoPE between its QK-norm and the product (the hook timm lacks)."""
    b, n, c = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = apply_rope(attn.q_norm(q), rope), apply_rope(attn.k_norm(k), rope)
    out = F.scaled_dot_product_attention(q, k, v)
    return attn.proj(out.transpose(1, 2).reshape(b, n, c))


def _block(block: Any, x: torch.Tensor, rope: Rope | None) -> torch.Tensor:
    """A pre-LN timm block, with RoPE attention when `rope` is given."""
    if rope is None:
        return block(x)
    x = x + block.ls1(_attention(block.attn, block.norm1(x), rope))
    return x + block.ls2(block.mlp(block.norm2(x)))


class Da3Encoder(DinoV2Encoder):
    """DA3's DINOv2: timm ViT weights, DA3 norms, and for any-view models the camera token.

    `forward` returns the four (B, C', h0, w0) feature maps the head reads (C' = 2C for any-view
    models) and, for any-view models, the (B, 2C) camera token of the last tapped block.
    """

    def __init__(self, timm_name: str, layers: Sequence[int], alt_start: int) -> None:
        super().__init__(timm_name, layers)
        self.alt_start = int(alt_start)
        self.vit.norm.eps = NORM_EPS
        dim = self.embed_dim
        head_dim = dim // self.vit.blocks[0].attn.num_heads
        if self.alt_start >= 0:
            for block in self.vit.blocks[self.alt_start:]:
                block.attn.q_norm = nn.LayerNorm(head_dim, eps=NORM_EPS)
                block.attn.k_norm = nn.LayerNorm(head_dim, eps=NORM_EPS)
            # [0]: the reference view's token; [1]: other views' (multi-view scenes).
            self.camera_token = nn.Parameter(torch.zeros(1, 2, dim))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.alt_start < 0:
            return super().forward(x)
        raise TypeError("any-view DA3 encoders return features and a camera token: use features()")

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        vit = self.vit
        h0, w0 = x.shape[2] // PATCH, x.shape[3] // PATCH
        tokens = vit.patch_embed(x).reshape(b, h0 * w0, -1)
        tokens = torch.cat((vit.cls_token.expand(b, -1, -1).to(tokens.dtype), tokens), dim=1)
        return tokens + interpolate_pos_embed(vit.pos_embed, h0, w0).to(tokens.dtype)

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Any-view forward for (B, 3, H, W), each image a one-view scene.

        Blocks i >= alt_start alternate: even = local (RoPE at real positions), odd = global
        (all patches at (1, 1); for one view the same tokens). A tapped (global) block gives
        cat(output of the last local block, norm(its output)) minus token 0; the camera token
        is token 0 of that concatenation, un-normalised, at the last tap.
        """
        b, _, h, w = x.shape
        if h % PATCH or w % PATCH:
            raise ValueError(f"input {h}x{w} is not a multiple of {PATCH}")
        h0, w0 = h // PATCH, w // PATCH
        vit = self.vit
        head_dim = self.embed_dim // vit.blocks[0].attn.num_heads
        tables = {g: rope_tables(h0, w0, g, head_dim, x.device) for g in (False, True)}
        tokens = self._tokens(x)
        local = tokens
        outs: list[torch.Tensor] = []
        camera = tokens[:, 0]
        for i, block in enumerate(vit.blocks):
            if i == self.alt_start:
                tokens = torch.cat((self.camera_token[:, :1].expand(b, -1, -1).to(tokens.dtype),
                                    tokens[:, 1:]), dim=1)
            is_global = i >= self.alt_start and i % 2 == 1
            tokens = _block(block, tokens, tables[is_global] if i >= self.alt_start else None)
            if not is_global:
                local = tokens
            if i in self.layers:
                cat = torch.cat((local[:, 1:], vit.norm(tokens[:, 1:])), dim=-1)
                outs.append(cat.transpose(1, 2).reshape(b, -1, h0, w0))
                camera = torch.cat((local[:, 0], tokens[:, 0]), dim=-1)
            if i == self._last:
                break
        return outs, camera

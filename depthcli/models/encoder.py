"""DINOv2 ViT encoder (timm) returning normed patch-token maps of chosen blocks.

timm owns the transformer blocks; this module owns the one step timm does differently from the
official code: position-embedding interpolation (DESIGN.md §3.2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import timm
import torch
import torch.nn.functional as F
from torch import nn

PATCH = 14


def interpolate_pos_embed(pos_embed: torch.Tensor, h0: int, w0: int) -> torch.Tensor:
    """Resample a (1, 1 + N*N, C) pos-embed to an h0 x w0 patch grid exactly as official DINOv2.

    The official rule uses scale_factor=(n + 0.1) / N (not `size`), bicubic without antialias, in
    fp32, and returns the table untouched only for the trained grid when the input is square.
    Stock timm/transformers resample by size (and timm antialiases), which is ~1e-2 off.
    """
    n = pos_embed.shape[1] - 1
    side = int(math.sqrt(n))
    if h0 * w0 == n and h0 == w0:
        return pos_embed
    dtype = pos_embed.dtype
    pe = pos_embed.float()
    cls_pe, patch_pe = pe[:, :1], pe[:, 1:]
    dim = pe.shape[-1]
    grid = patch_pe.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid,
        scale_factor=((h0 + 0.1) / side, (w0 + 0.1) / side),
        mode="bicubic",
        antialias=False,
    )
    if grid.shape[-2:] != (h0, w0):  # cannot happen with offset 0.1; guards a torch change
        raise RuntimeError(f"pos-embed resampled to {tuple(grid.shape[-2:])}, expected {(h0, w0)}")
    patch_pe = grid.permute(0, 2, 3, 1).reshape(1, h0 * w0, dim)
    return torch.cat((cls_pe, patch_pe), dim=1).to(dtype)


class DinoV2Encoder(nn.Module):
    """timm `vit_*_patch14_dinov2` (random init) + official pos-embed rule + intermediate taps."""

    def __init__(self, timm_name: str, layers: Sequence[int], img_size: int = 518) -> None:
        super().__init__()
        # init_values must be set so LayerScale (ls1/ls2) exists; the checkpoint overwrites it.
        self.vit = timm.create_model(
            timm_name,
            pretrained=False,
            img_size=img_size,
            num_classes=0,
            dynamic_img_size=True,
            init_values=1.0,
        )
        self.layers = tuple(int(i) for i in layers)
        self._last = max(self.layers)

    @torch.no_grad()
    def fold_layerscale(self) -> int:
        """Fold each block's LayerScale into the linear layer before it; returns how many.

        `proj(x) * gamma == x @ (gamma * W)^T + gamma * b`: one elementwise pass less per
        LayerScale (24 for ViT-S, ~5 ms per 518x784 image on 2 cores). In fp32 the numbers move
        by float rounding only (golden parity unchanged); in bf16 the folded weights round worse,
        so the engine folds fp32 models only. The module's state_dict then lacks the
        `ls1/ls2.gamma` keys: fold only models built for inference.
        """
        folded = 0
        for block in self.vit.blocks:
            for ls_name, lin in (("ls1", block.attn.proj), ("ls2", getattr(block.mlp, "fc2", None))):
                ls = getattr(block, ls_name, None)
                gamma = getattr(ls, "gamma", None)
                if gamma is None or not isinstance(lin, nn.Linear):
                    continue
                lin.weight.mul_(gamma[:, None])
                if lin.bias is not None:
                    lin.bias.mul_(gamma)
                setattr(block, ls_name, nn.Identity())
                folded += 1
        return folded

    @property
    def embed_dim(self) -> int:
        return int(self.vit.embed_dim)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Map (B, 3, H, W), H and W multiples of 14, to four (B, C, H/14, W/14) token maps."""
        b, _, h, w = x.shape
        if h % PATCH or w % PATCH:
            raise ValueError(f"input {h}x{w} is not a multiple of {PATCH}")
        h0, w0 = h // PATCH, w // PATCH
        vit = self.vit
        tokens = vit.patch_embed(x)  # (B, h0, w0, C) with dynamic_img_size
        tokens = tokens.reshape(b, h0 * w0, -1)
        tokens = torch.cat((vit.cls_token.expand(b, -1, -1).to(tokens.dtype), tokens), dim=1)
        tokens = tokens + interpolate_pos_embed(vit.pos_embed, h0, w0).to(tokens.dtype)
        tokens = vit.norm_pre(tokens)
        outs: list[torch.Tensor] = []
        for i, block in enumerate(vit.blocks):
            tokens = block(tokens)
            if i in self.layers:
                # norm=True: the DPT heads were trained on normed features (official default).
                normed = vit.norm(tokens)[:, 1:]
                outs.append(normed.transpose(1, 2).reshape(b, -1, h0, w0))
            if i == self._last:
                break
        return outs

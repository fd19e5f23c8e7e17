"""DINOv2 ViT encoder (timm) returning normed patch-token maps of chosen blocks.

timm owns the transformer blocks; this module owns the one step timm does differently from the
official code: position-embedding interpolation (DESIGN.md §3.2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import timm
import torch
from torch import nn

PATCH = 14


def _axis(n: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output positions 0..n-1 and n itself as float64 tensors.

    `n` is counted from arange(n) rather than wrapped with torch.tensor(n): under jit tracing and
    torch.export it then stays tied to the input size instead of becoming a constant.
    """
    dst = torch.arange(n, dtype=torch.float64)
    return dst, torch.ones_like(dst).sum()


def _cubic_matrix(dst: torch.Tensor, count: torch.Tensor, side: int) -> torch.Tensor:
    """(n, side) float64 matrix M with `M @ v` = PyTorch's bicubic resampling of a length-`side`
    vector to n samples at scale_factor (n + 0.1) / side (align_corners=False, a = -0.75,
    border-replicated taps, no antialias).

    Why a matrix: `F.interpolate(scale_factor=(h0 + 0.1) / 37)` cannot be exported with dynamic
    sizes (the exporters turn the scales into tensors that `upsample_bicubic2d` and OpenVINO
    reject). Sampling positions and Keys weights computed from arange(n) are plain elementwise
    ops: every runtime computes the same rule for every size. PyTorch rounds the scale and each
    source position to float32 (here too) and evaluates the cubic with FMAs; the float64
    polynomial lands within ~1 float32 ulp of that, where float32 ops are up to ~20 ulp off
    (the far taps cancel). Weights are rounded to float32 once, by the caller.
    """
    scale = (1.0 / ((count + 0.1) / side)).float().double()  # float32(1 / scale_factor)
    real = (scale * (dst + 0.5) - 0.5).float().double()  # source position, as a float32
    left = torch.clamp(torch.floor(real), max=side - 1)
    t = torch.clamp(real - left, 0.0, 1.0)
    a = -0.75

    def near(x: torch.Tensor) -> torch.Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    src = torch.arange(side, dtype=torch.float64)[None, :]
    zero = torch.zeros_like(src)
    weights = torch.zeros_like(dst)[:, None] + zero
    for offset, w in ((-1, far(t + 1)), (0, near(t)), (1, near(1 - t)), (2, far(2 - t))):
        tap = torch.clamp(left + offset, 0, side - 1)[:, None]  # border taps replicate the edge
        weights = weights + torch.where(tap == src, w[:, None], zero)
    return weights


def interpolate_pos_embed(pos_embed: torch.Tensor, h0: int, w0: int) -> torch.Tensor:
    """Resample a (1, 1 + N*N, C) pos-embed to an h0 x w0 patch grid exactly as official DINOv2.

    The official rule uses scale_factor=(n + 0.1) / N (not `size`), bicubic without antialias, in
    fp32, and returns the table untouched only for the trained grid when the input is square.
    Stock timm/transformers resample by size (and timm antialiases), which is ~1e-2 off.

    Written as `rows @ grid @ cols^T` with matrices computed from the sizes (`_cubic_matrix`) so
    that the rule holds in exported graphs with dynamic H, W. The untouched case is an explicit
    `Where` in the graph (both matrices become identity rows), not left to a runtime's shortcut
    (ONNX Runtime's Resize skips scales near 1; another runtime need not). Equals F.interpolate
    to float rounding: max 7e-7 of the table's max over grids 1x1 ... 500x37; ViT-S depth moves
    by <= 3.3e-6 of the range (the official code's own 1-vs-2-thread spread is ~2e-6).
    """
    n = pos_embed.shape[1] - 1
    side = int(math.sqrt(n))
    if not (torch.jit.is_tracing() or torch.compiler.is_compiling()) and (h0, w0) == (side, side):
        return pos_embed  # eager shortcut of the Where below: the same numbers, no work
    dtype = pos_embed.dtype
    pe = pos_embed.float()
    dim = pe.shape[-1]
    ys, h_count = _axis(h0, side)
    xs, w_count = _axis(w0, side)
    # Official: untouched only when the grid is the trained side x side one *and* square.
    keep = (h_count == side) & (w_count == side)
    src = torch.arange(side, dtype=torch.float64)[None, :]
    rows = torch.where(keep, (ys[:, None] == src).double(), _cubic_matrix(ys, h_count, side))
    cols = torch.where(keep, (xs[:, None] == src).double(), _cubic_matrix(xs, w_count, side))
    rows, cols = rows.float(), cols.float()
    # Two plain 2-D matmuls (OpenVINO's CPU plugin rejects a 2-D @ 3-D broadcast): along the
    # width first, then the height, the order of PyTorch's separable kernel.
    grid = pe[0, 1:].reshape(side, side, dim).transpose(0, 1).reshape(side, -1)  # (x, y*C)
    grid = torch.matmul(cols, grid).reshape(-1, side, dim).transpose(0, 1)  # (y, w0, C)
    grid = torch.matmul(rows, grid.reshape(side, -1))  # (h0, w0*C)
    patch_pe = grid.reshape(1, -1, dim)
    return torch.cat((pe[:, :1], patch_pe), dim=1).to(dtype)


class DinoV2Encoder(nn.Module):
    """timm `vit_*_patch14_dinov2` (random init) + official pos-embed rule + intermediate taps."""

    def __init__(self, timm_name: str, layers: Sequence[int], img_size: int = 518,
                 **timm_kwargs: int) -> None:
        super().__init__()
        # init_values must be set so LayerScale (ls1/ls2) exists; the checkpoint overwrites it.
        # Any: timm's VisionTransformer, whose submodules nn.Module types as Tensor | Module
        self.vit: Any = timm.create_model(
            timm_name,
            pretrained=False,
            img_size=img_size,
            num_classes=0,
            dynamic_img_size=True,
            init_values=1.0,
            **timm_kwargs,
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

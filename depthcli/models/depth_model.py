"""Depth Anything = DINOv2 encoder + DPT head; tensor in, depth at the input tensor size out."""

from __future__ import annotations

import torch
from torch import nn

from .dpt import DPTHead
from .encoder import DinoV2Encoder
from .registry import ModelSpec


class DepthAnything(nn.Module):
    """Maps a normalised (B, 3, H, W) batch (H, W multiples of 14) to (B, H, W) depth.

    Relative models return relative inverse depth (>= 0, near = large); metric models return
    metres in (0, max_depth). No device choice, normalisation or numpy here.
    """

    def __init__(self, spec: ModelSpec, max_depth: float | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.metric = spec.output == "metric"
        self.max_depth = spec.max_depth_for(max_depth)
        self.encoder = DinoV2Encoder(spec.encoder.timm_name, spec.layers, **spec.encoder.timm_kwargs)
        self.head = DPTHead(
            spec.encoder.embed_dim, spec.features, spec.out_channels, metric=self.metric
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.encoder(x)).squeeze(1)
        if self.metric:
            return out * self.max_depth
        return torch.relu(out)  # V1's extra same-size resize is a no-op; ReLU is idempotent

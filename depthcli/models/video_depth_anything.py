"""Video Depth Anything: the Depth Anything V2 network plus four temporal modules in the head.

The encoder is the same DINOv2 (timm) with the official pos-embed rule and V2 taps; the head is
the same DPT head, with temporal modules after the reassembled layers 3 and 4 and after
refinenets 4 and 3 (DESIGN.md §8.2). One forward takes the frames of one window.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .dpt import DPTHead
from .encoder import DinoV2Encoder
from .registry import ModelSpec
from .temporal import TemporalModule

MICRO_BATCH = 4  # frames per pass through the full-resolution end of the head (memory only)


class TemporalDPTHead(DPTHead):
    """DPTHead + `motion_modules` (official names); relative (ReLU) output in every variant."""

    def __init__(self, in_channels: int, features: int, out_channels: Sequence[int]) -> None:
        super().__init__(in_channels, features, out_channels, metric=False)
        oc = list(out_channels)
        self.motion_modules = nn.ModuleList(
            [TemporalModule(c) for c in (oc[2], oc[3], features, features)])

    def fine(self, p3: torch.Tensor, l2: torch.Tensor, l1: torch.Tensor,
             size: tuple[int, int]) -> torch.Tensor:
        """As DPTHead's, with the last convolutions in fp32 under autocast, as the official head
        (its issues #92/#97: black or flickering fp16 output otherwise)."""
        if not torch.is_autocast_enabled(p3.device.type):
            return super().fine(p3, l2, l1, size)
        s = self.scratch
        p1 = s.refinenet1(s.refinenet2(p3, l2, size=l1.shape[2:]), l1)
        out = F.interpolate(s.output_conv1(p1), size=size, mode="bilinear", align_corners=True)
        with torch.autocast(p3.device.type, enabled=False):
            return s.output_conv2(out.float())

    def forward_frames(self, feats: Sequence[torch.Tensor], frames: int) -> torch.Tensor:
        """Token maps of B*T frames (clip-major) → (B*T, 1, 14*h0, 14*w0)."""
        h0, w0 = feats[0].shape[-2:]
        m = self.motion_modules
        r1, r2, r3, r4 = self.reassemble(feats)
        r3, r4 = m[0](r3, frames), m[1](r4, frames)
        l1, l2, l3, l4 = self.to_features((r1, r2, r3, r4))
        s = self.scratch
        p4 = m[2](s.refinenet4(l4, size=l3.shape[2:]), frames)
        p3 = m[3](s.refinenet3(p4, l3, size=l2.shape[2:]), frames)
        size = (h0 * 14, w0 * 14)
        # The full-resolution end runs a few frames at a time (per-frame ops: same numbers).
        return torch.cat([self.fine(p3[i:i + MICRO_BATCH], l2[i:i + MICRO_BATCH],
                                    l1[i:i + MICRO_BATCH], size)
                          for i in range(0, p3.shape[0], MICRO_BATCH)])


class VideoDepthAnything(nn.Module):
    """(B, T, 3, H, W) normalised frames (H, W multiples of 14) → (B, T, H, W) depth.

    Relative models give relative inverse depth; metric ones metres. Both end in ReLU (the
    metric checkpoints differ only in training and in how windows are aligned).
    """

    temporal = True

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.metric = spec.output == "metric"
        self.max_depth = 1.0
        self.encoder = DinoV2Encoder(spec.encoder.timm_name, spec.layers, **spec.encoder.timm_kwargs)
        self.head = TemporalDPTHead(spec.encoder.embed_dim, spec.features, spec.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        feats = self.encoder(x.flatten(0, 1))
        out = self.head.forward_frames(feats, t)
        return torch.relu(out.squeeze(1)).unflatten(0, (b, t))

"""Depth Anything 3 = DA3 DINOv2 encoder + DA3 DPT head (+ camera decoder), one image per scene.

The forward returns one packed (B, K, H, W) float tensor, so that every backend, the batching
and the export carry DA3's extra outputs through the single-output path the DA1/DA2 models use:

- channel 0: depth (positive, larger = farther; relative, or metric up to the f/300 scale);
- mono/metric (K = 2): channel 1 the sky map (ReLU, >= 0; the official mask is >= 0.5);
- any-view (K = 4): channel 1 the confidence (exp + 1, >= 1), channels 2 and 3 the predicted
  field of view (fov_h, fov_w) in radians, constant over the map.

`depthcli.models.da3_post` unpacks it (sky fill, intrinsics).
"""

from __future__ import annotations

import torch
from torch import nn

from .da3_backbone import Da3Encoder
from .da3_heads import CameraDecoder, Da3DPTHead
from .registry import ModelSpec


class Da3Model(nn.Module):
    """A DA3 registry model: normalised (B, 3, H, W) → packed (B, K, H, W) (module docstring)."""

    temporal = False
    max_depth = 1.0  # not a sigmoid-scaled model: metres come from focal / 300 (da3_post)

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if spec.da3 is None:
            raise ValueError(f"{spec.name} is not a Depth Anything 3 model")
        self.spec = spec
        self.any_view = spec.da3.any_view
        self.encoder = Da3Encoder(spec.encoder.timm_name, spec.layers, spec.da3.alt_start)
        self.head = Da3DPTHead(spec.da3.head_dim_in, spec.features, spec.out_channels,
                               dual=self.any_view)
        if self.any_view:
            self.cam_dec = CameraDecoder(2 * spec.encoder.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.any_view:
            return self.head(self.encoder(x))
        feats, token = self.encoder.features(x)
        maps = self.head(feats)
        fov = self.cam_dec(token).to(maps.dtype)  # (B, 2)
        b, _, h, w = maps.shape
        return torch.cat((maps, fov[:, :, None, None].expand(b, 2, h, w)), dim=1)

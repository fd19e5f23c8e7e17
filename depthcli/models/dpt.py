"""DPT head with the RefineNet fusion decoder, module names as in the official checkpoints."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit: x + conv2(relu(conv1(relu(x)))); the skip is not activated."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place ops on fresh conv outputs (no 2-30 MB temporary per call; addition commutes,
        # so the numbers are identical); the outer ReLU cannot be, since x is the skip.
        return self.conv2(F.relu_(self.conv1(F.relu(x)))).add_(x)


class FeatureFusionBlock(nn.Module):
    """Fuse a coarser path with a skip, refine, upsample (align_corners=True), then 1x1 project."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)  # unused by refinenet4; kept for strict load
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None = None, size: Sequence[int] | None = None
    ) -> torch.Tensor:
        if skip is not None:
            x = self.resConfUnit1(skip).add_(x)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Scratch(nn.Module):
    """The official checkpoints' `scratch` container (its attribute names are their keys)."""

    layer1_rn: nn.Module
    layer2_rn: nn.Module
    layer3_rn: nn.Module
    layer4_rn: nn.Module
    refinenet1: nn.Module
    refinenet2: nn.Module
    refinenet3: nn.Module
    refinenet4: nn.Module
    output_conv1: nn.Module
    output_conv2: nn.Module
    sky_output_conv2: nn.Module  # Depth Anything 3 mono/metric heads only


class DPTHead(nn.Module):
    """Reassemble four token maps, fuse them coarse-to-fine, and predict one channel.

    Output is (B, 1, 14*h0, 14*w0): the network input size. The last activation is ReLU for
    relative models and Sigmoid for metric ones (the keys are identical, so the caller decides).
    """

    def __init__(
        self,
        in_channels: int,
        features: int,
        out_channels: Sequence[int],
        metric: bool = False,
    ) -> None:
        super().__init__()
        oc = list(out_channels)
        self.projects = nn.ModuleList([nn.Conv2d(in_channels, c, 1) for c in oc])
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        scratch = _Scratch()
        for i, c in enumerate(oc, start=1):
            setattr(scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(scratch, f"refinenet{i}", FeatureFusionBlock(features))
        half = features // 2
        scratch.output_conv1 = nn.Conv2d(features, half, 3, padding=1)
        scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(half, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 1, 1),
            nn.Sigmoid() if metric else nn.ReLU(inplace=True),
        )
        self.scratch = scratch

    # The forward pass in its three steps, so that a temporal head can act between them.

    def reassemble(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Four token maps → project (1x1) and resize to strides 4, 8, 16, 32 of the patch grid."""
        return [resize(proj(f)) for f, proj, resize in zip(feats, self.projects, self.resize_layers,
                                                           strict=True)]

    def to_features(self, layers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The 3x3 `layerN_rn` convolutions to `features` channels."""
        s = self.scratch
        return [rn(x) for x, rn in zip(layers, (s.layer1_rn, s.layer2_rn, s.layer3_rn, s.layer4_rn),
                                       strict=True)]

    def fine_features(self, p3: torch.Tensor, l2: torch.Tensor, l1: torch.Tensor,
                      size: tuple[int, int]) -> torch.Tensor:
        """refinenet2, refinenet1, output_conv1 and the upsample: (B, features/2, *size), the
        map every output convolution (depth, DA3's sky) reads."""
        s = self.scratch
        p2 = s.refinenet2(p3, l2, size=l1.shape[2:])
        p1 = s.refinenet1(p2, l1)
        out = s.output_conv1(p1)
        return F.interpolate(out, size=size, mode="bilinear", align_corners=True)

    def fine(self, p3: torch.Tensor, l2: torch.Tensor, l1: torch.Tensor,
             size: tuple[int, int]) -> torch.Tensor:
        """refinenet2, refinenet1 and the output convolutions: (B, 1, *size)."""
        return self.scratch.output_conv2(self.fine_features(p3, l2, l1, size))

    def fuse(self, layers: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Reassembled maps → `fine_features` at `size` (the whole fusion chain)."""
        s = self.scratch
        l1, l2, l3, l4 = self.to_features(layers)
        p4 = s.refinenet4(l4, size=l3.shape[2:])
        p3 = s.refinenet3(p4, l3, size=l2.shape[2:])
        return self.fine_features(p3, l2, l1, size)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        h0, w0 = feats[0].shape[-2:]
        return self.scratch.output_conv2(self.fuse(self.reassemble(feats), (h0 * 14, w0 * 14)))

"""Depth Anything 3 outputs after the network: unpacking, the sky fill, camera, metric scale.

The model's packed (B, K, H, W) tensor (models/da3_model.py) becomes depth plus per-image
extras: `conf` (any-view), `sky_map` (mono/metric), `intrinsics` (any-view, network pixels),
`sky_fill` (the value written over the sky, or None when the fill did not run).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch

from .da3_heads import fov_to_intrinsics
from .registry import ModelSpec

SKY_FILL_THRESHOLD = 0.3  # non-sky = sky map < 0.3 for the fill
SKY_MASK_THRESHOLD = 0.5  # the official `Prediction.sky` mask: sky map >= 0.5
SKY_QUANTILE = 0.99
METRIC_FOCAL_DIVISOR = 300.0  # README FAQ: metres = focal_px * output / 300


def fill_sky(depth: torch.Tensor, sky: torch.Tensor) -> tuple[torch.Tensor, float | None]:
    """One image's (H, W) depth with its sky set to the 0.99 quantile of the non-sky depth.

    The official code subsamples 100000 of the non-sky values with the global torch RNG when
    there are more (nearly every 504-px image), so its output changes from run to run (5.7e-4
    of the range on golden portrait@504). This takes the exact quantile of all of them instead:
    deterministic, independent of the batch and of the caller's RNG, and the value the
    subsample estimates. Nothing changes when 10 or fewer pixels are sky or non-sky.
    """
    non_sky = sky < SKY_FILL_THRESHOLD
    n = int(non_sky.sum())
    if n <= 10 or non_sky.numel() - n <= 10:
        return depth, None
    values = depth[non_sky].float()
    if values.numel() < 1 << 24:  # torch.quantile's limit
        q = torch.quantile(values, SKY_QUANTILE)
    else:  # linear interpolation between the two order statistics, as torch.quantile does
        pos = SKY_QUANTILE * (values.numel() - 1)
        lo = torch.kthvalue(values, int(math.floor(pos)) + 1).values
        hi = torch.kthvalue(values, int(math.ceil(pos)) + 1).values
        q = lo + (hi - lo) * (pos - math.floor(pos))
    return torch.where(non_sky, depth, q.to(depth.dtype)), float(q)


def unpack(spec: ModelSpec, out: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Packed (B, K, H, W) → depth (B, H, W) and one extras dict per image (network size)."""
    depth = out[:, 0]
    h, w = int(out.shape[-2]), int(out.shape[-1])
    extras: list[dict[str, Any]] = []
    if spec.da3 is not None and spec.da3.any_view:
        intr = fov_to_intrinsics(out[:, 2:4, 0, 0].float(), h, w).cpu().numpy()
        for i in range(out.shape[0]):
            extras.append({"conf": out[i, 1], "intrinsics": intr[i]})
        return depth, extras
    filled = []
    for i in range(out.shape[0]):
        d, fill = fill_sky(depth[i], out[i, 1])
        filled.append(d)
        extras.append({"sky_map": out[i, 1], "sky_fill": fill})
    return torch.stack(filled), extras


def network_focal(in_size: tuple[int, int], net_size: tuple[int, int],
                  camera: Mapping[str, float | None] | None,
                  src: str | os.PathLike[str] | None = None) -> tuple[float, str]:
    """The focal length (px) of the network-size image, and where it came from.

    The input image's fx = fy comes from --focal-px, --fov-deg, EXIF, else a 60° horizontal
    field of view (io/camera.resolve_intrinsics); it is scaled to the network size,
    f = (fx·W'/W + fy·H'/H) / 2, because the model's output belongs to that image.
    """
    from ..io.camera import Hints, resolve_intrinsics

    (h, w), (nh, nw) = in_size, net_size
    cam = camera or {}
    opts = Hints(focal_px=cam.get("focal_px"), fov_deg=cam.get("fov_deg"),
                             cx=cam.get("cx"), cy=cam.get("cy"))
    intr = resolve_intrinsics(w, h, opts, src)
    return (intr.fx * nw / w + intr.fy * nh / h) / 2.0, intr.source


def metric_scale(depth: torch.Tensor, focal_net: float) -> torch.Tensor:
    """da3-metric-large's output → metres: focal (network px) × output / 300."""
    return depth * (focal_net / METRIC_FOCAL_DIVISOR)


def scale_intrinsics(k: Any, net_size: tuple[int, int], size: tuple[int, int]) -> list[list[float]]:
    """(3, 3) intrinsics of the network image → the same camera at `size` (h, w), as lists."""
    sy, sx = size[0] / net_size[0], size[1] / net_size[1]
    fx, fy = float(k[0][0]) * sx, float(k[1][1]) * sy
    return [[fx, 0.0, size[1] / 2.0], [0.0, fy, size[0] / 2.0], [0.0, 0.0, 1.0]]

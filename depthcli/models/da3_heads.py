"""Depth Anything 3 heads (DESIGN.md §10.3.3-10.3.5) on the DPT pieces of `dpt.py`.

- `Da3DPTHead`: DA2's fusion chain without refinenet4's unused first unit, a linear last conv
  (the model takes exp), and either a ReLU sky head (mono/metric, `model.head` of `dpt.py`
  upstream) or the DualDPT main branch's LayerNorm and UV position embeddings (any-view). The
  DualDPT auxiliary ray branch is not built: for a single image the official code computes it
  and then throws it away.
- `CameraDecoder`: the camera token → field of view → pinhole intrinsics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .dpt import DPTHead
from .encoder import PATCH

UV_RATIO = 0.1
UV_OMEGA = 100.0


def _sincos(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """(dim, M): [sin(p·ω_k) for k < dim/2] ++ [cos(p·ω_k)], ω_k = 100^(−k/(dim/2)), float32."""
    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim / 2.0)
    omega = 1.0 / UV_OMEGA ** omega
    ang = pos[:, None] * omega[None, :]
    return torch.cat((ang.sin(), ang.cos()), dim=1).t()


def uv_embedding(channels: int, ph: int, pw: int, width: int, height: int,
                 device: torch.device) -> torch.Tensor:
    """(1, channels, ph, pw) UV position embedding of a ph x pw map of a width x height image.

    The grid spans ±(aspect / diagonal) x ±(1 / diagonal) of the *image* (not the map), the
    half-cell inset (n − 1) / n at both ends; the first half of the channels embed u (column),
    the second v (row). Multiplied by 0.1, as added by the official head.
    """
    ar = width / height
    diag = (ar ** 2 + 1.0) ** 0.5
    sx, sy = ar / diag, 1.0 / diag
    u = torch.linspace(-sx * (pw - 1) / pw, sx * (pw - 1) / pw, pw, device=device)
    v = torch.linspace(-sy * (ph - 1) / ph, sy * (ph - 1) / ph, ph, device=device)
    half = channels // 2
    eu = _sincos(u, half)[:, None, :].expand(half, ph, pw)
    ev = _sincos(v, half)[:, :, None].expand(half, ph, pw)
    return (torch.cat((eu, ev), dim=0) * UV_RATIO)[None]


def _out_conv(half: int, out: int) -> nn.Sequential:
    """Conv3x3(half → 32), ReLU, Conv1x1(32 → out): DA3's last convolutions, no activation."""
    return nn.Sequential(nn.Conv2d(half, 32, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(32, out, 1))


class Da3DPTHead(DPTHead):
    """DA3's DPT head: four (B, dim_in, h0, w0) maps → (B, output_dim (+1 sky), H, W) values.

    Any-view (`dual=True`, DualDPT main branch): LayerNorm over the 2C features, UV embeddings
    after each projection and after the upsample; returns (exp(depth), exp(conf) + 1).
    Mono/metric: returns (exp(depth), relu(sky)).
    """

    def __init__(self, dim_in: int, features: int, out_channels: Sequence[int],
                 dual: bool) -> None:
        super().__init__(dim_in, features, out_channels)
        del self.scratch.refinenet4.resConfUnit1  # DA3's refinenet4 has none
        half = features // 2
        self.dual = dual
        self.scratch.output_conv2 = _out_conv(half, 2 if dual else 1)
        if dual:
            self.norm = nn.LayerNorm(dim_in, eps=1e-5)
        else:
            self.scratch.sky_output_conv2 = _out_conv(half, 1)

    def _uv(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return x + uv_embedding(x.shape[1], x.shape[2], x.shape[3], size[1], size[0],
                                x.device).to(x.dtype)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        h0, w0 = feats[0].shape[-2:]
        size = (h0 * PATCH, w0 * PATCH)
        if not self.dual:
            feat = self.fuse(self.reassemble(feats), size)
            depth = self.scratch.output_conv2(feat).exp()
            return torch.cat((depth, torch.relu(self.scratch.sky_output_conv2(feat))), dim=1)
        layers = []
        for f, proj, resize in zip(feats, self.projects, self.resize_layers, strict=True):
            f = self.norm(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            layers.append(resize(self._uv(proj(f), size)))
        out = self.scratch.output_conv2(self._uv(self.fuse(layers, size), size))
        return torch.cat((out[:, :1].exp(), out[:, 1:].exp() + 1.0), dim=1)


class CameraDecoder(nn.Module):
    """cam_dec: (B, 2C) camera token → (B, 2) field of view (fov_h, fov_w) in radians.

    fc_t and fc_qvec (translation, rotation) are kept for the checkpoint's keys; a one-image
    scene's pose is the identity-by-convention reference, so they are not evaluated.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim),
                                      nn.ReLU())
        self.fc_t = nn.Linear(dim, 3)
        self.fc_qvec = nn.Linear(dim, 4)
        self.fc_fov = nn.Sequential(nn.Linear(dim, 2), nn.ReLU())

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        return self.fc_fov(self.backbone(token.float()))


def fov_to_intrinsics(fov: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 2) (fov_h, fov_w) → (B, 3, 3) pinhole intrinsics in pixels of a height x width image."""
    fy = (height / 2.0) / torch.clamp(torch.tan(fov[:, 0] / 2.0), min=1e-6)
    fx = (width / 2.0) / torch.clamp(torch.tan(fov[:, 1] / 2.0), min=1e-6)
    k = torch.zeros(fov.shape[0], 3, 3, dtype=fov.dtype, device=fov.device)
    k[:, 0, 0], k[:, 1, 1] = fx, fy
    k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = width / 2.0, height / 2.0, 1.0
    return k

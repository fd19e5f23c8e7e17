"""Preprocessing and output resizing exactly as the official `infer_image` (DESIGN.md §4.1).

Owns the geometry contract: keep aspect, short side to `input_size`, both sides multiples of 14,
and the original (h, w) to upsample back to. Constants come from the ModelSpec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .device import is_half

if TYPE_CHECKING:  # torch is imported where it is used: decode-only workers never need it
    import torch

MULTIPLE = 14
# 518 x 7000: ~18k tokens. Beyond this, attention memory explodes on extreme aspect ratios
# (the official code would just run out of memory); such inputs are refused per image.
MAX_TOKENS = 20_000


@dataclass(frozen=True)
class Preprocess:
    """The official transform for one model: lower-bound resize, ImageNet normalisation."""

    input_size: int = 518
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # False: resize in float32 (~3x cheaper: 13.7 -> 3.8 ms on a 2.8 MP photo, 1-2e-4 off in
    # normalised units). Only for half-precision models, whose bf16/fp16 input rounding alone
    # is ~30x larger; fp32 keeps the exact float64 path.
    exact: bool = True

    def target_size(self, h: int, w: int) -> tuple[int, int]:
        """Network input (H, W) for an h x w image: the official 'lower_bound' rule."""
        return lower_bound_size(h, w, self.input_size)

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        """Map a BGR uint8 (H, W, 3) image to a normalised float32 (3, H', W') array.

        float64 until the end, cv2 INTER_CUBIC, np.round: each of these matters for parity.
        """
        img = to_bgr3(bgr)
        h, w = img.shape[:2]
        th, tw = self.target_size(h, w)
        tokens = (th // MULTIPLE) * (tw // MULTIPLE)
        if tokens > MAX_TOKENS:
            raise ValueError(
                f"aspect ratio {w}x{h} is too extreme: the network input would be {tw}x{th} "
                f"({tokens} tokens, limit {MAX_TOKENS}); crop the image or lower --input-size"
            )
        # 16-bit sources keep their precision instead of being cut to 8 bits.
        top = 255.0 if img.dtype == np.uint8 else 65535.0
        # Official order: BGR->RGB, /255, resize, normalise, all float64. Resizing is linear and
        # per channel, so the raw values are resized first (converted exactly to float64) and
        # the swap, /255 and normalisation run on the small image: the same numbers up to
        # float64 rounding (max 2.4e-7 = 1 float32 ulp on the sample photos; golden parity
        # unchanged), 24.5 -> 18.5 ms on a 2.8 MP photo.
        work = np.float64 if self.exact else np.float32
        small = cv2.resize(img.astype(work), (tw, th), interpolation=cv2.INTER_CUBIC)
        out = np.empty((3, th, tw), np.float32)
        planes: list[np.ndarray] = list(cv2.split(small))  # float planes (work dtype)
        for c, plane in enumerate(reversed(planes)):  # B, G, R planes -> R, G, B
            plane /= top
            plane -= self.mean[c]
            plane /= self.std[c]
            out[c] = plane
        return out


@dataclass(frozen=True)
class Da3Preprocess:
    """Depth Anything 3's transform (DESIGN.md §10.3.1): long side to `input_size`, then each
    side to its nearest multiple of 14, both as uint8 cv2 resizes (cubic when a side grows,
    area otherwise), then /255 and ImageNet normalisation in float32.

    Not DA2's rule (float64, always cubic, short side): on DA3 that costs 0.14 of the range.
    """

    input_size: int = 504
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    exact: bool = True  # uint8 resizing is the official path at every precision

    def bound_size(self, h: int, w: int) -> tuple[int, int]:
        """Step 1: (h, w) with the long side at `input_size` (Python round, half to even)."""
        if self.input_size < 1:
            raise ValueError(f"input size must be positive, got {self.input_size}")
        longest = max(h, w)
        if longest == self.input_size:
            return h, w
        scale = self.input_size / longest
        return max(1, int(round(h * scale))), max(1, int(round(w * scale)))

    def target_size(self, h: int, w: int) -> tuple[int, int]:
        """Network input (H, W): step 1, then each side to the nearest multiple of 14, ties up."""
        bh, bw = self.bound_size(h, w)
        return _nearest_multiple(bh), _nearest_multiple(bw)

    def resize(self, bgr: np.ndarray) -> np.ndarray:
        """The two uint8 resizes of the official input processor: (H, W, 3) uint8 BGR."""
        img = to_bgr3(bgr)
        if img.dtype != np.uint8:  # 16-bit sources: the 8 bits PIL's RGB conversion keeps
            img = (img >> 8).astype(np.uint8)
        h, w = img.shape[:2]
        bh, bw = self.bound_size(h, w)
        if (bh, bw) != (h, w):
            grow = self.input_size > max(h, w)
            img = cv2.resize(img, (bw, bh), interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)
        th, tw = _nearest_multiple(bh), _nearest_multiple(bw)
        if (th, tw) != (bh, bw):
            grow = th > bh or tw > bw
            img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)
        return img

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        """BGR uint8 (H, W, 3) → normalised float32 (3, H', W') RGB."""
        small = self.resize(bgr)
        th, tw = small.shape[:2]
        if (th // MULTIPLE) * (tw // MULTIPLE) > MAX_TOKENS:
            raise ValueError(f"aspect ratio {bgr.shape[1]}x{bgr.shape[0]} is too extreme: the "
                             f"network input would be {tw}x{th}; crop the image")
        out = np.empty((3, th, tw), np.float32)
        for c in range(3):  # RGB from BGR planes, float32 like torchvision's ToTensor/Normalize
            plane = small[:, :, 2 - c].astype(np.float32) / np.float32(255.0)
            out[c] = (plane - np.float32(self.mean[c])) / np.float32(self.std[c])
        return out


def preprocess_for(spec: object, input_size: int | None = None,
                   exact: bool = True) -> Preprocess | Da3Preprocess:
    """The transform a model's estimator uses (DA3's own rule for the `v3` family): one choice
    shared by the local engine and the Ray read tasks, which must prepare the same tensors."""
    cls = Da3Preprocess if getattr(spec, "family", None) == "v3" else Preprocess
    return cls(input_size or spec.input_size, spec.mean, spec.std,  # type: ignore[attr-defined]
               exact=exact)


def engine_preprocess(spec: object, input_size: int | None, precision: str,
                      device_type: str) -> Preprocess | Da3Preprocess:
    """The preprocessing of a `DepthEngine` for `spec` at `precision` on `device_type`.

    The engine takes it from here, and so do the Ray read tasks (through `EngineSpec`), before
    any model is loaded: one rule, so both prepare the same tensors. Float32 models take the
    exact float64 resize, half precision the float32 one (see `Preprocess.exact`).
    """
    return preprocess_for(spec, input_size, exact=not is_half(precision, device_type))


def _nearest_multiple(n: int) -> int:
    """The nearest multiple of 14 to n (a tie goes up; never 0)."""
    down = n // MULTIPLE * MULTIPLE
    up = down + MULTIPLE
    return up if down == 0 or up - n <= n - down else down


def _multiple(x: float, min_val: int) -> int:
    y = int(np.round(x / MULTIPLE) * MULTIPLE)
    if y < min_val:
        y = int(np.ceil(x / MULTIPLE) * MULTIPLE)
    return y


def lower_bound_size(h: int, w: int, input_size: int) -> tuple[int, int]:
    """Scale so the short side reaches `input_size`, round each side to a multiple of 14.

    Like the official Resize, `input_size` need not be a multiple of 14: each side is rounded
    to the nearest multiple, or up when rounding would go below `input_size`.
    """
    if input_size < 1:
        raise ValueError(f"input size must be positive, got {input_size}")
    scale = max(input_size / h, input_size / w)
    return _multiple(scale * h, input_size), _multiple(scale * w, input_size)


def to_bgr3(img: np.ndarray) -> np.ndarray:
    """Coerce grayscale / BGRA / single-channel images to 3-channel BGR (alpha dropped)."""
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise ValueError(f"unsupported image shape {img.shape}")


def upsample(depth: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """Bilinear-resize (B, H', W') depth to (B, h, w): V2 uses align_corners=True, V1 False."""
    import torch.nn.functional as F

    if tuple(depth.shape[-2:]) == tuple(size) and align_corners:
        return depth
    return F.interpolate(
        depth[:, None], size=size, mode="bilinear", align_corners=align_corners
    )[:, 0]


def upsample_host(depth: np.ndarray, size: tuple[int, int], align_corners: bool) -> np.ndarray:
    """`upsample` of one (H', W') host array, in numpy: torch's bilinear rule (the same source
    coordinates and weights, in float32), so a runtime model's depth needs no torch at all.

    Separable: the columns of the small network-size map first, then whole rows (contiguous
    copies) of the large one.
    """
    h, w = size
    x = np.asarray(depth, dtype=np.float32)
    if x.shape == (h, w) and align_corners:
        return x.copy()
    c0, c1, cw0, cw1 = _linear_taps(x.shape[1], w, align_corners)
    cols = x[:, c0] * cw0
    cols += x[:, c1] * cw1
    r0, r1, rw0, rw1 = _linear_taps(x.shape[0], h, align_corners)
    out = np.empty((h, w), np.float32)
    step = max(1, (1 << 18) // max(w, 1))  # blocks of ~1 MB: the two row sets stay in cache
    for a in range(0, h, step):
        b = min(h, a + step)
        block = out[a:b]
        np.multiply(cols[r0[a:b]], rw0[a:b, None], out=block)
        block += cols[r1[a:b]] * rw1[a:b, None]
    return out


def _linear_taps(n_in: int, n_out: int, align_corners: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two source indices and their weights, as torch computes
    them (`area_pixel_compute_source_index`, float32 with the multiply-add fused)."""
    dst = np.arange(n_out, dtype=np.float32)
    if align_corners:
        scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
        src = dst * scale
    else:  # torch fuses this into one multiply-add: the exact product, rounded once
        scale = np.float32(n_in) / np.float32(n_out)
        exact = (dst + np.float32(0.5)).astype(np.float64) * np.float64(scale) - 0.5
        src = np.maximum(exact.astype(np.float32), np.float32(0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, (np.float32(1) - w1), w1


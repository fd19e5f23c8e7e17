"""Depth (float, H x W) → 8/16-bit images: range policy, orientation, colour LUTs, side-by-side.

Colour maps are 256-entry LUTs sampled once from matplotlib and shipped in `data/colormaps.npz`,
so matplotlib is not a runtime dependency. Indexing follows the official demo: the normalised
value is truncated to uint8 and used as a LUT index (red = near with spectral_r).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

import numpy as np

RangeMode = Literal["minmax", "percentile", "fixed"]


@lru_cache(maxsize=1)
def _luts() -> dict[str, np.ndarray]:
    with resources.files("depthcli.data").joinpath("colormaps.npz").open("rb") as f:
        data = np.load(f)
        return {k: data[k] for k in data.files}


def lut(name: str) -> np.ndarray:
    """(256, 3) uint8 RGB table of a colour map (case-insensitive matplotlib name)."""
    key = name.lower()
    luts = _luts()
    if key not in luts:
        raise ValueError(f"unknown colour map {name!r}; choose from {', '.join(sorted(luts))}")
    return luts[key]


@dataclass(frozen=True)
class RenderOptions:
    """How float depth becomes pixels. `near_is_large` is True for relative (inverse) depth."""

    cmap: str = "spectral_r"
    mode: RangeMode = "minmax"
    vrange: tuple[float, float] | None = None  # fixed (lo, hi) in output units
    percentiles: tuple[float, float] = (2.0, 98.0)
    invert: bool = False


def value_range(depth: np.ndarray, opts: RenderOptions) -> tuple[float, float]:
    """The (lo, hi) mapped to the ends of the colour scale for this depth map."""
    if opts.mode == "fixed" and opts.vrange is not None:
        return float(opts.vrange[0]), float(opts.vrange[1])
    ok = np.isfinite(depth)
    finite = depth if ok.all() else depth[ok]  # no copy when every value is finite
    if finite.size == 0:
        return 0.0, 1.0
    if opts.mode == "percentile":
        lo, hi = np.percentile(finite, opts.percentiles)
        return float(lo), float(hi)
    return float(finite.min()), float(finite.max())


def nearness(
    depth: np.ndarray, vrange: tuple[float, float], near_is_large: bool, invert: bool = False
) -> np.ndarray:
    """Scale depth to float32 in [0, 1] where 1 = near (flip with `invert`).

    A constant map (hi == lo) gives zeros instead of the official scripts' division by zero.
    """
    lo, hi = np.float32(vrange[0]), np.float32(vrange[1])
    span = hi - lo
    d = depth.astype(np.float32, copy=False)
    if not np.isfinite(span) or span <= 0:
        t = np.zeros(depth.shape, np.float32)
    else:  # float32 like the official demo, so the uint8 truncation lands on the same values
        # in place on one temporary: same values as the chained expression, a third of the passes
        t = np.subtract(d, lo, dtype=np.float32)
        t /= span
        np.clip(t, np.float32(0), np.float32(1), out=t)
        np.nan_to_num(t, copy=False, nan=0.0)
    if not near_is_large:
        np.subtract(np.float32(1), t, out=t)
    if invert:
        np.subtract(np.float32(1), t, out=t)
    return t


def to_uint8(t: np.ndarray) -> np.ndarray:
    """[0, 1] → uint8 by truncation (official: `(d - min) / (max - min) * 255` then astype)."""
    return (t * np.float32(255.0)).astype(np.uint8)


def to_uint16(t: np.ndarray) -> np.ndarray:
    return np.round(t.astype(np.float64) * 65535.0).astype(np.uint16)


@lru_cache(maxsize=16)
def _bgr_table(name: str) -> np.ndarray:
    return np.ascontiguousarray(lut(name)[:, ::-1]).reshape(256, 1, 3)


def colorize(index: np.ndarray, cmap: str) -> np.ndarray:
    """uint8 (H, W) index → (H, W, 3) uint8 **BGR** (ready for cv2 writers).

    cv2.LUT gives the same bytes as numpy fancy indexing, ~18x faster on a 2.8 MP map.
    """
    import cv2

    return cv2.LUT(cv2.merge([index, index, index]), _bgr_table(cmap.lower()))


def side_by_side(image_bgr: np.ndarray, depth_bgr: np.ndarray, gap: int = 50) -> np.ndarray:
    """Input | white gap | depth, as the official demo (both at the input's size)."""
    h = image_bgr.shape[0]
    white = np.full((h, gap, 3), 255, np.uint8)
    return np.concatenate([image_bgr, white, depth_bgr], axis=1)

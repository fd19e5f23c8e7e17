"""Encoding one depth map into each format's bytes or pixels (no files, no registry).

Value conventions (also in the README):
- npy / pfm / exr: float32 raw model output at the input's size (or the network's, with
  --output-size network): relative inverse depth (DA1/DA2, unitless, near = large), relative
  depth (DA3, unitless, near = small) or metres (metric models).
- color: colour map of the normalised range, near = warm (spectral_r: red near, blue far).
- gray: 8-bit, near = bright.  side: input | 50 px white | color.
- png16: relative models: the normalised range scaled to 0..65535, near = bright (DA1/DA2
  inverse depth and DA3 depth alike); metric models: millimetres (65535 = 65.535 m and beyond).
- Depth Anything 3 relative models give depth (larger = farther), DA1/DA2 relative models
  inverse depth: `OutputOptions.near_is_large` says which, so near is warm/bright for all.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..io.exr import enable_exr
from . import render

if TYPE_CHECKING:
    from .formats import OutputOptions


def npy_bytes(depth: np.ndarray) -> bytes:
    bio = io.BytesIO()
    np.save(bio, depth.astype(np.float32, copy=False))
    return bio.getvalue()


def pfm_bytes(depth: np.ndarray) -> bytes:
    """Single-channel PFM ('Pf'), little-endian (negative scale), rows bottom to top."""
    d = np.ascontiguousarray(np.flipud(depth.astype("<f4", copy=False)))
    h, w = depth.shape
    return f"Pf\n{w} {h}\n-1.0\n".encode("ascii") + d.tobytes()


def read_pfm(path: Path) -> np.ndarray:
    """Inverse of `pfm_bytes` (used by tests and for round trips)."""
    data = path.read_bytes()
    lines = data.split(b"\n", 3)
    w, h = (int(v) for v in lines[1].split())
    scale = float(lines[2])
    arr = np.frombuffer(lines[3], dtype="<f4" if scale < 0 else ">f4", count=w * h)
    return np.flipud(arr.reshape(h, w)).astype(np.float32)


def exr_bytes(depth: np.ndarray) -> bytes:
    enable_exr()
    ok, buf = cv2.imencode(".exr", depth.astype(np.float32, copy=False))
    if not ok:
        raise OSError("EXR encoding failed")
    return buf.tobytes()


def encode_visual(fmt: str, depth: np.ndarray, image: np.ndarray | None,
                  opts: OutputOptions, vrange: tuple[float, float] | None = None) -> np.ndarray:
    """Render one visual format to an array (BGR uint8, or uint16 for png16)."""
    ropts = opts.render
    if fmt == "png16" and opts.metric:
        return np.clip(np.round(depth.astype(np.float64) * 1000.0), 0, 65535).astype(np.uint16)
    rng = vrange if vrange is not None else render.value_range(depth, ropts)
    t = render.nearness(depth, rng, near_is_large=bool(opts.near_is_large), invert=ropts.invert)
    if fmt == "png16":
        return render.to_uint16(t)
    idx = render.to_uint8(t)
    if fmt == "gray":
        return idx
    col = render.colorize(idx, ropts.cmap)
    if fmt == "side":
        if image is None:
            raise ValueError("side format needs the input image")
        return render.side_by_side(image, col)
    return col

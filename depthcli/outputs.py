"""Per-image output formats: names, value conventions, and atomic encoding to files.

Value conventions (also in the README):
- npy / pfm / exr: float32 raw model output at the input's size: relative inverse depth
  (unitless, near = large) or metres (metric models).
- color: colour map of the normalised range, near = warm (spectral_r: red near, blue far).
- gray: 8-bit, near = bright.  side: input | 50 px white | color.
- png16: relative models: the normalised range scaled to 0..65535, near = bright;
  metric models: millimetres (65535 = 65.535 m and beyond).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import render
from .io.atomic import write_bytes
from .io.png import encode_png

PNG_KINDS = ("color", "gray", "png16", "side")
RAW_KINDS = ("npy", "pfm", "exr")
FORMATS: tuple[str, ...] = (*PNG_KINDS, *RAW_KINDS)

# Extra per-image writers registered by other modules (e.g. point clouds): name → (ext, fn).
# fn(depth, image_bgr, dst, opts, src) where src is the input file (for EXIF) or None.
ExtraWriter = Callable[[np.ndarray, np.ndarray, Path, "OutputOptions", "Path | None"], None]
EXTRA_FORMATS: dict[str, tuple[str, ExtraWriter]] = {}


def all_formats() -> tuple[str, ...]:
    return (*FORMATS, *EXTRA_FORMATS)


def parse_formats(values: Sequence[str]) -> tuple[str, ...]:
    """`--format a,b --format c` → ('a', 'b', 'c'), validated, order kept, no repeats."""
    out: list[str] = []
    for v in values:
        for part in v.split(","):
            f = part.strip().lower()
            if not f:
                continue
            if f not in all_formats():
                raise ValueError(f"unknown format {f!r}; choose from {', '.join(all_formats())}")
            if f not in out:
                out.append(f)
    return tuple(out) or ("color",)


@dataclass(frozen=True)
class OutputOptions:
    formats: tuple[str, ...] = ("color",)
    render: render.RenderOptions = field(default_factory=render.RenderOptions)
    metric: bool = False
    extras: dict[str, object] = field(default_factory=dict)  # options of extra writers


def output_paths(base: Path, formats: Sequence[str]) -> dict[str, Path]:
    """File per format for one input whose output stem path is `base` (OUT/rel/stem).

    A lone PNG-kind format is `<stem>.png`; several PNG kinds get `<stem>_<format>.png`.
    """
    pngs = [f for f in formats if f in PNG_KINDS]
    paths: dict[str, Path] = {}
    for f in formats:
        if f in PNG_KINDS:
            suffix = ".png" if len(pngs) == 1 else f"_{f}.png"
        elif f in EXTRA_FORMATS:
            suffix = EXTRA_FORMATS[f][0]
        else:
            suffix = f".{f}"
        paths[f] = base.parent / (base.name + suffix)
    return paths


def npy_bytes(depth: np.ndarray) -> bytes:
    import io

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
    t = render.nearness(depth, rng, near_is_large=not opts.metric, invert=ropts.invert)
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


def write_image_outputs(
    depth: np.ndarray,
    image: np.ndarray | None,
    paths: dict[str, Path],
    opts: OutputOptions,
    src: Path | None = None,
) -> None:
    """Write every requested format for one image (each file atomically)."""
    for fmt, path in paths.items():
        if fmt == "npy":
            write_bytes(path, npy_bytes(depth))
        elif fmt == "pfm":
            write_bytes(path, pfm_bytes(depth))
        elif fmt == "exr":
            write_bytes(path, exr_bytes(depth))
        elif fmt in PNG_KINDS:
            write_bytes(path, encode_png(encode_visual(fmt, depth, image, opts)))
        elif fmt in EXTRA_FORMATS:
            if image is None:
                raise ValueError(f"{fmt} format needs the input image")
            EXTRA_FORMATS[fmt][1](depth, image, path, opts, src)
        else:  # parse_formats rejects these earlier
            raise ValueError(f"unknown format {fmt}")


def needs_image(formats: Sequence[str]) -> bool:
    return "side" in formats or any(f in EXTRA_FORMATS for f in formats)




from . import pointcloud  # noqa: E402,F401 - registers the "ply" format

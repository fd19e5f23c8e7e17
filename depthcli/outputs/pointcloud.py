"""`--format ply`: metric depth → coloured point cloud (binary little-endian PLY), one per image.

Declared as the "ply" format in `depthcli.outputs.FORMATS`; `write_ply_output` writes one file.

Coordinates (written to every file's header too, so a reader need not guess):

- Camera frame, OpenCV convention: x right, y down, z forward (optical axis); units metres.
- Pixel (u, v) = (column, row) as 0-based *integer* indices of the decoded image (EXIF
  rotation already applied), i.e. the input and the depth map at the same size.
- Pinhole back-projection with square pixels (fx = fy)::

      Z = depth[v, u]            (float32, bit-identical to the npy / pfm value of the same run)
      X = (u - cx) * Z / fx      (computed in float64, stored as float32)
      Y = (v - cy) * Z / fy

  Default principal point cx = W / 2, cy = H / 2 (the convention of Depth Anything V2's own
  `metric_depth/depth_to_pointcloud.py`); `--cx` / `--cy` override it.
- `--ply-stride N` keeps pixels whose u and v are both multiples of N (u = 0, N, 2N, ...);
  u, v and the intrinsics stay those of the full-resolution image.
- Points are written in row-major pixel order (v, then u); pixels whose depth is not finite or
  not > 0 are skipped, so a point's pixel is u = round(X * fx / Z + cx), v = round(Y * fy / Z + cy).
- Colour: the input pixel at (v, u) as uchar red, green, blue.

Focal length, first that applies (the source is logged and stored as `focal_source=`):

1. `--focal-px F`: fx = fy = F                                          (focal-px)
2. `--fov-deg A`, horizontal: fx = (W / 2) / tan(A / 2)                 (fov-deg)
3. EXIF FocalLengthIn35mmFilm f35 (tag 0xA405, in the Exif IFD, or in IFD0 where a camera put it
   there), referred to the 36 mm long side of a 36 x 24 mm frame:
   fx = f35 / 36 * max(W, H)                                             (exif)
4. otherwise a 60° horizontal field of view (Hypersim's camera, the indoor metric models'
   training data): fx = (W / 2) / tan(30°) ≈ 0.866 W                      (default)

Depth values:

- metric models (`da2-metric-*`): the model output is already metres (0 .. --max-depth);
  `--assume-scale` is ignored.
- relative models (inverse depth, no scale): only with `--assume-scale S`, and then
  Z = float32(S / output) (computed in float64); output <= 0 gives no point. This is an
  assumption, not a measurement: the result is at best right up to an unknown shift in the
  inverse-depth domain.

Header comments, one `key=value` group per line, e.g.::

    comment intrinsics fx=554.256 fy=554.256 cx=320 cy=240 width=640 height=480 stride=1
    comment focal_source=fov-deg fov_deg=60
    comment depth=metric                      (or: depth=assume-scale scale=S z=S/output)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from ..io.atomic import write_with
from ..io.camera import Intrinsics, exif_focal_35mm, fmt_float, resolve_intrinsics
from ..version import __version__

if TYPE_CHECKING:
    from .formats import OutputOptions

_logger = logging.getLogger(__name__)

__all__ = ["Intrinsics", "exif_focal_35mm", "metric_depth", "read_ply", "resolve_intrinsics",
           "write_ply_output", "write_points"]

VERTEX_DTYPE = np.dtype([
    ("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
    ("red", "u1"), ("green", "u1"), ("blue", "u1"),
])
_CHUNK_POINTS = 1 << 20  # points encoded per write: bounds the float64 temporaries


def metric_depth(depth: np.ndarray, metric: bool, assume_scale: float | None,
                 inverse: bool = True) -> np.ndarray:
    """Model output → metres (float32); NaN where there is no depth (relative output <= 0).

    `inverse=False` (Depth Anything 3's relative depth): the output itself, in its own unit.
    """
    d = np.asarray(depth)
    if metric or not inverse:
        return d.astype(np.float32, copy=False)
    if assume_scale is None:
        raise ValueError(
            "ply needs metric depth; relative (inverse) depth has no scale "
            "(use a da2-metric-* model, or --assume-scale S to treat S / output as metres)"
        )
    d64 = d.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = np.where(d64 > 0, float(assume_scale) / d64, np.nan)
    return z.astype(np.float32)


def ply_header(n: int, intr: Intrinsics, stride: int, depth_note: str) -> bytes:
    lines = [
        "ply",
        "format binary_little_endian 1.0",
        f"comment depthcli {__version__} point cloud",
        "comment convention opencv camera frame x-right y-down z-forward; metres",
        "comment pixels u,v = column,row indices (0-based integers) of the full image; "
        "row-major order; invalid depth skipped",
        "comment backprojection Z=depth[v,u] X=(u-cx)*Z/fx Y=(v-cy)*Z/fy",
        f"comment intrinsics fx={fmt_float(intr.fx)} fy={fmt_float(intr.fy)} cx={fmt_float(intr.cx)} "
        f"cy={fmt_float(intr.cy)} width={intr.width} height={intr.height} stride={stride}",
        f"comment focal_source={intr.source} {intr.detail}".rstrip(),
        f"comment {depth_note}",
        f"element vertex {n}",
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
        "end_header",
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def _rgb(image: np.ndarray) -> np.ndarray:
    """BGR(A) or gray uint8 → (H, W, 3) RGB uint8 view/copy."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.dtype != np.uint8:
        raise ValueError(f"ply colours need a uint8 image, got {img.dtype}")
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return img[:, :, 2::-1]  # BGR[A] → RGB


def write_points(f: BinaryIO, z: np.ndarray, rgb: np.ndarray, intr: Intrinsics, stride: int,
                 n: int, depth_note: str) -> None:
    """Write the header and the `n` valid points of the subsampled depth `z` to `f`."""
    f.write(ply_header(n, intr, stride, depth_note))
    rows, cols = z.shape
    rows_per = max(1, _CHUNK_POINTS // max(cols, 1))
    for r0 in range(0, rows, rows_per):
        zc = z[r0:r0 + rows_per]
        vi, ui = np.nonzero(np.isfinite(zc) & (zc > 0))  # row-major order
        if vi.size == 0:
            continue
        zz = zc[vi, ui]
        u = ui.astype(np.float64) * stride
        v = (vi.astype(np.float64) + r0) * stride
        pts = np.empty(vi.size, VERTEX_DTYPE)
        pts["x"] = (u - intr.cx) * zz / intr.fx
        pts["y"] = (v - intr.cy) * zz / intr.fy
        pts["z"] = zz
        col = rgb[(vi + r0) * stride, ui * stride]
        pts["red"], pts["green"], pts["blue"] = col[:, 0], col[:, 1], col[:, 2]
        f.write(pts.tobytes())


def write_ply_output(depth: np.ndarray, image: np.ndarray, path: Path,
                     opts: OutputOptions, src: Path | None = None,
                     camera: list[list[float]] | None = None) -> None:
    """The `ply` format writer (see the module docstring); writes `path` atomically.

    `opts.point_cloud` gives ply_stride, focal_px, fov_deg, cx, cy, assume_scale; `src` is the input
    file, read for its EXIF 35 mm focal length when neither --focal-px nor --fov-deg is given.
    """
    pc = opts.point_cloud
    if depth.ndim != 2:
        raise ValueError(f"ply needs a 2-D depth map, got shape {depth.shape}")
    h, w = depth.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image {image.shape[1]}x{image.shape[0]} and depth {w}x{h} differ")
    stride = int(pc.ply_stride or 1)
    if stride < 1:
        raise ValueError(f"ply stride must be >= 1, got {stride}")
    scale = pc.assume_scale
    inverse = bool(opts.near_is_large)
    z = metric_depth(depth[::stride, ::stride], opts.metric, scale, inverse)
    if opts.metric:
        note = "depth=metric z=model output in metres"
    elif not inverse:
        note = "depth=relative z=model output (relative depth: one unknown global scale)"
    else:
        assert scale is not None  # metric_depth refuses relative depth without a scale
        note = f"depth=assume-scale scale={fmt_float(scale)} z=scale/output (relative model)"
    intr = resolve_intrinsics(w, h, pc, src, camera)
    n = int(np.count_nonzero(np.isfinite(z) & (z > 0)))
    rgb = _rgb(image)
    write_with(path, lambda tmp: _write_file(tmp, z, rgb, intr, stride, n, note))
    name = src if src is not None else path
    _logger.info(
        "%s: ply intrinsics fx=fy=%.3f px (%s%s), cx=%.3f, cy=%.3f, %dx%d, stride %d: %d points",
        name, intr.fx, intr.source, f", {intr.detail}" if intr.detail else "", intr.cx, intr.cy,
        w, h, stride, n,
    )
    if n == 0:
        _logger.warning("%s: no valid depth, the point cloud is empty", name)


def _write_file(tmp: Path, z: np.ndarray, rgb: np.ndarray, intr: Intrinsics, stride: int,
                n: int, note: str) -> None:
    with open(tmp, "wb") as f:
        write_points(f, z, rgb, intr, stride, n, note)


def read_ply(path: str | os.PathLike[str]) -> tuple[dict[str, str], np.ndarray]:
    """Read back a file written here: (header `key=value` comment fields, vertex array)."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    fields: dict[str, str] = {}
    n = 0
    for line in data[:end].decode("ascii").splitlines():
        if line.startswith("comment "):
            for tok in line[len("comment "):].split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    fields.setdefault(k, v)
        elif line.startswith("element vertex "):
            n = int(line.split()[2])
    return fields, np.frombuffer(data, VERTEX_DTYPE, count=n, offset=end)

"""The camera of an image: pinhole intrinsics from the user's options, EXIF, or a default.

Used by the point clouds (`outputs.pointcloud`, whose docstring gives the rule and the
conventions) and by Depth Anything 3's metric scale (`models.da3_post`): both need the same fx
for the same image, so the rule lives once, here, beside the file it reads (EXIF).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Protocol

_logger = logging.getLogger(__name__)


class CameraHints(Protocol):
    """What a user may say about the camera (--focal-px, --fov-deg, --cx, --cy); None: not said."""

    @property
    def focal_px(self) -> float | None: ...
    @property
    def fov_deg(self) -> float | None: ...
    @property
    def cx(self) -> float | None: ...
    @property
    def cy(self) -> float | None: ...


@dataclass(frozen=True)
class Hints:
    """`CameraHints` on their own (e.g. the DA3 metric model's camera options)."""

    focal_px: float | None = None
    fov_deg: float | None = None
    cx: float | None = None
    cy: float | None = None


DEFAULT_HFOV_DEG = 60.0
FILM_LONG_SIDE_MM = 36.0
_EXIF_IFD = 0x8769
_TAG_F35 = 0xA405  # FocalLengthIn35mmFilm

@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels of the full-resolution image, and where fx came from."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    source: str  # "focal-px" | "fov-deg" | "exif" | "default"
    detail: str = ""  # e.g. "fov_deg=60" or "focal_35mm=28"


def fmt_float(x: float) -> str:
    """Shortest text that reads back as the same float64 (ints without '.0')."""
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def _as_float(value: object) -> float | None:
    """An EXIF value (int, IFDRational, (num, den) tuple, 1-tuple) as a float, or None."""
    try:
        if isinstance(value, tuple | list):
            if len(value) == 2 and all(isinstance(v, int) for v in value):
                return value[0] / value[1] if value[1] else None
            if len(value) == 1:
                value = value[0]
            else:
                return None
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def exif_focal_35mm(src: str | os.PathLike[str] | None) -> float | None:
    """FocalLengthIn35mmFilm (mm) from a file's EXIF, or None (absent, zero, unreadable, corrupt).

    Never raises: a missing tag, a broken EXIF block or a file Pillow cannot open all mean None.
    """
    if src is None:
        return None
    try:
        from PIL import Image

        with Image.open(src) as im:
            exif = im.getexif()
            candidates = []
            try:
                candidates.append(exif.get_ifd(_EXIF_IFD).get(_TAG_F35))
            except Exception:  # noqa: BLE001 - corrupt sub-IFD: try IFD0 below
                pass
            candidates.append(exif.get(_TAG_F35))
    except Exception as exc:  # noqa: BLE001 - EXIF is optional; never fail the image for it
        _logger.debug("%s: no usable EXIF (%s)", src, exc)
        return None
    for value in candidates:
        f = _as_float(value)
        if f is not None and f > 0:
            return f
    return None


def resolve_intrinsics(width: int, height: int, opts: CameraHints | None = None,
                       src: str | os.PathLike[str] | None = None,
                       predicted: list[list[float]] | None = None) -> Intrinsics:
    """Intrinsics for a W x H image: --focal-px > --fov-deg > EXIF 35 mm focal > the model's
    predicted camera (Depth Anything 3 any-view, at this size) > 60° hFOV.

    `opts` holds the CLI options (`focal_px`, `fov_deg`, `cx`, `cy`; None = not given);
    `src` is the source file, read only for its EXIF and only when neither option is given.
    """
    if opts is None:
        opts = Hints()
    if opts.focal_px is not None:
        fx = float(opts.focal_px)
        source, detail = "focal-px", f"focal_px={fmt_float(fx)}"
    elif opts.fov_deg is not None:
        fov = float(opts.fov_deg)
        fx = (width / 2.0) / math.tan(math.radians(fov) / 2.0)
        source, detail = "fov-deg", f"fov_deg={fmt_float(fov)}"
    else:
        f35 = exif_focal_35mm(src)
        if f35 is not None:
            fx = f35 / FILM_LONG_SIDE_MM * max(width, height)
            source, detail = "exif", f"focal_35mm={fmt_float(f35)}"
        elif predicted is not None:
            fx, fy = float(predicted[0][0]), float(predicted[1][1])
            return Intrinsics(fx=fx, fy=fy, cx=float(predicted[0][2]), cy=float(predicted[1][2]),
                              width=int(width), height=int(height), source="predicted",
                              detail="model=da3")
        else:
            fx = (width / 2.0) / math.tan(math.radians(DEFAULT_HFOV_DEG) / 2.0)
            source, detail = "default", f"fov_deg={fmt_float(DEFAULT_HFOV_DEG)}"
    if not (math.isfinite(fx) and fx > 0):
        raise ValueError(f"focal length {fx!r} px ({source}) is not a positive number")
    return Intrinsics(
        fx=fx, fy=fx,
        cx=float(opts.cx) if opts.cx is not None else width / 2.0,
        cy=float(opts.cy) if opts.cy is not None else height / 2.0,
        width=int(width), height=int(height), source=source, detail=detail,
    )

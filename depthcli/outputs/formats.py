"""The output formats' registry (`FORMATS`) and the options of a run's outputs.

A module of its own (re-exported by the package) so that the encoders and writers beside it
import the registry without importing the package that imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from . import render


@dataclass(frozen=True)
class Format:
    """One output format: how an image's output is named and what a video gets instead."""

    name: str
    kind: Literal["png", "raw", "cloud", "extra", "video"]  # video: clips only
    suffix: str  # file suffix for images (PNG kinds but `color` add `_<name>` before it)
    video: Literal["mp4", "npy", "frames", "mkv"] | None  # None: per-image only


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("color", "png", ".png", "mp4"),
    Format("gray", "png", ".png", "mp4"),
    Format("png16", "png", ".png", "frames"),
    Format("npy", "raw", ".npy", "npy"),
    Format("pfm", "raw", ".pfm", "frames"),
    Format("exr", "raw", ".exr", "frames"),
    Format("side", "png", ".png", "mp4"),
    Format("ffv1", "video", ".mkv", "mkv"),
    Format("ply", "cloud", ".ply", None),
    Format("conf", "extra", "_conf.npy", None),
    Format("sky", "extra", "_sky.png", None),
)}
VIDEO_FORMATS = tuple(n for n, f in FORMATS.items() if f.video)


@dataclass(frozen=True)
class PointCloudOptions:
    """The `ply` format's options (--ply-stride, --focal-px, --fov-deg, --cx, --cy,
    --assume-scale); None: not given (intrinsics from EXIF or a 60° hFOV; see pointcloud.py)."""

    ply_stride: int = 1
    focal_px: float | None = None
    fov_deg: float | None = None
    cx: float | None = None
    cy: float | None = None
    assume_scale: float | None = None


@dataclass(frozen=True)
class OutputOptions:
    """What to write for each input: the formats, how visual ones look, the point-cloud options."""

    formats: tuple[str, ...] = ("color",)
    render: render.RenderOptions = field(default_factory=render.RenderOptions)
    metric: bool = False
    point_cloud: PointCloudOptions = field(default_factory=PointCloudOptions)  # `ply` only
    near_is_large: bool | None = None  # None: not metric (DA1/DA2); False for depth (DA3)

    def __post_init__(self) -> None:
        if self.near_is_large is None:
            object.__setattr__(self, "near_is_large", not self.metric)


def parse_formats(values: Sequence[str]) -> tuple[str, ...]:
    """`--format a,b --format c` → ('a', 'b', 'c'), validated, order kept, no repeats."""
    out: list[str] = []
    for v in values:
        for part in v.split(","):
            f = part.strip().lower()
            if not f:
                continue
            if f not in FORMATS:
                raise ValueError(f"unknown format {f!r}; choose from {', '.join(FORMATS)}")
            if f not in out:
                out.append(f)
    return tuple(out) or ("color",)

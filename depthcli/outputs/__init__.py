"""Output formats: the registry, option parsing, file names, and writing one image's outputs.

Every format is declared once in `FORMATS` (formats.py: what it is, its file suffix, what a video
gets); the encoders live in `encode.py`, colour maps in `render.py`, point clouds in `pointcloud.py`,
video writers in `sinks.py`. Nothing registers itself at import time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..io.atomic import write_bytes
from ..io.png import encode_png
from .encode import encode_visual, exr_bytes, npy_bytes, pfm_bytes, read_pfm
from .formats import FORMATS, VIDEO_FORMATS, Format, OutputOptions, PointCloudOptions, parse_formats

__all__ = [
    "FORMATS", "VIDEO_FORMATS", "Format", "OutputOptions", "PointCloudOptions", "encode_visual",
    "image_paths", "needs_image", "parse_formats", "read_pfm", "video_paths",
    "write_image_outputs",
]




def image_paths(base: Path, formats: Iterable[str]) -> dict[str, Path]:
    """File per format for one image whose output stem path is `base` (OUT/rel/stem).

    A file's name depends on its format only, never on the other formats asked for, so adding
    a format to a rerun never renames (nor orphans) the outputs already there: `color` is
    `<stem>.png`, the other PNG kinds are `<stem>_<format>.png` (`_gray`, `_png16`, `_side`),
    the raw and cloud formats `<stem>.npy/.pfm/.exr/.ply`.
    """
    paths: dict[str, Path] = {}
    for f in formats:
        fmt = FORMATS[f]
        if fmt.kind == "video":  # a clip's format (ffv1): nothing for an image
            continue
        suffix = f"_{f}.png" if fmt.kind == "png" and f != "color" else fmt.suffix
        paths[f] = base.parent / (base.name + suffix)
    return paths


def video_paths(base: Path, formats: Iterable[str]) -> dict[str, Path]:
    """Output per format for one video: mp4 files, the npy stack, or frame folders.

    As for images, a name depends on its format only: `color` is `<stem>.mp4`, `gray`/`side`
    are `<stem>_<format>.mp4`; `npy` is `<stem>.npy`; `png16`/`exr`/`pfm` are folders
    `<stem>_<format>/` of numbered frames; `ffv1` is `<stem>.mkv`. Per-image formats (point clouds) are left out.
    """
    formats = [f for f in formats if FORMATS[f].video]
    paths: dict[str, Path] = {}
    for f in formats:
        kind = FORMATS[f].video
        if kind == "mp4":
            name = base.name + (".mp4" if f == "color" else f"_{f}.mp4")
        elif kind == "npy":
            name = base.name + ".npy"
        elif kind == "mkv":
            name = base.name + ".mkv"
        else:
            name = f"{base.name}_{f}"
        paths[f] = base.parent / name
    return paths


def output_suffixes(formats: Iterable[str]) -> tuple[str, ...]:
    """Every name ending an output of `formats` can have (images and videos)."""
    formats = list(formats)
    names = {p.name[1:] for p in image_paths(Path("x"), formats).values()}
    names |= {p.name[1:] for p in video_paths(Path("x"), formats).values()}
    return tuple(sorted(names))


def needs_image(formats: Sequence[str]) -> bool:
    """Whether writing `formats` needs the decoded input image (side by side, point colours)."""
    return any(f == "side" or FORMATS[f].kind == "cloud" for f in formats)


def write_image_outputs(depth: np.ndarray, image: np.ndarray | None, paths: dict[str, Path],
                        opts: OutputOptions, src: Path | None = None,
                        extras: dict[str, object] | None = None) -> None:
    """Write every requested format for one image (each file atomically).

    `extras` are a Depth Anything 3 result's (`conf`, `sky`, `intrinsics`, engine.Result).
    With `--output-size network` the image is resized to the depth's size for side and ply.
    """
    ex = extras or {}
    if image is not None and image.shape[:2] != depth.shape:
        import cv2

        image = cv2.resize(image, (depth.shape[1], depth.shape[0]), interpolation=cv2.INTER_AREA)
    for f, path in paths.items():
        kind = FORMATS[f].kind
        if f in ("conf", "sky"):
            value = ex.get(f)
            if value is None:
                raise ValueError(f"{f} format: this model gives no {f} output")
            arr = np.asarray(value)
            data = npy_bytes(arr) if f == "conf" else encode_png(arr.astype(np.uint8) * 255)
            write_bytes(path, data)
        elif kind == "png":
            write_bytes(path, encode_png(encode_visual(f, depth, image, opts)))
        elif f == "npy":
            write_bytes(path, npy_bytes(depth))
        elif f == "pfm":
            write_bytes(path, pfm_bytes(depth))
        elif f == "exr":
            write_bytes(path, exr_bytes(depth))
        else:
            from .pointcloud import write_ply_output

            if image is None:
                raise ValueError(f"{f} format needs the input image")
            write_ply_output(depth, image, path, opts, src,
                             ex.get("intrinsics"))  # type: ignore[arg-type]

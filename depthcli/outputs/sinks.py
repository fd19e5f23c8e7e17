"""Writers of a video's outputs, one thread each: H.264 depth videos, frame folders, npy stacks.

Each is a `threads.Sink` fed `FrameOut` items in frame order; the video runner fans every
finished depth frame out to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import video as vio
from ..io.png import encode_png
from ..threads import Sink
from .encode import encode_visual, exr_bytes, pfm_bytes
from .formats import FORMATS, OutputOptions
from .stacks import RawStack

FRAME_SUFFIX = {"png16": ".png", "exr": ".exr", "pfm": ".pfm"}


@dataclass
class FrameOut:
    """One finished frame on its way to the writers."""

    index: int
    pts: int
    duration: int
    depth: np.ndarray  # (H, W) float32 at the source (display) size
    image: np.ndarray | None  # BGR input frame, for `side`


def mp4_sink(fmt: str, tmp: Path, info: vio.VideoInfo, opts: OutputOptions,
             vrange: tuple[float, float] | None) -> Sink:
    """An H.264 video of a visual format (`color`, `gray`, `side`) with the source's audio."""
    w = info.width * 2 + 50 if fmt == "side" else info.width
    writer = vio.VideoWriter(tmp, w, info.height, info)

    def handle(it: FrameOut) -> None:
        writer.write(encode_visual(fmt, it.depth, it.image, opts, vrange), it.pts, it.duration)

    return Sink(fmt, handle, finish=writer.close, abort=writer.abort)


def frames_sink(fmt: str, folder: Path, opts: OutputOptions,
                vrange: tuple[float, float] | None) -> Sink:
    """A folder of numbered frames (`000000.png`, ...) for png16, exr or pfm."""
    ext = FRAME_SUFFIX[fmt]

    def handle(it: FrameOut) -> None:
        if fmt == "png16":
            data = encode_png(encode_visual(fmt, it.depth, None, opts, vrange))
        elif fmt == "exr":
            data = exr_bytes(it.depth)
        else:
            data = pfm_bytes(it.depth)
        (folder / f"{it.index:06d}{ext}").write_bytes(data)

    return Sink(fmt, handle)


def stack_sink(name: str, stack: RawStack, get: Callable[[Any], np.ndarray]) -> Sink:
    """Appends `get(item)` to a RawStack; the header is written when the sink finishes."""
    return Sink(name, lambda it: stack.append(get(it)), maxsize=8, finish=stack.close,
                abort=stack.abort)


def visual_sink(fmt: str, tmp: Path, info: vio.VideoInfo, opts: OutputOptions,
                vrange: tuple[float, float] | None) -> Sink:
    """The sink of a format that needs a value range: an mp4, or a png16 frame folder."""
    if FORMATS[fmt].video == "mp4":
        return mp4_sink(fmt, tmp, info, opts, vrange)
    return frames_sink(fmt, tmp, opts, vrange)

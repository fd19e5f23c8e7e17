"""How much disk a video's mode needs, checked before the first frame against the free space.

Modes of a video with a clip-wide value range (`--video-norm clip`, the default):
- **store** (default): pass 1 keeps every frame's depth in a temporary file (network size for
  per-frame models, frame size for temporal ones; float16, float32 with png16), pass 2 reads it
  back. One model pass; temporary disk = frames x pixels x 2 (or 4) bytes.
- **npy source**: with `-f npy` the `.npy` output is what pass 2 reads; nothing more.
- **recompute**: pass 1 keeps only the statistics, pass 2 runs the model again. Twice the
  compute, no temporary depth; chosen when the store does not fit.
The resume state (`runs.video_resume`) is small for per-frame models (16 bytes a frame);
a temporal model's carries its window: 11 network inputs and 10 frame-size depths, twice
while it is replaced.
Per-frame value ranges and fixed ranges have one pass. Every mode also needs room for its
outputs (the `.npy` stack, frame folders, depth videos), and one-pass depth videos keep the
frames of their open H.264 segment on disk (`io.mp4_segments`).

The sizes of compressed outputs (mp4, png16) are estimates; the raw ones are exact.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import outputs
from ..errors import DiskFullError

if TYPE_CHECKING:
    from ..engine.core import DepthEngine

_logger = logging.getLogger(__name__)

MP4_BYTES_PER_PIXEL = 0.25  # generous for crf-18 depth videos: segments + the joined file
PNG16_BYTES_PER_PIXEL = 2.0  # deflate of smooth 16-bit depth: at most about the raw size
MARGIN = 1.05
SLACK = 4 << 20  # headers, the journal, the file system's own rounding


@dataclass
class DiskPlan:
    needed: int  # bytes for the mode chosen
    free: int
    recompute: bool  # the second pass recomputes the depth (the store did not fit)
    store_bytes: int  # what the store would have taken


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def outputs_bytes(formats: list[str], frames: int, h: int, w: int, segment: int,
                  one_pass_mp4: list[str]) -> int:
    """The outputs' own size (and the pending frames of one-pass depth videos)."""
    total = 0.0
    px = h * w
    for f in formats:
        kind = outputs.FORMATS[f].video
        width = 2 * w + 50 if f == "side" else w
        if f == "npy":
            total += frames * px * 4
        elif kind == "mp4":
            total += frames * h * width * MP4_BYTES_PER_PIXEL
            if f in one_pass_mp4:
                total += segment * h * width * 3
        elif f == "png16":
            total += frames * px * PNG16_BYTES_PER_PIXEL
        elif kind == "frames":  # exr, pfm: float32 and a header
            total += frames * (px * 4 + 512)
        elif kind == "mkv":  # ffv1: its raw frames while the clip runs, then the video
            total += frames * px * (2 + PNG16_BYTES_PER_PIXEL)
    return int(total)


def plan(folder: Path, *, frames: int, formats: list[str], frame_size: tuple[int, int],
         store_pixels: int, store_itemsize: int, two_pass_store: bool, segment: int,
         one_pass_mp4: list[str], state_bytes: int) -> DiskPlan:
    """The disk the video needs in the mode it would use, and whether to recompute instead."""
    h, w = frame_size
    free = shutil.disk_usage(folder).free
    outs = outputs_bytes(formats, frames, h, w, segment, one_pass_mp4) + 2 * state_bytes
    store = frames * store_pixels * store_itemsize if two_pass_store else 0
    with_store = int((outs + store) * MARGIN) + SLACK
    if with_store <= free or not store:
        return DiskPlan(with_store, free, False, store)
    # without the store: the second pass's depth videos keep their open segment's frames
    pending = sum(segment * h * (2 * w + 50 if f == "side" else w) * 3
                  for f in formats if outputs.FORMATS[f].video == "mp4")
    return DiskPlan(int((outs + pending) * MARGIN) + SLACK, free, True, store)


def check(src: Path, out_dir: Path, folder: Path, est: DepthEngine, size: tuple[int, int],
          frames: int, formats: list[str], pass1: list[str], pass2: list[str], *,
          two_pass: bool, segment: int) -> bool:
    """Whether the second pass must recompute (one warning line says so); DiskFullError with
    the figures when even that does not fit. An unknown frame count is not checked."""
    if not frames:
        return False
    h, w = size
    nh, nw = est.network_size(size)
    if getattr(est.spec, "temporal", False):
        store_px, state_bytes = h * w, 11 * 3 * nh * nw * 4 + 10 * h * w * 4
    else:
        store_px, state_bytes = nh * nw, 0
    p = plan(folder, frames=frames, formats=formats, frame_size=size, store_pixels=store_px,
             store_itemsize=4 if "png16" in pass2 else 2,
             two_pass_store=two_pass and "npy" not in formats, segment=segment,
             one_pass_mp4=[f for f in pass1 if outputs.FORMATS[f].video == "mp4"],
             state_bytes=state_bytes + 16 * frames)
    if p.needed > p.free:  # a disk-full stop before the first frame, with the figures
        raise DiskFullError(f"{src}: needs about {gb(p.needed)} of disk in {out_dir} for "
                            f"{frames} frames, only {gb(p.free)} free: No space left on device; "
                            "stopping the run (free some space and rerun with --skip-existing "
                            "to finish)")
    if p.recompute:
        _logger.warning("%s: the clip-wide range would keep %s of depth in %s, which has %s "
                        "free: the second pass recomputes it instead (twice the compute)",
                        src, gb(p.store_bytes), out_dir, gb(p.free))
    return p.recompute

"""What a `predict` run was asked to do, independent of click (and of torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .. import outputs
from ..engine.device import default_workers
from ..io.images import DEFAULT_MAX_PIXELS


@dataclass
class PredictOptions:
    """Everything `depthcli predict` was asked to do, independent of click."""

    inputs: tuple[str, ...]
    out_dir: Path
    output: outputs.OutputOptions = field(default_factory=outputs.OutputOptions)
    batch_size: int = 1
    workers: int | None = None  # None: default_workers(device)
    skip_existing: bool = False
    no_clobber: bool = False  # refuse to replace files that are not our outputs of the input
    max_pixels: int = DEFAULT_MAX_PIXELS
    video_norm: str = "clip"  # clip | frame | LO,HI (see runs.video.parse_norm)
    sequence: bool = False  # --sequence: folders of numbered frames are clips (io.sequence)
    fps: Fraction | None = None  # --fps: an image sequence's rate (None: 24)
    sequence_npy: str = "stack"  # --sequence-npy: stack | frames
    sequence_video: bool = False  # --sequence-video: visual formats of a sequence as mp4
    scene_cuts: float | None = None  # --scene-cuts: the detector's threshold; None: off
    temporal: str = "window"  # window | stream: how a temporal model runs (runs.stream_depth)

    def host_workers(self, device_type: str) -> int:
        """`workers`, or the device's default when not given."""
        return self.workers or default_workers(device_type)


def parse_norm(value: object) -> str | tuple[float, float]:
    """'clip' | 'frame' | 'LO,HI' → 'clip' | 'frame' | (lo, hi); ValueError otherwise."""
    text = str(value if value is not None else "clip").strip().lower()
    if text in ("clip", "", "auto"):
        return "clip"
    if text == "frame":
        return "frame"
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"video norm {value!r}: use clip, frame or LO,HI") from None
    if not hi > lo:
        raise ValueError(f"video norm {value!r}: HI must be above LO")
    return lo, hi

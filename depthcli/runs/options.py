"""What a `predict` run was asked to do, independent of click (and of torch and Ray)."""

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


@dataclass(frozen=True)
class RayOptions:
    """Where and how big: the cluster address and the sizes of the actor pool and tasks."""

    address: str | None = None  # None: $RAY_ADDRESS, else a local instance for this run
    actors: int | None = None  # model actors; None: one per GPU, or per spare CPU group
    actor_cpus: float | None = None  # CPUs reserved per actor (= its torch threads on CPU)
    task_cpus: float = 0.5  # per read / write task: fractional so 2-CPU nodes make progress
    chunk: int = 10_000  # most rows handed to one Ray Data run (driver memory bound)
    first_chunk_s: float = 1.0  # the first run starts after at most this much discovery


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

"""What a `predict` run was asked to do, which models it uses, and what it reports back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from .. import outputs
from ..engine.device import default_workers
from ..errors import InputError
from ..io.images import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from ..engine.core import DepthEstimator


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


class Estimators:
    """The models of one run, each loaded on first use.

    Images and videos may use different models (by default a per-frame model for images and a
    temporal one for videos); a run with only images never loads the video model.
    """

    def __init__(self, load: Callable[[str], DepthEstimator], image_model: str,
                 video_model: str | None = None) -> None:
        self._load = load
        self.names = {"images": image_model, "videos": video_model or image_model}
        self._cache: dict[str, DepthEstimator] = {}
        self._lock = threading.Lock()
        self._used: set[str] = set()
        self.load_seconds = 0.0

    @classmethod
    def of(cls, est: DepthEstimator) -> Estimators:
        """One already loaded estimator for everything."""
        out = cls(lambda _name: est, est.spec.name)
        out._cache[est.spec.name] = est
        return out

    def _get(self, name: str) -> DepthEstimator:
        with self._lock:
            if name not in self._cache:
                t = time.perf_counter()
                self._cache[name] = self._load(name)
                self.load_seconds += time.perf_counter() - t
            return self._cache[name]

    def for_images(self) -> DepthEstimator:
        """The image model; InputError (one line per image) if it is a video-only model."""
        from ..models import get_spec

        name = self.names["images"]
        if getattr(get_spec(name), "temporal", False):
            raise InputError(f"model {name} needs a video (it is a temporal video model); "
                             "use an image model such as da2-small for images")
        est = self._get(name)
        self._used.add("images")
        return est

    def for_videos(self) -> DepthEstimator:
        est = self._get(self.names["videos"])
        self._used.add("videos")
        return est

    def estimator(self, name: str) -> DepthEstimator | None:
        """A loaded estimator, without loading it."""
        return self._cache.get(name)

    def used(self) -> dict[str, str]:
        """Which model ran on what (kinds of input that were processed)."""
        return {k: v for k, v in self.names.items() if k in self._used}


@dataclass
class Summary:
    written: int = 0
    skipped: int = 0
    failed: int = 0
    not_images: int = 0  # files inside folders that are neither images nor videos
    frames: int = 0
    videos: int = 0  # of `written`, how many were videos (the rest are images)
    seconds: float = 0.0  # wall time of the whole command, model loading included
    load_seconds: float = 0.0  # of which loading models
    interrupted: bool = False
    models: dict[str, str] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # with --list-outputs / -v
    # Depth Anything 3, per image: predicted camera / metric focal / sky fill (--json "images")
    cameras: list[dict[str, object]] = field(default_factory=list)
    # per clip with something to say (an image sequence's numbering, the scene cuts found)
    clips: list[dict[str, object]] = field(default_factory=list)
    split_videos: int = 0  # --engine ray: videos split into frame ranges over the actors
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail(self, path: str, reason: str) -> None:
        with self._lock:
            self.failed += 1
            self.failures.append((path, reason))

    def add_written(self, paths: list[Path] | None = None, n: int = 1,
                    video: bool = False) -> None:
        with self._lock:
            self.written += n
            self.videos += n if video else 0
            if paths:
                self.outputs.extend(str(p) for p in paths)

    def add_camera(self, path: str, extras: dict[str, object] | None) -> None:
        """Keep a DA3 image's camera facts: intrinsics at the output's size (any-view), the
        focal length used for metres (metric), the sky fill value (mono/metric)."""
        if not extras:
            return
        row: dict[str, object] = {"path": path}
        for k in ("intrinsics", "focal_px", "focal_source", "sky_fill"):
            if extras.get(k) is not None:
                row[k] = extras[k]
        with self._lock:
            self.cameras.append(row)

    def add_clip(self, row: dict[str, object]) -> None:
        with self._lock:
            self.clips.append(row)

    def add_skipped(self, n: int = 1) -> None:
        with self._lock:
            self.skipped += n

    def add_frames(self, n: int) -> None:
        with self._lock:
            self.frames += n

    @property
    def images(self) -> int:
        """Images written (videos are counted by their frames)."""
        return self.written - self.videos

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def frame_rate(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        parts = [f"written {self.written}", f"skipped {self.skipped}", f"failed {self.failed}",
                 f"not images {self.not_images}"]
        if self.frames:
            parts.append(f"video frames {self.frames}")
        rates = [f"{self.rate:.2f} img/s"] if self.images else []
        if self.frames:
            rates.append(f"{self.frame_rate:.2f} frames/s")
        models = ", ".join(f"{m} for {k}" for k, m in self.models.items())
        return (", ".join(parts) + f"; {self.seconds:.1f} s ({self.load_seconds:.1f} s loading "
                "the model)" + "".join(f", {r}" for r in rates)
                + (f"; {models}" if models else "")
                + (" (interrupted)" if self.interrupted else ""))

    def as_dict(self, settings: dict[str, object] | None = None,
                with_outputs: bool = False) -> dict[str, object]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        if not with_outputs:
            d.pop("outputs")
        cameras = d.pop("cameras")
        if cameras:
            d["images"] = cameras
        if not d["clips"]:
            d.pop("clips")
        if not d["split_videos"]:
            d.pop("split_videos")
        d["img_per_s"] = round(self.rate, 4)  # images written per second (videos: frames_per_s)
        d["frames_per_s"] = round(self.frame_rate, 4)
        d["seconds"] = round(self.seconds, 3)
        d["load_seconds"] = round(self.load_seconds, 3)
        d["failures"] = [{"path": p, "reason": r} for p, r in self.failures]
        if settings:
            d["settings"] = settings
        return d

"""What a run reports back: counts, failures, timings, the models used; one line or a JSON dict."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from pathlib import Path


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

    def add_split(self) -> None:
        with self._lock:
            self.split_videos += 1

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

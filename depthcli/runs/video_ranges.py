"""A long video of a per-frame model split into frame ranges that run apart (the Ray engine's
actors), then joined into the very files one local run writes.

Why it can be exact: a per-frame model's depth of a frame does not depend on the other frames,
H.264 is encoded in fixed segments each by a fresh encoder (`io.mp4_segments`), and the clip
statistics are a function of the frames alone (`outputs.clipstats.ClipStats.merge`). So:

- `plan`: ranges start on a multiple of the segment length and of the batch size (the same
  batches and segments as a local run), one range per actor, each at least
  MIN_RANGE_SEGMENTS segments; a video whose frame count is only estimated, or too short for
  two ranges, is not split. The last range runs to the end of the stream, whatever the
  container declared.
- a range (`predict_video(..., span=)`) is the first pass of its frames in a partial-state
  folder of its own (resumable like a whole video's: a killed actor's retry continues it):
  npy rows, frame files, closed H.264 segments, the clip-range store, its statistics. It
  decodes the source from frame 0 (no seek: frame numbers stay exact), so the last range's
  decode report is the whole clip's.
- the join (`predict_video(..., join=)`): the statistics merged, the stacks concatenated, the
  frame files moved, the segments renumbered, the timestamps joined: the video's own
  partial-state folder then holds what a local first pass leaves, and the local code goes on
  (second pass on one actor, publish).
- `Claims`: the last range to finish does the join, decided under a lock in -o; a marker
  (named by the run's token) keeps the video's report, so a range retried after the join
  answers with it instead of computing again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MIN_RANGE_SEGMENTS = 2


@dataclass(frozen=True)
class Span:
    """Range `index` of `count`: frames [start, end) of the clip (end None: to the end)."""

    index: int
    count: int
    start: int
    end: int | None

    def folder(self, video_folder: Path) -> Path:
        """The range's partial-state folder, beside the video's."""
        return video_folder.with_name(f"{video_folder.name}.range{self.index}of{self.count}")

    def fingerprint(self, video_fp: str) -> str:
        key = f"{video_fp}:{self.index}/{self.count}:{self.start}-{self.end}"
        return hashlib.sha256(key.encode()).hexdigest()

    def frames(self, total: int) -> int:
        """Frames planned for this range of a `total`-frame clip."""
        return (self.end if self.end is not None else total) - self.start

    def as_row(self) -> dict[str, int]:
        return {"rk": self.index, "rn": self.count, "r0": self.start,
                "r1": -1 if self.end is None else self.end}

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> Span:
        end = int(row["r1"])
        return cls(int(row["rk"]), int(row["rn"]), int(row["r0"]), None if end < 0 else end)


def plan(frames: int, estimated: bool, actors: int, segment: int, batch: int) -> list[Span]:
    """The ranges of a `frames`-frame clip over `actors` (empty: do not split)."""
    if actors < 2 or estimated or frames <= 0:
        return []
    unit = math.lcm(max(1, segment), max(1, batch))
    min_len = unit * math.ceil(MIN_RANGE_SEGMENTS * max(1, segment) / unit)
    n = min(actors, frames // min_len)
    if n < 2:
        return []
    units = math.ceil(frames / unit)
    cuts = [0, *(round(k * units / n) * unit for k in range(1, n)), None]
    return [Span(k, n, int(cuts[k] or 0), cuts[k + 1]) for k in range(n)]


def splittable(temporal: bool, formats: list[str], *, metric: bool, scene_cuts: object,
               sequence: bool) -> bool:
    """Whether a video of these settings may be split at all: a per-frame model, a video file,
    no scene-cut detector (its state runs through the clip), no FFV1 in the first pass
    (metric: its packets are not joined)."""
    return not (temporal or sequence or scene_cuts is not None
                or (metric and "ffv1" in formats))


def load_state(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """A partial-state folder's saved state (read only), or None."""
    try:
        with np.load(folder / "state.npz", allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            return meta, {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError):
        return None


class Claims:
    """Who joins a split video: decided under a lock beside its partial-state folder."""

    def __init__(self, video_folder: Path, token: str) -> None:
        self.marker = video_folder.with_name(f"{video_folder.name}.join-{token}.json")
        self.lock = video_folder.with_name(f"{video_folder.name}.join-{token}.lock")

    def report(self) -> dict[str, Any] | None:
        """The video's report when it was joined in this run already."""
        got = self._read()
        return got.get("report") if got else None

    def _read(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.marker.read_text())
            return data
        except (OSError, ValueError):
            return None

    def claim(self, index: int, ready: bool) -> bool:
        """True when range `index` is to join: it claimed it before (a retry), or every range
        is `ready` and nobody has claimed it."""
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            with contextlib.suppress(ImportError):
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            got = self._read()
            if got is not None:
                return bool(got.get("claim") == index and "report" not in got)
            if not ready:
                return False
            self._write({"claim": index})
            return True
        finally:
            os.close(fd)

    def done(self, report: dict[str, Any]) -> None:
        self._write({"report": report})

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.marker.with_name(self.marker.name + ".new")
        with open(tmp, "w") as f:
            f.write(json.dumps(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.marker)


def cleanup(out_dir: Path, token: str) -> None:
    """The run's join markers and locks (the driver, at the end of its run)."""
    from ..io.atomic import PARTIAL_DIR

    folder = out_dir / PARTIAL_DIR
    if not folder.is_dir():
        return
    for p in folder.glob(f"*.join-{token}.*"):
        with contextlib.suppress(OSError):
            p.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()

"""Shot boundaries (`--scene-cuts`): a hard cut between two frames, from the frames alone.

The measure is the content score that PySceneDetect's ContentDetector popularised: the mean
absolute difference of hue, saturation and value (0..255 each) between consecutive frames,
here on frames shrunk to 64 pixels wide (cheap, and insensitive to noise and compression).
A frame whose score is at least `threshold` (default 27, that detector's default) starts a new
shot, unless the current shot is shorter than `MIN_SHOT` frames (a flash or a dissolve's first
frames are not two cuts). Fades and dissolves are not detected as cuts.

No torch, no files: frames in (BGR uint8), cut frame indices out; `state`/`restore` carry the
detector over a resumed run.
"""

from __future__ import annotations

import cv2
import numpy as np

DEFAULT_THRESHOLD = 27.0
MIN_SHOT = 6  # frames
WIDTH = 64


def signature(bgr: np.ndarray) -> np.ndarray:
    """The frame shrunk to WIDTH pixels wide, as HSV float32 (hue scaled to 0..255)."""
    h, w = bgr.shape[:2]
    small = cv2.resize(bgr, (WIDTH, max(1, round(h * WIDTH / w))), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV_FULL)
    return hsv.astype(np.float32)


class SceneCuts:
    """Feed frames in order (`is_cut`); `cuts` lists the indices of the frames starting a shot."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold
        self.prev: np.ndarray | None = None
        self.shot_start = 0
        self.cuts: list[int] = []
        self.scores: list[float] = []  # the scores of the cuts found (for the report)

    def is_cut(self, index: int, bgr: np.ndarray) -> bool:
        sig = signature(bgr)
        prev, self.prev = self.prev, sig
        if prev is None or prev.shape != sig.shape:
            return False
        score = float(np.mean(np.abs(sig - prev)))
        if score < self.threshold or index - self.shot_start < MIN_SHOT:
            return False
        self.shot_start = index
        self.cuts.append(index)
        self.scores.append(score)
        return True

    def state(self) -> dict[str, np.ndarray]:
        prev = self.prev if self.prev is not None else np.zeros((0, 0, 3), np.float32)
        return {"prev": prev, "cuts": np.array(self.cuts, np.int64),
                "scores": np.array(self.scores, np.float64),
                "start": np.array([self.shot_start], np.int64)}

    def restore(self, st: dict[str, np.ndarray]) -> None:
        self.prev = st["prev"] if st["prev"].size else None
        self.cuts[:] = [int(v) for v in st["cuts"]]  # in place: ShotStats holds the list
        self.scores[:] = [float(v) for v in st["scores"]]
        self.shot_start = int(st["start"][0])


def shot_of(cuts: list[int], index: int) -> int:
    """Which shot (0, 1, ...) frame `index` is in."""
    import bisect

    return bisect.bisect_right(cuts, index)

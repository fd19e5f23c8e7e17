"""The value range of a whole clip, gathered frame by frame in bounded memory.

One range for the clip is what keeps a depth video from flickering: brightness means the same
depth in every frame.
"""

from __future__ import annotations

import bisect

import numpy as np
import torch

from .render import RenderOptions

PERCENTILE_SAMPLE = 1 << 18  # values kept for clip percentiles


class ClipStats:
    """Running value range of a clip: exact min/max, or percentiles of a bounded subsample."""

    def __init__(self, ropts: RenderOptions) -> None:
        self.percentile = ropts.mode == "percentile"
        self.percentiles = ropts.percentiles
        self.lo = float("inf")
        self.hi = float("-inf")
        self.per_frame = 4096
        self.samples: list[np.ndarray] = []
        self.size = 0
        self.stride = 1  # sample every stride-th frame once per_frame is down to one value
        self.seen = 0

    def update(self, depth: torch.Tensor, index: int | None = None) -> None:
        """One frame's depth (`index`: unused, one range for the whole clip)."""
        flat = depth.reshape(-1)
        fin = flat[torch.isfinite(flat)]
        if fin.numel() == 0:
            return
        if not self.percentile:
            lo, hi = torch.aminmax(fin)
            self.lo = min(self.lo, float(lo))
            self.hi = max(self.hi, float(hi))
            return
        self.seen += 1
        if (self.seen - 1) % self.stride:
            return
        step = max(1, fin.numel() // self.per_frame)
        s = fin[::step][: self.per_frame].float().cpu().numpy()
        self.samples.append(s)
        self.size += s.size
        if self.size > PERCENTILE_SAMPLE:  # thin every frame alike: all frames weigh the same
            if self.per_frame > 1:
                self.samples = [a[::2].copy() for a in self.samples]
                self.per_frame //= 2
            else:  # one value a frame: halve the frames instead (bounded, O(1) amortised)
                self.samples = self.samples[::2]
                self.stride *= 2
            self.size = sum(a.size for a in self.samples)

    def state(self) -> dict[str, np.ndarray]:
        """The running statistics as arrays (a resumed first pass continues them exactly)."""
        lens = np.array([a.size for a in self.samples], np.int64)
        flat = np.concatenate(self.samples) if self.samples else np.zeros(0, np.float32)
        return {"bounds": np.array([self.lo, self.hi], np.float64),
                "counts": np.array([self.per_frame, self.size, self.stride, self.seen], np.int64),
                "lens": lens, "samples": flat}

    def restore(self, st: dict[str, np.ndarray]) -> None:
        self.lo, self.hi = (float(v) for v in st["bounds"])
        self.per_frame, self.size, self.stride, self.seen = (int(v) for v in st["counts"])
        cuts: list[int] | np.ndarray = np.cumsum(st["lens"])[:-1] if len(st["lens"]) else []
        self.samples = [a.copy() for a in np.split(st["samples"], cuts)] if len(st["lens"]) \
            else []

    def value_range(self) -> tuple[float, float]:
        if self.percentile:
            if not self.samples:
                return 0.0, 1.0
            lo, hi = np.percentile(np.concatenate(self.samples), self.percentiles)
            return float(lo), float(hi)
        if self.lo > self.hi:
            return 0.0, 1.0
        return self.lo, self.hi


class ShotStats:
    """One `ClipStats` per shot (`--scene-cuts`): each shot's colour range is its own, since
    the relative depth of two shots has no common scale. `cuts` is the detector's list of the
    frames starting a shot (filled before those frames' depth comes out)."""

    def __init__(self, ropts: RenderOptions, cuts: list[int]) -> None:
        self.ropts, self.cuts = ropts, cuts
        self.shots: list[ClipStats] = []

    def update(self, depth: torch.Tensor, index: int) -> None:
        shot = bisect.bisect_right(self.cuts, index)
        while len(self.shots) <= shot:
            self.shots.append(ClipStats(self.ropts))
        self.shots[shot].update(depth)

    def state(self) -> dict[str, np.ndarray]:
        out = {"n": np.array([len(self.shots)], np.int64)}
        for k, s in enumerate(self.shots):
            out.update({f"s{k}_{name}": v for name, v in s.state().items()})
        return out

    def restore(self, st: dict[str, np.ndarray]) -> None:
        self.shots = []
        for k in range(int(st["n"][0])):
            s = ClipStats(self.ropts)
            pre = f"s{k}_"
            s.restore({name[len(pre):]: v for name, v in st.items() if name.startswith(pre)})
            self.shots.append(s)

    def ranges(self) -> list[tuple[float, float]]:
        return [s.value_range() for s in self.shots] or [(0.0, 1.0)]

    def value_range(self) -> tuple[float, float]:
        """The widest of the shots' ranges (for the log line)."""
        r = self.ranges()
        return min(a for a, _ in r), max(b for _, b in r)

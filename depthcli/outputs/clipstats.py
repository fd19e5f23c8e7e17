"""The value range of a whole clip, gathered frame by frame in bounded memory.

One range for the clip is what keeps a depth video from flickering: brightness means the same
depth in every frame.
"""

from __future__ import annotations

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

    def update(self, depth: torch.Tensor) -> None:
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

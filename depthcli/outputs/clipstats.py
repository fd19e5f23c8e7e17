"""The value range of a whole clip, gathered frame by frame in bounded memory.

One range for the clip is what keeps a depth video from flickering: brightness means the same
depth in every frame.
"""

from __future__ import annotations

import bisect

import numpy as np

from .render import RenderOptions

PERCENTILE_SAMPLE = 1 << 18  # values kept for clip percentiles
PER_FRAME = 4096  # values a frame gives at the finest level (2**12)
_FINEST = 12  # levels 0..12 halve the values of every frame; above, every other frame goes


class ClipStats:
    """Running value range of a clip: exact min/max, or percentiles of a bounded subsample.

    The subsample is a function of the frames alone, not of the order they came in: frame `i`
    gives `s = finite[::max(1, n // 4096)][:4096]`, thinned to the current level `L`
    (`s[::2**L]` up to L = 12, then only frames with `i % 2**(L-12) == 0`, one value each), and
    the level is the lowest at which all frames together keep at most PERCENTILE_SAMPLE values.
    So statistics gathered over frame ranges apart and merged (`merge`, the Ray engine's split
    videos) hold exactly the values one pass over the clip holds.
    """

    def __init__(self, ropts: RenderOptions) -> None:
        self.percentile = ropts.mode == "percentile"
        self.percentiles = ropts.percentiles
        self.lo = float("inf")
        self.hi = float("-inf")
        self.level = 0
        self.samples: list[np.ndarray] = []
        self.index: list[int] = []  # the frame of each sample
        self.size = 0
        self.seen = 0  # frames given (the frame index when the caller gives none)

    @property
    def per_frame(self) -> int:
        return PER_FRAME >> min(self.level, _FINEST)

    @property
    def stride(self) -> int:
        return 1 << max(0, self.level - _FINEST)

    def update(self, depth: np.ndarray, index: int | None = None) -> None:
        """One frame's depth (a host array, or anything numpy reads); `index`: its frame
        number in the clip (default: the count)."""
        i = self.seen if index is None else int(index)
        self.seen += 1
        flat = np.asarray(depth).reshape(-1)
        fin = flat[np.isfinite(flat)]
        if fin.size == 0:
            return
        if not self.percentile:
            self.lo = min(self.lo, float(fin.min()))
            self.hi = max(self.hi, float(fin.max()))
            return
        if i % self.stride:
            return
        step = max(1, fin.size // PER_FRAME)
        s = np.array(fin[::step][:PER_FRAME][:: 1 << min(self.level, _FINEST)], np.float32)
        self.samples.append(s)
        self.index.append(i)
        self.size += s.size
        self._fit()

    def _fit(self) -> None:
        """Thin to the lowest level that keeps the sample bounded (O(1) amortised a frame)."""
        while self.size > PERCENTILE_SAMPLE:
            self._step()

    def _step(self) -> None:
        """One level coarser."""
        self.level += 1
        if self.level <= _FINEST:  # every frame alike: all frames weigh the same
            self.samples = [a[::2].copy() for a in self.samples]
        else:  # one value a frame: every other frame (by frame number) goes
            keep = [k for k, i in enumerate(self.index) if i % self.stride == 0]
            self.samples = [self.samples[k] for k in keep]
            self.index = [self.index[k] for k in keep]
        self.size = sum(a.size for a in self.samples)

    def _thin_to(self, level: int) -> None:
        while self.level < level:
            self._step()

    @classmethod
    def merge(cls, ropts: RenderOptions, parts: list[ClipStats]) -> ClipStats:
        """The statistics of consecutive frame ranges as one (what one pass would hold)."""
        out = cls(ropts)
        for p in parts:
            out.lo, out.hi = min(out.lo, p.lo), max(out.hi, p.hi)
            out.seen += p.seen
        if out.percentile:
            out.level = max((p.level for p in parts), default=0)
            for p in parts:
                q = cls(ropts)
                q.restore(p.state())
                q._thin_to(out.level)
                out.samples += q.samples
                out.index += q.index
            out.size = sum(a.size for a in out.samples)
            out._fit()
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The running statistics as arrays (a resumed first pass continues them exactly)."""
        lens = np.array([a.size for a in self.samples], np.int64)
        flat = np.concatenate(self.samples) if self.samples else np.zeros(0, np.float32)
        return {"bounds": np.array([self.lo, self.hi], np.float64),
                "counts": np.array([self.level, self.size, self.seen], np.int64),
                "lens": lens, "samples": flat, "index": np.array(self.index, np.int64)}

    def restore(self, st: dict[str, np.ndarray]) -> None:
        self.lo, self.hi = (float(v) for v in st["bounds"])
        self.level, self.size, self.seen = (int(v) for v in st["counts"])
        cuts: list[int] | np.ndarray = np.cumsum(st["lens"])[:-1] if len(st["lens"]) else []
        self.samples = [a.copy() for a in np.split(st["samples"], cuts)] if len(st["lens"]) \
            else []
        self.index = [int(v) for v in st["index"]]

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

    def update(self, depth: np.ndarray, index: int) -> None:
        shot = bisect.bisect_right(self.cuts, index)
        while len(self.shots) <= shot:
            self.shots.append(ClipStats(self.ropts))
        self.shots[shot].update(depth, index)

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

"""Progress of one video pass in frames: done / total, frames/s and the time left.

A long video is one input among many for the run's bar, so each pass gets its own bar in frames
(through a `FrameBars` factory the command line provides; none with `-q` or without a terminal)
and, with `-v`, a log line every `LOG_EVERY_S` seconds. The total is the frame count the
container declares, else its duration x frame rate, which is an estimate and says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from ..io.video_decode import VideoInfo

_logger = logging.getLogger(__name__)

LOG_EVERY_S = 10.0


class FrameBar(Protocol):
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


# (description, total frames, whether the total is an estimate, frames already done) → a bar
FrameBars = Callable[[str, int, bool, int], FrameBar]


def frame_total(info: VideoInfo) -> tuple[int, bool]:
    """(total frames, estimated): the declared count, else duration x rate (0: unknown)."""
    if info.frames > 0:
        return info.frames, False
    if info.end_time is not None and info.end_time > 0:
        return max(1, round(info.end_time * float(info.rate))), True
    return 0, True


def eta_text(seconds: float) -> str:
    """H:MM:SS (or M:SS) for a log line."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class VideoProgress:
    """One pass over a video's frames: feeds its bar and writes `-v` lines with fps and ETA.

    `start` frames were done before (a resumed run): the bar starts there, frames/s counts
    only this run's frames.
    """

    def __init__(self, name: str, label: str, info_total: tuple[int, bool],
                 bars: FrameBars | None, start: int = 0) -> None:
        self.name, self.label = name, label
        self.total, self.estimated = info_total
        self.start = self.n = start
        self.t0 = self.last = time.perf_counter()
        self.bar = bars(f"{name} {label}", self.total, self.estimated, start) if bars else None

    def step(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        now = time.perf_counter()
        if now - self.last >= LOG_EVERY_S:
            self.last = now
            _logger.info("%s: %s %s", self.name, self.label, self.describe(now))

    def rate(self, now: float | None = None) -> float:
        dt = (now if now is not None else time.perf_counter()) - self.t0
        return (self.n - self.start) / dt if dt > 0 else 0.0

    def describe(self, now: float | None = None) -> str:
        """'120/~400 frames, 2.1 fps, ETA 2:13' (no total or ETA when the total is unknown)."""
        fps = self.rate(now)
        total = max(self.total, self.n) if self.total else 0
        of = f"/{'~' if self.estimated else ''}{total}" if total else ""
        eta = f", ETA {eta_text((total - self.n) / fps)}" if total and fps > 0 else ""
        return f"{self.n}{of} frames, {fps:.2f} fps{eta}"

    def close(self) -> None:
        """Remove the bar (also after a failure); idempotent."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def done(self) -> None:
        self.close()
        dt = time.perf_counter() - self.t0
        _logger.info("%s: %s %d frames in %.1f s (%.2f fps)", self.name, self.label,
                     self.n - self.start, dt, self.rate())

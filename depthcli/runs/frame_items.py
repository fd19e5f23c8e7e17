"""What every frame-depth strategy shares (`runs.frame_depth`, `runs.stream_depth`):
the item it yields, its interface, and in-order preprocessing in worker threads. Apart so the
strategies import it, not each other."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from ..engine.threads import prefetch
from ..io.video_decode import Frame

# (frame, its (H, W) float32 depth at the frame size, what a second pass keeps of it)
Item = tuple[Frame, np.ndarray, np.ndarray]


class FrameDepth(Protocol):
    lowres: bool  # whether `compact` is smaller than the frame (pass 2 must expand it)

    def depths(self, frames: Iterable[Frame]) -> Iterator[Item]: ...

    def expand(self, compact: np.ndarray) -> np.ndarray: ...

    def state(self, done: int) -> dict[str, np.ndarray] | None: ...

    def restore(self, state: dict[str, np.ndarray]) -> None: ...


def preprocessed(fn: Callable[[np.ndarray], np.ndarray], frames: Iterable[Frame], workers: int,
                 ahead: int) -> Iterator[tuple[Frame, np.ndarray]]:
    """(frame, fn(frame.bgr)) in frame order, computed `ahead` at a time in worker threads."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="depthcli-prep")
    try:
        for fr, fut in prefetch(lambda f: fn(f.bgr), frames, pool, ahead, ordered=True):
            yield fr, fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

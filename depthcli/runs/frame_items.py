"""What every frame-depth strategy shares (`runs.frame_depth`, `runs.stream_depth`):
the item it yields, its interface, and in-order preprocessing in worker threads. Apart so the
strategies import it, not each other."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch

from ..engine.threads import prefetch
from ..io.video_decode import Frame

Item = tuple[Frame, "np.ndarray | None", torch.Tensor]


class FrameDepth(Protocol):
    lowres: bool  # whether `compact` is smaller than the frame (pass 2 must expand it)

    def depths(self, frames: Iterable[Frame]) -> Iterator[Item]: ...

    def expand(self, compact: torch.Tensor) -> np.ndarray: ...

    def frame_tensor(self, compact: torch.Tensor) -> torch.Tensor: ...

    def state(self, done: int) -> dict[str, np.ndarray] | None: ...

    def restore(self, state: dict[str, np.ndarray]) -> None: ...


def preprocessed(fn, frames: Iterable[Frame], workers: int,
                  ahead: int) -> Iterator[tuple[Frame, np.ndarray]]:
    """(frame, fn(frame.bgr)) in frame order, computed `ahead` at a time in worker threads."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="depthcli-prep")
    try:
        for fr, fut in prefetch(lambda f: fn(f.bgr), frames, pool, ahead, ordered=True):
            yield fr, fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

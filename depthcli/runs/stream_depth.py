"""`--temporal stream`: Video Depth Anything one frame at a time (`engine.stream`).

The same `FrameDepth` interface as `runs.frame_depth`'s strategies, so files go through the
video runner unchanged: each frame's depth is final as soon as the frame is in (no window lag,
no alignment), and memory is the model's bounded cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from ..engine.core import DepthEngine
from ..engine.stream import Stepper
from ..errors import reason
from ..io.video_decode import Frame
from .frame_items import Item, preprocessed


class Streamed:
    """Files with `--temporal stream`: a frame's depth comes out with the frame."""

    lowres = True  # `compact` is the network-size depth; `expand` upsamples it

    def __init__(self, est: DepthEngine, size: tuple[int, int], *, workers: int) -> None:
        self.step = Stepper(est, size)
        self.est, self.size, self.workers = est, size, workers

    def depths(self, frames: Iterable[Frame]) -> Iterator[Item]:
        for fr, x in preprocessed(self.step.preprocess, frames, self.workers,
                                  ahead=2 * self.workers):
            try:
                full, net = self.step.step(x)
            except Exception as exc:
                raise RuntimeError(f"inference failed at frame {fr.index}: {reason(exc)}") from exc
            yield fr, full, net

    def expand(self, compact: np.ndarray) -> np.ndarray:
        return self.est.postprocess(compact, self.size)

    def state(self, done: int) -> dict[str, np.ndarray] | None:
        # The cache (up to 41 frames of hidden states) is not saved: a resumed run starts over.
        return {} if done == 0 else None

    def restore(self, state: dict[str, np.ndarray]) -> None:
        pass

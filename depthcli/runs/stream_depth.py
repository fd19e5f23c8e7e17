"""`--temporal stream`: Video Depth Anything one frame at a time (`models.streaming`).

The same `FrameDepth` interface as `runs.frame_depth`'s strategies, so files go through the
video runner unchanged: each frame's depth is final as soon as the frame is in (no window lag,
no alignment), and memory is the model's bounded cache. `Stepper` is the part a live source
uses directly: one BGR frame → its depth at the frame size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from ..engine.core import DepthEngine
from ..engine.windows import video_preprocess
from ..errors import InputError, reason
from ..io.video_decode import Frame
from ..models.streaming import StreamingVDA
from .frame_items import Item, preprocessed


class Stepper:
    """An estimator's VDA model as a streaming model: BGR frames of one size in, depth out."""

    def __init__(self, est: DepthEngine, size: tuple[int, int]) -> None:
        model = est.model
        if model is None or not getattr(model, "temporal", False):
            raise InputError(f"--temporal stream needs a Video Depth Anything model on the torch "
                             f"backend (got {est.spec.name} on {est.backend.name})")
        self.est, self.size = est, (int(size[0]), int(size[1]))
        self.stream = StreamingVDA(model)
        self.preprocess = video_preprocess(est.preprocess.input_size, size, est.spec.mean,
                                           est.spec.std)

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.est.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.est.device.type, dtype=self.est.dtype)

    def network(self, x: np.ndarray) -> torch.Tensor:
        """One preprocessed frame → its (H', W') float32 depth at the network size."""
        t = torch.from_numpy(x).to(self.est.device)
        with self._autocast():
            return self.stream.step(t).float()

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        """One BGR frame → (H, W) float32 depth at the frame size."""
        return self.est.postprocess(self.network(self.preprocess(bgr)), self.size)


class Streamed:
    """Files with `--temporal stream`: a frame's depth comes out with the frame."""

    lowres = True  # `compact` is the network-size depth; `expand` upsamples it

    def __init__(self, est: DepthEngine, size: tuple[int, int], *, workers: int,
                 need_full: bool) -> None:
        self.step = Stepper(est, size)
        self.est, self.size, self.workers, self.need_full = est, size, workers, need_full

    def depths(self, frames: Iterable[Frame]) -> Iterator[Item]:
        for fr, x in preprocessed(self.step.preprocess, frames, self.workers,
                                   ahead=2 * self.workers):
            try:
                d = self.step.network(x)
            except Exception as exc:
                raise RuntimeError(f"inference failed at frame {fr.index}: {reason(exc)}") from exc
            yield fr, (self.expand(d) if self.need_full else None), d

    def frame_tensor(self, compact: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.expand(compact))

    def expand(self, compact: torch.Tensor) -> np.ndarray:
        return self.est.postprocess(compact, self.size)

    def state(self, done: int) -> dict[str, np.ndarray] | None:
        # The cache (up to 41 frames of hidden states) is not saved: a resumed run starts over.
        return {} if done == 0 else None

    def restore(self, state: dict[str, np.ndarray]) -> None:
        pass

"""Video Depth Anything one frame at a time (`--temporal stream`, live sources).

`Stepper` owns the streaming model's state (`models.streaming`: its bounded cache of hidden
states) and the autocast around each step; callers hand it host arrays and get host arrays
back, so the runs above it never see a tensor.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError
from ..models.streaming import StreamingVDA

if TYPE_CHECKING:
    from .core import DepthEngine


class Stepper:
    """An engine's VDA model as a streaming model: BGR frames of one size in, depth out."""

    def __init__(self, est: DepthEngine, size: tuple[int, int]) -> None:
        model = est.model
        if model is None or not getattr(model, "temporal", False):
            raise InputError(f"--temporal stream needs a Video Depth Anything model on the torch "
                             f"backend (got {est.spec.name} on {est.backend.name})")
        self.est, self.size = est, (int(size[0]), int(size[1]))
        self.stream = StreamingVDA(model)
        self.preprocess = est.video_preprocess(self.size)

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.est.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.est.device.type, dtype=self.est.dtype)

    def _network(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x).to(self.est.device)
        with self._autocast():
            return self.stream.step(t).float()

    def step(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One preprocessed frame (`preprocess`) → its (H, W) float32 depth at the frame size
        and its (H', W') depth at the network size (what a second pass stores)."""
        d = self._network(x)
        return self.est.postprocess(d, self.size), d.cpu().numpy()

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        """One BGR frame → (H, W) float32 depth at the frame size."""
        return self.est.postprocess(self._network(self.preprocess(bgr)), self.size)

"""Runtimes that execute a depth network: normalised (B, 3, H, W) float32 in, (B, H, W) out.

The engine (batching, prefetch, retries, postprocessing) calls a `Backend` and knows nothing of
the runtime behind it; torch is the first backend, OpenVINO and ONNX Runtime sit beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import torch

BACKEND_NAMES = ("auto", "torch", "openvino", "onnxruntime")


@runtime_checkable
class Backend(Protocol):
    """One loaded network on one runtime, device and precision."""

    name: str  # "torch" | "openvino" | "onnxruntime"
    device: str  # where outputs live: "cpu", "cuda", "cuda:1", "mps"
    precision: str  # "fp32" | "bf16" | "fp16"

    def run(self, batch: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """(B, 3, H, W) normalised float32, H and W multiples of 14 → (B, H, W) float32 depth
        at the network size (torch backends return a tensor on `device`)."""
        ...

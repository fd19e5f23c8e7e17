"""What every backend is: the `Backend` protocol, its error, and the host-array helper.

In a module of its own so that the runtime backends (openvino.py, onnxruntime.py) import it
without importing the package that picks between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import DepthCliError

if TYPE_CHECKING:
    import numpy as np
    import torch


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


class BackendError(DepthCliError):
    """A runtime backend cannot run this model/precision/device, or does not reproduce torch."""


def host_array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A C-contiguous float32 numpy view/copy of a batch, wherever the tensor lives."""
    import numpy as np

    if not isinstance(x, np.ndarray):
        x = x.detach().to("cpu").numpy()
    return np.ascontiguousarray(x, dtype=np.float32)

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


def create_backend(name: str | Backend, model: torch.nn.Module, device: torch.device,
                   dtype: torch.dtype, **torch_options: object) -> Backend:
    """A ready backend for `model`: `name` is a backend name or an already built Backend."""
    if not isinstance(name, str):
        return name
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend {name!r}: use one of {', '.join(BACKEND_NAMES)}")
    if name in ("auto", "torch"):
        from .torch import TorchBackend

        return TorchBackend(model, device, dtype, **torch_options)  # type: ignore[arg-type]
    raise ValueError(f"backend {name!r} is not available in this build")

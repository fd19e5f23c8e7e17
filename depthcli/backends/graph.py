"""What graph a runtime backend converts: the network, its input shapes and the build-time check.

Per-frame models take (B, 3, H, W) with batch, height and width all dynamic. Video Depth
Anything takes one window of frames that attend to each other, so a graph of it has the window
length fixed (32, `windows.WINDOW`: the temporal attention and the head's micro-batches are laid
out for it) and height and width dynamic; the graph takes the window as (32, 3, H, W) and gives
(32, H, W), the contract every backend has for temporal models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import BackendError

if TYPE_CHECKING:
    import torch

    from ..models import DepthAnything

WINDOW = 32  # = windows.WINDOW (not imported: that module pulls cv2 and the video procedure)
IMAGE_CHECKS = ((2, 70, 98), (1, 42, 140))  # (B, H, W): batch and both axes move
# Windows are traced and checked small: 32 frames make each pass (and the conversion) costly.
WINDOW_EXAMPLE = (28, 42)
WINDOW_CHECKS = ((WINDOW, 42, 28), (WINDOW, 28, 56))  # both axes move; the window cannot


@dataclass(frozen=True)
class Graph:
    """A module to convert, with its shape policy. `batch` is None when the batch is dynamic."""

    net: torch.nn.Module
    batch: int | None
    checks: tuple[tuple[int, int, int], ...]

    @property
    def shapes(self) -> str:
        """The cache key's shape policy."""
        return "dynamic" if self.batch is None else f"window{self.batch}-dynamic-hw"

    def example(self) -> torch.Tensor:
        import torch

        if self.batch is None:
            return torch.zeros(1, 3, 70, 98)
        return torch.zeros(self.batch, 3, *WINDOW_EXAMPLE)

    def check_batch(self, n: int) -> None:
        if self.batch is not None and n != self.batch:
            raise BackendError(f"this graph takes windows of {self.batch} frames, got {n}")


def graph_for(model: DepthAnything) -> Graph:
    """The graph of an fp32 CPU module: itself, or a temporal model behind `WindowNet`."""
    if getattr(model, "temporal", False):
        return Graph(window_net(model), WINDOW, WINDOW_CHECKS)
    return Graph(model, None, IMAGE_CHECKS)


def window_net(model: torch.nn.Module) -> torch.nn.Module:
    """(T, 3, H, W) → (T, H, W) around a (B, T, 3, H, W) → (B, T, H, W) temporal model."""
    from torch import nn

    class WindowNet(nn.Module):
        """One clip of T frames; `spec` and `max_depth` are the model's (cache keys, metadata)."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.spec = inner.spec
            self.max_depth = getattr(inner, "max_depth", 1.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x[None])[0]

    return WindowNet(model).eval()

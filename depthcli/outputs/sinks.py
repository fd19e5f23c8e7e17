"""What a video's writers are fed: one finished frame, in frame order (`outputs.resumable`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAME_SUFFIX = {"png16": ".png", "exr": ".exr", "pfm": ".pfm"}


@dataclass
class FrameOut:
    """One finished frame on its way to the writers."""

    index: int
    pts: int
    duration: int
    depth: np.ndarray  # (H, W) float32 at the source (display) size
    image: np.ndarray | None  # BGR input frame, for `side`
    vrange: tuple[float, float] | None = None  # this frame's range (its shot's), if its own

"""depthcli: Depth Anything (V1/V2, relative and metric) for images, folders and videos."""

from __future__ import annotations

import os

# OpenCV only writes EXR when this is set before its first EXR call; we never read EXR inputs.
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")

__version__ = "0.1.0"

from .engine import DepthEstimator, resolve_device  # noqa: E402
from .models import create_model, list_models  # noqa: E402

__all__ = ["DepthEstimator", "__version__", "create_model", "list_models", "resolve_device"]

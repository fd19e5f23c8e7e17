"""depthcli: Depth Anything (V1/V2, relative and metric) for images, folders and videos."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# OpenCV only writes EXR when this is set before its first EXR call; we never read EXR inputs.
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")

__version__ = "0.1.0"

# Exported lazily (PEP 562): `import depthcli.io.images` in a decode-only worker process (Ray
# read/write tasks, for one) must not pay for importing torch; `from depthcli import X` works
# as before.
_LAZY = {
    "DepthEstimator": "depthcli.engine",
    "resolve_device": "depthcli.engine",
    "create_model": "depthcli.models",
    "list_models": "depthcli.models",
    "DepthPredictor": "depthcli.runners.ray_stages",
}

if TYPE_CHECKING:
    from .engine import DepthEstimator, resolve_device
    from .models import create_model, list_models
    from .runners.ray_stages import DepthPredictor

__all__ = ["DepthEstimator", "DepthPredictor", "__version__", "create_model", "list_models",
           "resolve_device"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'depthcli' has no attribute {name!r}")

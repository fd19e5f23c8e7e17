"""depthcli: Depth Anything (V1/V2, relative and metric) for images, folders and videos.

The public API (`DepthEngine`, `create_model`, `list_models`, `resolve_device`) loads on
first use, so `import depthcli` (and the command line's help) stays fast and torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .engine.core import DepthEngine
    from .engine.device import resolve_device
    from .engine.ray_mapper import RayDepthMapper
    from .models import create_model, list_models

__all__ = ["DepthEngine", "RayDepthMapper", "__version__", "create_model", "list_models", "resolve_device"]

_LAZY = {
    "DepthEngine": ("engine.core", "DepthEngine"),
    "create_model": ("models", "create_model"),
    "list_models": ("models", "list_models"),
    "resolve_device": ("engine.device", "resolve_device"),
    "RayDepthMapper": ("engine.ray_mapper", "RayDepthMapper"),
    # the names of depthcli 0.1.0, kept so that scripts written against them still run
    "DepthEstimator": ("engine.core", "DepthEngine"),
    "DepthPredictor": ("engine.ray_mapper", "RayDepthMapper"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

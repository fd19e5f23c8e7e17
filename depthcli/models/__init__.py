"""Model construction: registry spec → network module with checkpoint weights loaded.

Importing this package is cheap (no torch): the registry is what `depthcli models` and the CLI's
option checks need; the torch modules load on first use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .registry import DEFAULT_MODEL, MODEL_SPECS, ModelSpec, get_spec, is_hf_repo_name, list_models

if TYPE_CHECKING:
    import torch

    from .depth_model import DepthAnything

_logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODEL", "MODEL_SPECS", "DepthAnything", "ModelSpec", "create_model", "get_spec",
    "list_models",
]


def create_model(
    name: str = DEFAULT_MODEL,
    *,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    max_depth: float | None = None,
) -> torch.nn.Module:
    """Build the model for a registry name or hub repo id and load its checkpoint (on CPU, eval).

    Family, head kind and max_depth come from the name, never from the checkpoint keys: V1/V2 and
    relative/metric checkpoints are indistinguishable by keys. Temporal (`vda-*`) names give a
    VideoDepthAnything, whose forward takes (B, T, 3, H, W) windows of frames; Depth Anything 3
    names a Da3Model (packed depth + confidence/sky + camera, models/da3_model.py).
    """
    from ..checkpoints import weights as _weights
    from ..checkpoints.layouts import to_internal
    from .depth_model import DepthAnything
    from .video_depth_anything import VideoDepthAnything

    spec = get_spec(name)
    path = None
    if pretrained or weights is not None:  # first: a missing checkpoint fails before the build
        path = _weights.resolve(spec, weights, prefer_hf=is_hf_repo_name(name))
    def build() -> torch.nn.Module:
        if spec.family == "v3":
            from .da3_model import Da3Model

            return Da3Model(spec)
        return (VideoDepthAnything(spec) if spec.temporal
                else DepthAnything(spec, max_depth=max_depth))

    model = build() if path is None else _uninitialised(build)
    if path is not None:
        sd = to_internal(_weights.read_state_dict(path))
        _weights.load_into(model, sd, str(path))
        _logger.info("loaded %s from %s", spec.name, path)
    return model.eval()


def _uninitialised(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """The module with storage but no random init: the strict checkpoint load fills every tensor.

    timm's and torch's initialisers cost ~4 s of a ViT-S build on 2 cores (trunc_normal_ alone
    3.5 s), all of it overwritten by the checkpoint. A module with non-persistent buffers (not
    in its state_dict, so never loaded) is built the ordinary way.
    """
    import torch

    with torch.device("meta"):
        model = build()
    persistent = set(model.state_dict())
    if any(name not in persistent for name, _ in model.named_buffers()):
        return build()
    return model.to_empty(device="cpu")


def __getattr__(name: str) -> Any:
    if name == "DepthAnything":
        from .depth_model import DepthAnything

        return DepthAnything
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

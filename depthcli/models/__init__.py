"""Model construction: registry spec → DepthAnything module with checkpoint weights loaded."""

from __future__ import annotations

import logging
import os

import torch

from .. import weights as _weights
from .depth_model import DepthAnything
from .registry import DEFAULT_MODEL, MODEL_SPECS, ModelSpec, get_spec, is_hf_repo_name, list_models

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
) -> DepthAnything:
    """Build the model for a registry name or hub repo id and load its checkpoint (on CPU, eval).

    Family, head kind and max_depth come from the name, never from the checkpoint keys: V1/V2 and
    relative/metric checkpoints are indistinguishable by keys.
    """
    spec = get_spec(name)
    path = None
    if pretrained or weights is not None:  # first: a missing checkpoint fails before the build
        path = _weights.resolve(spec, weights, prefer_hf=is_hf_repo_name(name))
    model = DepthAnything(spec, max_depth=max_depth)
    if path is not None:
        sd = _weights.to_internal(_weights.read_state_dict(path))
        _weights.load_into(model, sd, str(path))
        _logger.info("loaded %s from %s", spec.name, path)
    return model.eval()


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

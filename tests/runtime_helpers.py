"""Shared by test_export.py and test_backends.py: golden models, golden comparison, and a
process-wide memo of torch.onnx.export (a ViT-S export takes ~40 s on 2 cores; tests that need
the same graph share one)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from depthcli.engine.transforms import Preprocess, upsample
from depthcli.models import DepthAnything, ModelSpec, create_model
from recipe import recipe_state_dict

_EXPORTS: dict[tuple, object] = {}


def memo_onnx_export(real: Callable) -> Callable:
    """Wrap torch.onnx.export: the same model/weights, shapes and opset give the same program."""
    from depthcli.backends.cache import state_dict_digest

    def export(model, args, *a, **kw):  # type: ignore[no-untyped-def]
        if not hasattr(model, "spec"):
            return real(model, args, *a, **kw)
        dims = kw.get("dynamic_shapes")
        spec = model.spec  # the network, not the name: V1 and V2 share their graph
        key = (type(model).__name__, spec.encoder.name, spec.layers, spec.features,
               spec.out_channels, spec.output, spec.da3, getattr(model, "max_depth", None),
               state_dict_digest(model),
               tuple(args[0].shape), kw.get("opset_version"), repr(dims))
        if key not in _EXPORTS:
            _EXPORTS[key] = real(model, args, *a, **kw)
        return _EXPORTS[key]

    return export


def golden_model(tag: str, golden_keys: dict, folder: Path) -> DepthAnything:
    """The golden recipe checkpoint for `tag`, loaded the way a user's file is."""
    path = folder / f"{tag}.pth"
    if not path.exists():
        torch.save(recipe_state_dict(golden_keys[tag]), path)
    return create_model(tag, weights=path)


def golden_case(golden_dir: Path, tag: str, entry: str,
                spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """(normalised (1, 3, H, W) input, golden (h, w) depth) for `entry` like 'square@518'."""
    name, size = entry.split("@")
    img = cv2.imread(str(golden_dir / f"{name}.png"))
    x = Preprocess(int(size), spec.mean, spec.std)(img)[None]
    return x, np.load(golden_dir / f"{tag}.npz")[entry]


def to_original(depth: np.ndarray, gold: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Network-size (1, H, W) depth → (h, w) as the engine's postprocessing does."""
    t = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))
    return upsample(t, gold.shape, spec.upsample_align_corners)[0].numpy()


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - ref).max() / (ref.max() - ref.min()))
